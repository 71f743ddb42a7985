"""The counts in docs/reliability.md's round-3 table are the suite's own."""

from __future__ import annotations

import collections
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGE = (ROOT / "docs" / "reliability.md").read_text()
NAMES = {
    "Laplace": "laplace",
    "SWAG": "swag",
    "MultiSWAG": "multi_swag",
    "GP": "gp",
    "stack": "stack",
    "boost": "boost",
    "evidence training": "marglik",
    "neural-linear": "neural_linear",
    "conformal": "conformal",
    "temperature scaling": "temperature",
    "std scaling": "std_scale",
    "tune": "tune",
    "seed sweep": "sweep",
}


def _row(where: str) -> list[str]:
    return [line for line in PAGE.splitlines() if line.startswith("|") and where in line]


def _collected(path: str, *select: str) -> int:
    command = [sys.executable, "-m", "pytest", "--collect-only", "-q", "-m", "slow or not slow"]
    completed = subprocess.run(
        [*command, *select, path], capture_output=True, text=True, cwd=ROOT, check=True
    )
    found = re.search(r"(\d+)(?:/\d+)? tests? collected", completed.stdout)
    assert found is not None, completed.stdout[-500:]
    return int(found.group(1))


def test_the_per_entry_point_counts_are_the_cases_of_each() -> None:
    pytest.importorskip("gpytorch")
    pytest.importorskip("optuna")
    from tests.adversarial.test_newer_methods import CASES

    counted = collections.Counter(case.name.split(":")[0] for case in CASES)
    row = _row("per entry point")[0]
    listed = row.split("entry point:")[1].split("|")[0]
    stated = dict(item.strip().rsplit(" ", 1) for item in listed.split(","))
    assert {NAMES[name]: int(count) for name, count in stated.items()} == dict(counted)
    assert int(row.split("|")[2]) == len(CASES)


@pytest.mark.parametrize(
    "where, select",
    [
        ("test_round3.py", ()),
        ("test_faults.py", ()),
        ("right answer", ("-k", "not hostile_call")),
    ],
)
def test_the_file_counts_are_the_collected_tests(where: str, select: tuple[str, ...]) -> None:
    pytest.importorskip("gpytorch")
    pytest.importorskip("optuna")
    row = _row(where)[0]
    path = "tests/adversarial/" + re.search(r"`tests/adversarial/(\w+\.py)`", row).group(1)  # type: ignore[union-attr]
    assert int(row.split("|")[2]) == _collected(path, *select)
