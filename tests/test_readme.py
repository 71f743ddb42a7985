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


def test_ci_stops_when_any_step_of_an_and_list_fails() -> None:
    """Under ``set -e`` a failing command before the last of an ``&&`` list does not stop the
    script: each leg is followed by an explicit check of its exit status."""
    lines = (ROOT / ".ci" / "run").read_text().splitlines()
    legs = [i for i, line in enumerate(lines) if " && " in line and not line.startswith("#")]
    assert len(legs) == 2
    for index in legs:
        checks = [line for line in lines[index + 1 : index + 3] if line.startswith("leg=$?;")]
        assert checks and 'exit "$leg"' in checks[0], lines[index]
