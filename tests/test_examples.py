"""The example notebooks execute from top to bottom (tiny sizes: BNN_EXAMPLE_QUICK=1), every
plotting cell shows an image in a plain kernel, and no cell writes to stderr.

Numbers in a notebook's markdown that describe an output are bound to the code like the docs'
prose (``0.014<!-- = f"{mi_near:.3f}" -->``, see ``tests/test_docs_code.py``): the quick run
checks that every binding evaluates, ``pytest -m slow`` runs each notebook at its full settings
(the ones the prose describes) and checks every bound number against what the code gives, and a
decimal number or percentage that is neither bound nor a setting written in the code fails here.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbformat import NotebookNode

from tests.test_docs_code import PROSE_NUMBER

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
IMAGE_DATA = Path(
    os.environ.get(
        "BNN_IMAGE_DATA",
        Path(os.environ.get("BNN_BENCHDATA", EXAMPLES.parents[1] / "shared" / "benchdata"))
        / "images",
    )
)
NOTEBOOKS = sorted(EXAMPLES.glob("*.ipynb"))
PROBE = "bound numbers: "
NUMBER = re.compile(r"(?<![\w.])[−-]?\d+(?:\.\d+)?(?:\s?%)?")
CODE_NUMBER = re.compile(r"(?<![\w.])\d+(?:\.\d+)?(?:e-?\d+)?")


def test_there_are_notebooks_and_their_outputs_are_stripped() -> None:
    assert len(NOTEBOOKS) >= 3
    for path in NOTEBOOKS:
        notebook = nbformat.read(path, as_version=4)
        assert all(
            not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code"
        ), path


def with_probes(notebook: NotebookNode) -> NotebookNode:
    """The notebook with a code cell after each markdown cell that binds numbers; the cell
    prints the bound expressions' values (in the kernel, after the cells before it ran)."""
    cells = []
    for cell in notebook.cells:
        cells.append(cell)
        bound = PROSE_NUMBER.findall(cell.source) if cell.cell_type == "markdown" else []
        if bound:
            values = ", ".join(f"str({expression})" for _, expression in bound)
            probe = f"import json as _json\nprint({PROBE!r} + _json.dumps([{values}]))"
            cells.append(nbformat.v4.new_code_cell(probe, metadata={"probe": True}))
    return nbformat.v4.new_notebook(cells=cells, metadata=notebook.metadata)


def bound_number_problems(executed: NotebookNode, name: str) -> list[str]:
    """Each bound number whose expression gave another text in the executed notebook."""
    problems = []
    for markdown, probe in zip(executed.cells, executed.cells[1:], strict=False):
        if not probe.get("metadata", {}).get("probe"):
            continue
        text = "".join(o.get("text", "") for o in probe.get("outputs", []))
        produced = json.loads(text.split(PROBE, 1)[1]) if PROBE in text else []
        stated = [number for number, _ in PROSE_NUMBER.findall(markdown.source)]
        for number, value in zip(stated, produced, strict=True):
            if number.replace("-", "−") != value.replace("-", "−"):
                problems.append(f"{name}: the markdown says {number}, the code gives {value}")
    return problems


def unbound_numbers(notebook: NotebookNode) -> list[str]:
    """Decimal numbers and percentages in markdown that are neither bound to an expression nor
    a setting written in the code (``0.25`` for ``Gaussian(0.25)``, ``90 %`` for ``0.9``)."""
    code = "\n".join(cell.source for cell in notebook.cells if cell.cell_type == "code")
    settings = {float(number) for number in CODE_NUMBER.findall(code)}
    unbound = []
    for cell in notebook.cells:
        if cell.cell_type != "markdown":
            continue
        for number in NUMBER.findall(PROSE_NUMBER.sub("", cell.source)):
            digits = number.lstrip("−-").rstrip("% ").strip()
            percent = number.endswith("%")
            value = float(digits) / 100 if percent else float(digits)
            measured = percent or "." in digits
            if measured and not any(abs(value - setting) < 1e-9 for setting in settings):
                unbound.append(number)
    return unbound


def run(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, quick: bool) -> NotebookNode:
    """The notebook with probes, executed in a plain kernel (tiny sizes when ``quick``)."""
    if quick:
        monkeypatch.setenv("BNN_EXAMPLE_QUICK", "1")
    else:
        monkeypatch.delenv("BNN_EXAMPLE_QUICK", raising=False)
    monkeypatch.setenv("MPLBACKEND", "Agg")
    original = nbformat.read(path, as_version=4)
    if original.metadata.get("bnn", {}).get("needs_data") == "images":
        if not (IMAGE_DATA / "mnist").is_dir() or not (IMAGE_DATA / "fashion-mnist").is_dir():
            pytest.skip(f"{IMAGE_DATA} has no mnist/ and fashion-mnist/ (benchmark data)")
        monkeypatch.setenv("BNN_IMAGE_DATA", str(IMAGE_DATA))
    notebook = with_probes(original)
    client = NotebookClient(
        notebook,
        timeout=300 if quick else 1800,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()
    return notebook


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_executes(path: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    notebook = run(path, tmp_path, monkeypatch, quick=True)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    errors = [o for c in code for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors  # a binding whose expression fails is an error of its probe cell
    stderr = [
        (c.source.splitlines()[:1], o.get("text", "")[:200])
        for c in code
        for o in c.get("outputs", [])
        if o.get("output_type") == "stream" and o.get("name") == "stderr"
    ]
    assert not stderr, f"cells wrote to stderr: {stderr}"
    plotting = [c for c in code if "plots." in c.source or "plot_" in c.source]
    assert plotting, f"{path.name} draws no figure"
    without_image = [
        c.source.splitlines()[:1]
        for c in plotting
        if not any("image/png" in o.get("data", {}) for o in c.get("outputs", []))
    ]
    assert not without_image, f"plotting cells that showed no image: {without_image}"
    assert os.environ["BNN_EXAMPLE_QUICK"] == "1"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_every_measured_number_in_the_markdown_is_bound(path: Path) -> None:
    assert unbound_numbers(nbformat.read(path, as_version=4)) == []


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_the_markdown_states_what_the_full_run_prints(
    path: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    executed = run(path, tmp_path, monkeypatch, quick=False)
    problems = bound_number_problems(executed, path.name)
    assert not problems, "\n".join(problems)


def test_the_binding_checks_catch_drift_and_unbound_numbers(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    notebook = nbformat.v4.new_notebook(
        cells=[
            nbformat.v4.new_code_cell("spread = 0.1538\nlevel = 0.9\nprint(spread)"),
            nbformat.v4.new_markdown_cell('a spread of 0.15<!-- = f"{spread:.2f}" -->'),
            nbformat.v4.new_markdown_cell('a spread of 0.06<!-- = f"{spread:.2f}" -->'),
            nbformat.v4.new_markdown_cell("90 % intervals, a spread of 0.12 and 97 %"),
        ]
    )
    path = tmp_path / "drift.ipynb"
    nbformat.write(notebook, path)
    executed = run(path, tmp_path, monkeypatch, quick=True)
    assert bound_number_problems(executed, "drift") == [
        "drift: the markdown says 0.06, the code gives 0.15"
    ]
    assert unbound_numbers(notebook) == ["0.12", "97 %"]
