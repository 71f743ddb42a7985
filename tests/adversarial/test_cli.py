"""The ``bnn`` command line with bad files, paths and numbers: one line on stderr, exit 2,
before any training; the output path is checked first."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import bnn.apps.datasets
import bnn.apps.demo
import bnn.apps.uci.command
from bnn.apps.cli import main
from bnn.apps.datasets.uci import seeded_split


def _yacht(tmp_path: Path) -> Path:
    """The bundled yacht data in the published layout (column and split files)."""
    source = Path(bnn.apps.datasets.__file__).parent / "yacht"
    target = tmp_path / "data" / "yacht"
    shutil.copytree(source, target)
    (target / "index_features.txt").write_text("\n".join(map(str, range(6))) + "\n")
    (target / "index_target.txt").write_text("6\n")
    for split in range(2):
        train, test = seeded_split(308, split)
        (target / f"index_train_{split}.txt").write_text("\n".join(map(str, train)) + "\n")
        (target / f"index_test_{split}.txt").write_text("\n".join(map(str, test)) + "\n")
    return target


@pytest.fixture
def no_training(monkeypatch: pytest.MonkeyPatch) -> None:
    """Training must not start: every user error is found before it."""

    def refuse(*_: object, **__: object) -> None:
        raise AssertionError("training started before the error was found")

    monkeypatch.setattr(bnn.apps.uci.command, "fit_method", refuse)
    monkeypatch.setattr(bnn.apps.demo, "run_toy", refuse)


def _uci(*extra: str) -> list[str]:
    return ["benchmark", "uci", "--dataset", "yacht", "--method", "vi", "--epochs", "1", *extra]


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    assert main(argv) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bnn: error: "), captured.err
    assert "Traceback" not in captured.err
    return lines[0]


def _edit(folder: Path, fault: str) -> None:
    if fault == "garbage-data":
        (folder / "data.txt").write_text("a b c\nd e f\n")
    elif fault == "nan-row":
        lines = (folder / "data.txt").read_text().splitlines()
        lines[7] = " ".join(["nan"] * 7)
        (folder / "data.txt").write_text("\n".join(lines))
    elif fault == "negative-split-index":
        (folder / "index_test_1.txt").write_text("3\n-400\n5\n")
    elif fault == "row-index-too-large":
        (folder / "index_train_0.txt").write_text("0\n1\n999\n")
    elif fault == "fractional-index":
        (folder / "index_features.txt").write_text("0.5\n1\n")
    elif fault == "target-among-features":
        (folder / "index_features.txt").write_text("0\n6\n")
    elif fault == "missing-split-file":
        (folder / "index_test_1.txt").unlink()


@pytest.mark.usefixtures("no_training")
@pytest.mark.parametrize(
    "fault, fragment",
    [
        ("garbage-data", "data.txt could not be parsed"),
        ("nan-row", r"data.txt has non-finite values \(first at row 7\)"),
        ("negative-split-index", r"index_test_1.txt has row index -400 \(entry 1\)"),
        ("row-index-too-large", r"index_train_0.txt has row index 999 \(entry 2\)"),
        ("fractional-index", "must hold integer column indices"),
        ("target-among-features", "lists the target column 6"),
        ("missing-split-file", "missing file .*index_test_1.txt"),
    ],
)
def test_bad_data_files_give_one_line_and_exit_2_before_training(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    fault: str,
    fragment: str,
) -> None:
    folder = _yacht(tmp_path)
    _edit(folder, fault)
    argv = _uci("--data-dir", str(folder.parent), "--output", str(tmp_path / "out"))
    assert re.search(fragment, _run(argv, capsys))


@pytest.mark.usefixtures("no_training")
@pytest.mark.parametrize(
    "make_output, fragment",
    [
        (lambda p: p.joinpath("file").write_text("x") and p / "file", "is a file; give a folder"),
        (lambda p: p.joinpath("file").write_text("x") and p / "file" / "sub", "cannot write"),
        (lambda p: (p / "out" / "uci.json").mkdir(parents=True) or p / "out", "folder named uci"),
    ],
    ids=["output-is-a-file", "output-under-a-file", "result-name-is-a-folder"],
)
def test_bad_output_paths_are_checked_before_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
    make_output: object, fragment: str,
) -> None:  # fmt: skip
    output = make_output(tmp_path)  # type: ignore[operator]
    assert fragment in _run(_uci("--output", str(output)), capsys)


@pytest.mark.usefixtures("no_training")
def test_demo_checks_its_output_path_first(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "taken").write_text("x")
    assert "is a file" in _run(["demo", "--quick", "--output", str(tmp_path / "taken")], capsys)


@pytest.mark.usefixtures("no_training")
@pytest.mark.parametrize(
    "extra, fragment",
    [
        (["--splits", "0"], "--splits must be at least 1"),
        (["--splits", "99"], r"splits must be in \[1, 20\]"),
        (["--epochs", "0"], "--epochs must be at least 1"),
        (["--validation-fraction", "1.5"], r"--validation-fraction must be in \[0, 1\)"),
        (["--validation-fraction", "nan"], r"--validation-fraction must be in \[0, 1\)"),
        (["--data-dir", "/no/such/folder"], "--data-dir /no/such/folder does not exist"),
        (["--validation-fraction", "0", "--recalibrate", "conformal"], "need the validation"),
        (["--tune", "--tune-trials", "0"], "--tune-trials must be at least 1"),
        (["--method", "gp", "--tune"], "--tune tunes"),
    ],
    ids=["zero-splits", "too-many-splits", "zero-epochs", "fraction-above-1", "nan-fraction",
         "missing-data-dir", "conformal-without-validation", "zero-tune-trials", "tune-a-gp"],
)  # fmt: skip
def test_bad_numbers_and_paths_give_one_line_and_exit_2(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    extra: list[str],
    fragment: str,
) -> None:
    line = _run(_uci("--output", str(tmp_path / "out"), *extra), capsys)
    assert re.search(fragment, line)


@pytest.mark.usefixtures("no_training")
def test_unknown_dataset_without_data_dir_says_what_to_pass(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["benchmark", "uci", "--dataset", "boston", "--method", "vi"]
    message = _run([*argv, "--output", str(tmp_path)], capsys)
    assert "pass --data-dir DIR" in message and "docs/data.md" in message


@pytest.mark.parametrize("value", ["ten", "1e3"])
def test_a_non_integer_count_is_an_argparse_usage_error(
    value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as raised:
        main(["benchmark", "uci", "--dataset", "yacht", "--method", "vi", "--epochs", value])
    assert raised.value.code == 2
    assert "invalid int value" in capsys.readouterr().err


def test_the_console_script_prints_no_traceback(tmp_path: Path) -> None:
    (tmp_path / "taken").write_text("x")
    completed = subprocess.run(
        [sys.executable, "-m", "bnn.apps.cli", "demo", "--output", str(tmp_path / "taken")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert completed.returncode == 2
    assert completed.stderr.startswith("bnn: error: --output") and "Traceback" not in (
        completed.stderr
    )


@pytest.mark.usefixtures("no_training")
def test_a_data_dir_without_the_data_set_names_the_flag_and_the_layout(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "data").mkdir()
    argv = _uci("--data-dir", str(tmp_path / "data"), "--output", str(tmp_path / "out"))
    message = _run(argv, capsys)
    assert "--data-dir" in message and "no yacht/data.txt there" in message
    assert "docs/data.md" in message
