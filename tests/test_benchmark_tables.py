"""The UCI and image rows of docs/benchmarks.md are summaries of result files in benchmarks/results.

A UCI row ``| dataset | method[, variant | (detail)] | splits | a ± b | ... |`` must match one
summary record of a ``benchmarks/results/uci-*.json`` with the same data set, method and number
of splits; an image row ``| method[+T] [(detail)] | a ± b | ... |`` one method's record of a
``benchmarks/results/images-*.json`` (percentages as 100×), unless the row stands verbatim in a
result text (``.md``/``.txt``). Matching: every ``a ± b`` cell a ``[mean, standard error]`` pair
of that record and every other decimal cell one of its numbers, both at the precision shown.
Words (``yes``, ``n/a``, labels, ``—``) are not checked. A transcription error, or a table left
behind when its run was re-measured, fails here.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "benchmarks.md"
RESULTS = ROOT / "benchmarks" / "results"
MEAN_AND_ERROR = re.compile(r"^(-?\d+(?:\.\d+)?) ± (\d+(?:\.\d+)?)$")
DECIMAL = re.compile(r"^-?\d+\.\d+$")

Record = tuple[str, dict[str, Any]]  # (file name, summary record)


def _records() -> list[Record]:
    return [
        (path.name, summary)
        for path in sorted(RESULTS.glob("uci-*.json"))
        for summary in json.loads(path.read_text())["summary"]
    ]


def _numbers(value: object) -> list[float | tuple[float, float]]:
    """Every number of a record, and every ``[mean, standard error]`` pair as a tuple."""
    if isinstance(value, bool):
        return []
    if isinstance(value, int | float):
        return [float(value)]
    found: list[float | tuple[float, float]] = []
    if isinstance(value, list):
        if len(value) == 2 and all(isinstance(v, int | float) for v in value):
            found.append((float(value[0]), float(value[1])))
        for item in value:
            found += _numbers(item)
    if isinstance(value, dict):
        for item in value.values():
            found += _numbers(item)
    return found


def _shown(number: float, text: str) -> bool:
    """``number`` rounds to ``text`` (within half a unit of its last decimal)."""
    decimals = len(text.split(".")[1]) if "." in text else 0
    return abs(number - float(text)) <= 0.5 * 10.0**-decimals + 1e-12


def _cell_matches(cell: str, numbers: list[float | tuple[float, float]]) -> bool | None:
    """Whether a cell is shown by one of ``numbers``; ``None`` for a cell without a number."""
    pair = MEAN_AND_ERROR.match(cell)
    if pair:
        mean, error = pair.groups()
        return any(
            isinstance(n, tuple) and _shown(n[0], mean) and _shown(n[1], error) for n in numbers
        )
    if DECIMAL.match(cell):
        return any(isinstance(n, float) and _shown(n, cell) for n in numbers)
    return None


def _uci_rows(text: str, datasets: set[str]) -> list[tuple[int, list[str]]]:
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        if line.startswith("| "):
            cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
            if cells[0] in datasets:
                rows.append((number, cells))
    return rows


def _unmatched(cells: list[str], records: list[Record]) -> list[str]:
    """The cells of a row no single record shows (all of them if no record is a candidate)."""
    dataset, label, splits = cells[0], cells[1], cells[2]
    method = re.split(r",| \(", label)[0]  # "laplace, last layer", "gp (SVGP, …)"
    best = cells[2:]
    for _, summary in records:
        if (summary["dataset"], summary["method"], str(summary["splits"])) != (
            dataset,
            method,
            splits,
        ):
            continue
        numbers = _numbers(summary)
        missing = [cell for cell in cells[3:] if _cell_matches(cell, numbers) is False]
        if len(missing) < len(best):
            best = missing
    return best


def test_every_uci_row_is_a_result_file_summary() -> None:
    records = _records()
    rows = _uci_rows(PAGE.read_text(), {summary["dataset"] for _, summary in records})
    assert len(rows) >= 50, "the UCI tables were not found"
    numeric = [
        sum(bool(MEAN_AND_ERROR.match(c) or DECIMAL.match(c)) for c in cells[3:])
        for _, cells in rows
    ]
    assert min(numeric) >= 2, "a UCI row with fewer than two numbers to check"
    wrong = [
        f"docs/benchmarks.md:{n}: {cells} — not shown: {m}"
        for n, cells in rows
        if (m := _unmatched(cells, records))
    ]
    assert not wrong, "\n".join(wrong)


def _image_records() -> dict[str, list[list[float | tuple[float, float]]]]:
    """Each method's records (their numbers, and the same ×100 for percentages)."""
    records: dict[str, list[list[float | tuple[float, float]]]] = {}
    for path in sorted(RESULTS.glob("images-*.json")):
        for method, summary in json.loads(path.read_text())["summary"].items():
            numbers = _numbers(summary)
            percent = [
                (100 * n[0], 100 * n[1]) if isinstance(n, tuple) else 100 * n for n in numbers
            ]
            records.setdefault(method, []).append(numbers + percent)
    return records


