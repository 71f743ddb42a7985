"""The README's quick-start lines are the ones CI runs."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ci_runs_the_readme_test_command() -> None:
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    command = ci_lines[ci_lines.index(next(line for line in ci_lines if "README test" in line)) + 1]
    assert command.startswith("python3 -m venv .venv")
    readme = (ROOT / "README.md").read_text().splitlines()
    assert command in readme
    second = ci_lines[ci_lines.index("# README ArviZ 1.x leg:") + 1]
    assert second in readme


def test_readme_python_example_runs(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    text = (ROOT / "README.md").read_text()
    blocks = text.split("```python\n")[1:]
    assert blocks, "README has no python example"
    monkeypatch.chdir(tmp_path)
    for block in blocks:
        exec(compile(block.split("```")[0], "README.md", "exec"), {"__name__": "readme"})
