"""The UCI run's journal: an interrupted run resumes to the uninterrupted results."""

from __future__ import annotations

import json
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import pytest

from bnn._jobs import JobError, run_jobs
from bnn.apps.cli import JOURNAL, main
from bnn.apps.uci import journal
from bnn.apps.uci.command import Defaults, run_uci
from bnn.apps.uci.report import SplitResult

QUICK = Defaults(epochs=3, num_samples=10)


def _untimed(results: list[SplitResult]) -> list[SplitResult]:
    return [replace(result, seconds=0.0) for result in results]


def test_a_resumed_run_equals_the_uninterrupted_one_and_trains_only_the_missing_splits(
    tmp_path: Path,
) -> None:
    journal = tmp_path / JOURNAL
    whole = run_uci("yacht", "mc_dropout", splits=3, defaults=QUICK, progress=False)
    first = run_uci(
        "yacht", "mc_dropout", splits=1, defaults=QUICK, journal=journal, progress=False
    )
    resumed = run_uci(
        "yacht",
        "mc_dropout",
        splits=3,
        defaults=QUICK,
        journal=journal,
        resume=True,
        progress=False,
    )
    assert _untimed(resumed) == _untimed(whole)
    assert resumed[0].seconds == first[0].seconds  # read back, not trained again
    assert len(journal.read_text().splitlines()) == 1 + 3  # header and three splits


def test_without_resume_a_journal_with_results_is_refused_and_kept(tmp_path: Path) -> None:
    journal = tmp_path / JOURNAL
    run_uci("yacht", "mc_dropout", splits=2, defaults=QUICK, journal=journal, progress=False)
    before = journal.read_text()
    with pytest.raises(ValueError, match=r"already holds a journal \(2 finished splits\)"):
        run_uci("yacht", "mc_dropout", splits=1, defaults=QUICK, journal=journal, progress=False)
    assert journal.read_text() == before
    journal.write_text("")  # killed before its header was written: a new run may start
    run_uci("yacht", "mc_dropout", splits=1, defaults=QUICK, journal=journal, progress=False)
    assert len(journal.read_text().splitlines()) == 1 + 1


def test_a_last_line_cut_short_is_trained_again_and_later_results_are_kept(
    tmp_path: Path,
) -> None:
    journal = tmp_path / JOURNAL
    options = {"defaults": QUICK, "journal": journal, "progress": False}
    run_uci("yacht", "mc_dropout", splits=2, **options)
    lines = journal.read_text().splitlines()
    journal.write_text("\n".join(lines[:2]) + "\n" + lines[2][:40])  # killed mid-write
    resumed = run_uci("yacht", "mc_dropout", splits=3, resume=True, **options)
    again = run_uci("yacht", "mc_dropout", splits=3, resume=True, **options)
    whole = run_uci("yacht", "mc_dropout", splits=3, defaults=QUICK, progress=False)
    assert _untimed(resumed) == _untimed(again) == _untimed(whole)
    assert [r.seconds for r in again] == [r.seconds for r in resumed]  # all three read back


def test_resuming_a_journal_of_other_settings_is_refused_naming_them(tmp_path: Path) -> None:
    journal = tmp_path / JOURNAL
    run_uci("yacht", "mc_dropout", splits=1, defaults=QUICK, journal=journal, progress=False)
    with pytest.raises(ValueError, match=r"other settings \(different defaults, method\)"):
        run_uci(
            "yacht",
            "vi",
            splits=1,
            defaults=replace(QUICK, epochs=4),
            journal=journal,
            resume=True,
            progress=False,
        )
    journal.write_text("not a journal\n")
    with pytest.raises(ValueError, match="is not a bnn UCI journal"):
        run_uci(
            "yacht",
            "mc_dropout",
            splits=1,
            defaults=QUICK,
            journal=journal,
            resume=True,
            progress=False,
        )