def _verbatim_rows() -> set[str]:
    return {
        line.strip()
        for path in RESULTS.iterdir()
        if path.suffix in (".md", ".txt")
        for line in path.read_text().splitlines()
        if line.startswith("|")
    }


def _image_rows(text: str, methods: set[str]) -> list[tuple[int, str, list[str]]]:
    """``(line, method, cells)`` of the rows of the Images section that name a method."""
    section = text.split("\n## Images")[1].split("\n## ")[0]
    offset = text[: text.index(section)].count("\n")
    rows = []
    for number, line in enumerate(section.splitlines(), offset + 1):
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        method = cells[0].replace("*", "").replace("`", "").split(" (")[0]
        if line.startswith("| ") and method in methods:
            rows.append((number, method, cells))
    return rows


def test_every_image_row_is_a_result_file_summary() -> None:
    records, verbatim = _image_records(), _verbatim_rows()
    text = PAGE.read_text()
    rows = _image_rows(text, set(records))
    assert len(rows) >= 80, "the image tables were not found"
    wrong = []
    for number, method, cells in rows:
        if text.splitlines()[number - 1].strip() in verbatim:
            continue
        unmatched = [
            [c for c in cells[1:] if _cell_matches(c, numbers) is False]
            for numbers in records[method]
        ]
        if min(map(len, unmatched)):
            wrong.append(
                f"docs/benchmarks.md:{number}: {cells} — not shown: {min(unmatched, key=len)}"
            )
    assert not wrong, "\n".join(wrong)


def test_a_mistyped_number_or_splits_count_is_caught() -> None:
    records = _records()
    text = PAGE.read_text()
    number, cells = _uci_rows(text, {summary["dataset"] for _, summary in records})[0]
    checked = [
        c for c in cells[3:] if _cell_matches(c, [n for _, s in records for n in _numbers(s)])
    ]
    assert len(checked) >= 3, f"row {number} has too few numbers to check: {cells}"
    mean, error = MEAN_AND_ERROR.match(cells[3]).groups()  # type: ignore[union-attr]
    decimals = len(mean.split(".")[1])
    changed = f"{float(mean) + 2 * 10.0**-decimals:.{decimals}f} ± {error}"
    assert _unmatched([*cells[:3], changed, *cells[4:]], records) == [changed]
    other_splits = [cells[0], cells[1], "7", *cells[3:]]
    assert _unmatched(other_splits, records) == other_splits[2:]  # no record: nothing shown


def test_a_mistyped_image_number_is_caught() -> None:
    records = _image_records()
    _, method, cells = _image_rows(PAGE.read_text(), set(records))[0]
    assert any(_cell_matches(cells[2], numbers) for numbers in records[method])
    mean, error = MEAN_AND_ERROR.match(cells[2]).groups()  # type: ignore[union-attr]
    decimals = len(mean.split(".")[1])
    changed = f"{float(mean) + 2 * 10.0**-decimals:.{decimals}f} ± {error}"
    assert not any(_cell_matches(changed, numbers) for numbers in records[method])
