"""The example notebooks execute from top to bottom (tiny sizes: BNN_EXAMPLE_QUICK=1), every
plotting cell shows an image in a plain kernel, and no cell writes to stderr."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
NOTEBOOKS = sorted(EXAMPLES.glob("*.ipynb"))


def test_there_are_notebooks_and_their_outputs_are_stripped() -> None:
    assert len(NOTEBOOKS) >= 3
    for path in NOTEBOOKS:
        notebook = nbformat.read(path, as_version=4)
        assert all(
            not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code"
        ), path


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_executes(path: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("BNN_EXAMPLE_QUICK", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(
        notebook,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    client.execute()
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    errors = [o for c in code for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
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