def test_the_journal_lists_the_bnn_versions_that_wrote_it_and_warns_on_a_new_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    journal_file = tmp_path / JOURNAL
    options = {"defaults": QUICK, "journal": journal_file, "progress": False}
    first = run_uci("yacht", "mc_dropout", splits=1, **options)

    def header() -> dict[str, object]:
        return json.loads(journal_file.read_text().splitlines()[0])

    this = journal.installed_version()
    assert header()["bnn_versions"] == [this]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the same version resumes silently
        run_uci("yacht", "mc_dropout", splits=1, resume=True, **options)
    monkeypatch.setattr(journal, "installed_version", lambda: "9.9")
    with pytest.warns(UserWarning, match=r"written by bnn .+; this is bnn 9\.9"):
        resumed = run_uci("yacht", "mc_dropout", splits=2, resume=True, **options)
    assert resumed[0] == first[0]  # the earlier version's split is kept, not trained again
    assert header()["bnn_versions"] == [this, "9.9"]
    lines = journal_file.read_text().splitlines()
    unversioned = {k: v for k, v in header().items() if k != "bnn_versions"}
    journal_file.write_text("\n".join([json.dumps(unversioned), *lines[1:]]) + "\n")
    with pytest.warns(UserWarning, match="a version that did not record itself"):
        run_uci("yacht", "mc_dropout", splits=2, resume=True, **options)
    assert header()["bnn_versions"] == ["9.9"]


def test_a_journal_older_than_a_setting_resumes_under_its_old_value_only(tmp_path: Path) -> None:
    """A journal written before ``ensemble_lockstep`` existed ran one member after another:
    it resumes as such, and is refused for a lock-step run."""
    journal_file = tmp_path / JOURNAL
    options = {"journal": journal_file, "progress": False}
    run_uci("yacht", "mc_dropout", splits=1, defaults=QUICK, **options)
    lines = journal_file.read_text().splitlines()
    header = json.loads(lines[0])
    del header["defaults"]["ensemble_lockstep"]
    journal_file.write_text("\n".join([json.dumps(header), *lines[1:]]) + "\n")
    lockstep = replace(QUICK, ensemble_lockstep=True)
    with pytest.raises(ValueError, match="different defaults"):
        run_uci("yacht", "mc_dropout", splits=2, resume=True, defaults=lockstep, **options)
    run_uci("yacht", "mc_dropout", splits=2, resume=True, defaults=QUICK, **options)
    assert (
        json.loads(journal_file.read_text().splitlines()[0])["defaults"]["ensemble_lockstep"]
        is False
    )


def test_the_cli_trains_an_ensemble_in_lockstep_and_says_which_methods_have_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    command = ["benchmark", "uci", "--dataset", "yacht", "--epochs", "2", "--splits", "1"]
    assert main([*command, "--method", "mc_dropout", "--lockstep", "--output", str(tmp_path)]) == 2
    assert "--method ensemble or stack" in capsys.readouterr().err
    assert main([*command, "--method", "ensemble", "--lockstep", "--output", str(tmp_path)]) == 0
    header = json.loads((tmp_path / JOURNAL).read_text().splitlines()[0])
    assert header["defaults"]["ensemble_lockstep"] is True


def test_the_cli_resumes_from_its_output_folder(tmp_path: Path) -> None:
    command = ["benchmark", "uci", "--dataset", "yacht", "--method", "mc_dropout"]
    command += ["--epochs", "2", "--output", str(tmp_path)]
    assert main([*command, "--splits", "1"]) == 0
    first = json.loads((tmp_path / "uci.json").read_text())["splits"]
    assert main([*command, "--splits", "2", "--resume"]) == 0
    both = json.loads((tmp_path / "uci.json").read_text())["splits"]
    assert [row["split"] for row in both] == [0, 1]
    assert both[0] == first[0]


@pytest.mark.parametrize("parallel", [False, True])
def test_run_jobs_hands_each_successful_result_to_on_result(parallel: bool) -> None:
    def square_or_fail(i: int) -> int:
        if i == 3:
            raise ValueError("three")
        return i * i

    seen: dict[int, int] = {}
    with ThreadPoolExecutor(2) as pool:
        with pytest.raises(JobError, match="job 3"):
            run_jobs(
                square_or_fail,
                range(5),
                executor=pool if parallel else None,
                on_result=lambda index, result: seen.update({index: result}),
            )
    assert seen == {0: 0, 1: 1, 2: 4, 4: 16}


def test_the_cli_offers_every_method_of_the_benchmark() -> None:
    from bnn.apps.cli import UCI_METHODS
    from bnn.apps.uci.command import METHODS

    assert sorted(UCI_METHODS) == sorted(METHODS)


def test_a_failing_callback_cancels_the_jobs_not_yet_started() -> None:
    started: list[int] = []

    def record(index: int) -> int:
        started.append(index)
        time.sleep(0.01)
        return index

    def refuse(index: int, result: int) -> None:  # noqa: ARG001 - e.g. a full disk
        raise OSError("disk full")

    with ThreadPoolExecutor(1) as pool, pytest.raises(OSError, match="disk full"):
        run_jobs(record, range(50), executor=pool, on_result=refuse)
    assert len(started) < 50
