"""UCI benchmark: a 2-split smoke run, the table format, and clear errors for broken folders."""

from __future__ import annotations

import json
import math
import multiprocessing
import shutil
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch

import bnn.apps.datasets
from bnn._jobs import run_jobs
from bnn.apps.cli import main
from bnn.apps.datasets.uci import seeded_split
from bnn.apps.uci import tune as uci_tune
from bnn.apps.uci.command import METHODS, Defaults, _prepare, run_uci
from bnn.apps.uci.methods import STACKED, fit_method
from bnn.apps.uci.report import SplitResult, format_table, summarise
from bnn.apps.uci.tune import Tuning
from bnn.posterior import as_posterior
from bnn.random.rng import RNG
from bnn.tune import Categorical


@pytest.mark.parametrize("method", METHODS)
def test_two_split_smoke_run_gives_finite_sane_metrics(method: str) -> None:
    quick = Defaults(
        epochs=15,
        ensemble_members=2,
        num_samples=20,
        gp_epochs=30,
        marglik_epochs=40,
        multiswag_runs=2,
    )
    results = run_uci("yacht", method, splits=2, defaults=quick, progress=False)
    assert [r.split for r in results] == [0, 1]
    for r in results:
        assert math.isfinite(r.rmse) and 0 < r.rmse < 15  # targets span 0..62
        assert math.isfinite(r.log_likelihood) and -10 < r.log_likelihood < 3
        assert 0 <= r.coverage_95 <= 1
    table = format_table(summarise(results))
    assert table.splitlines()[0].startswith("| dataset | method | splits | RMSE |")
    assert f"| yacht | {method} | 2 |" in table


def test_the_stack_combines_the_very_models_of_its_members_rows() -> None:
    """Each member is trained from the split's RNG state, as in its own row: same bits."""
    quick = Defaults(epochs=3, ensemble_members=2, num_samples=10, gp_epochs=5)
    split = bnn.apps.datasets.load_uci("yacht", 0)
    rng = RNG(0).spawn(0)
    data, _ = _prepare(split, quick, rng)
    start = rng.state_dict()
    stacked = fit_method("stack", data, quick, RNG.from_state_dict(start)).posterior
    weights = stacked.weights
    assert weights.shape == (3,) and torch.all(weights >= 0)
    assert float(weights.sum()) == pytest.approx(1.0, abs=1e-12)
    for member, name in zip(stacked.members, STACKED, strict=True):
        alone = fit_method(name, data, quick, RNG.from_state_dict(start))
        x = data.x_test.to(alone.dtype or data.x_test.dtype)
        expected = as_posterior(alone.posterior).sample_functions(x, 4, rng=7)
        assert torch.equal(member.sample_functions(data.x_test, 4, rng=7), expected.float())


def test_conformal_recalibration_adds_coverage_and_keeps_the_metrics() -> None:
    quick = Defaults(epochs=3, num_samples=10)
    plain = run_uci("yacht", "mc_dropout", splits=2, defaults=quick, progress=False)
    conformal = run_uci(
        "yacht", "mc_dropout", splits=2, defaults=quick, recalibrate="conformal", progress=False
    )
    for before, after in zip(plain, conformal, strict=True):
        assert (before.rmse, before.log_likelihood) == (after.rmse, after.log_likelihood)
        assert after.conformal_coverage_90 is not None and after.conformal_coverage_95 is not None
        assert 0 <= after.conformal_coverage_90 <= after.conformal_coverage_95 <= 1
    header = format_table(summarise(conformal)).splitlines()[0]
    assert "recalibrated 90% coverage | recalibrated 95% coverage" in header
    with pytest.raises(ValueError, match="need the validation split"):
        run_uci("yacht", "stack", defaults=Defaults(validation_fraction=0.0))
    with pytest.raises(ValueError, match="recalibrate must be one of"):
        run_uci("yacht", "vi", recalibrate="quantile")


def test_isotonic_recalibration_reports_coverage_and_width_and_keeps_the_metrics() -> None:
    quick = Defaults(epochs=3, num_samples=10)
    options: dict[str, Any] = {"splits": 1, "defaults": quick, "progress": False}
    plain = run_uci("yacht", "mc_dropout", **options)[0]
    isotonic = run_uci("yacht", "mc_dropout", recalibrate="isotonic", **options)[0]
    assert (plain.rmse, plain.log_likelihood) == (isotonic.rmse, isotonic.log_likelihood)
    assert isotonic.recalibration == "isotonic"
    assert isotonic.conformal_coverage_90 is not None and isotonic.conformal_coverage_95 is not None
    assert 0 <= isotonic.conformal_coverage_90 <= isotonic.conformal_coverage_95 <= 1
    assert isotonic.conformal_width_90 is not None and isotonic.conformal_width_95 is not None
    assert 0 < isotonic.conformal_width_90 < isotonic.conformal_width_95 < 100  # targets 0..62
    again = run_uci("yacht", "mc_dropout", recalibrate="isotonic", **options)[0]
    assert replace(again, seconds=0.0) == replace(isotonic, seconds=0.0)
    with pytest.raises(ValueError, match="isotonic recalibration and tuning need"):
        run_uci("yacht", "vi", recalibrate="isotonic", defaults=Defaults(validation_fraction=0.0))


@pytest.mark.parametrize(
    ("recalibrate", "name"), [("cvplus", "CV+ (normalized)"), ("jab", "J+aB (normalized)")]
)
def test_cross_recalibration_reports_coverage_and_width_and_is_reproducible(
    recalibrate: str, name: str
) -> None:
    quick = Defaults(epochs=3, num_samples=10)
    options: dict[str, Any] = {"splits": 1, "defaults": quick, "progress": False}
    plain = run_uci("yacht", "mc_dropout", **options)[0]
    cross = run_uci("yacht", "mc_dropout", recalibrate=recalibrate, **options)[0]
    assert (plain.rmse, plain.log_likelihood) == (cross.rmse, cross.log_likelihood)
    assert cross.recalibration == name
    assert cross.conformal_coverage_90 is not None and cross.conformal_coverage_95 is not None
    assert 0 <= cross.conformal_coverage_90 <= cross.conformal_coverage_95 <= 1
    assert cross.conformal_width_90 is not None and cross.conformal_width_95 is not None
    assert 0 < cross.conformal_width_90 < cross.conformal_width_95 < 100  # targets span 0..62
    again = run_uci("yacht", "mc_dropout", recalibrate=recalibrate, **options)[0]
    assert replace(again, seconds=0.0) == replace(cross, seconds=0.0)
    header = format_table(summarise([cross])).splitlines()[0]
    assert "| recalibration | recalibrated 90% coverage | recalibrated 95% coverage |" in header
    no_validation = Defaults(epochs=3, num_samples=10, validation_fraction=0.0)
    run_uci(
        "yacht", "vi", splits=1, defaults=no_validation, recalibrate=recalibrate, progress=False
    )


def test_tuning_with_the_defaults_as_only_choice_reproduces_the_untuned_row(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    quick = Defaults(epochs=3, num_samples=10)
    monkeypatch.setitem(uci_tune.SPACES, "mc_dropout", {"dropout": Categorical((quick.dropout,))})
    tuned = run_uci(
        "yacht", "mc_dropout", splits=1, defaults=quick, tuning=Tuning(2, 2), progress=False
    )[0]
    plain = run_uci("yacht", "mc_dropout", splits=1, defaults=quick, progress=False)[0]
    assert tuned.method == "mc_dropout+tune" and tuned.tuned == {"dropout": quick.dropout}
    assert (tuned.rmse, tuned.log_likelihood) == (plain.rmse, plain.log_likelihood)


def test_tuning_picks_the_configuration_with_the_better_validation_score() -> None:
    quick = Defaults(epochs=20, num_samples=10)
    split = bnn.apps.datasets.load_uci("yacht", 0)
    data, _ = _prepare(split, quick, RNG(0).spawn(0))
    objective = uci_tune.ValidationObjective("mc_dropout", data, quick)
    scores = {rate: objective({"dropout": rate}, RNG(5)) for rate in (0.01, 0.45)}
    assert scores[0.01] != scores[0.45]  # the rate reaches training
    best, result = uci_tune.tuned_defaults("mc_dropout", data, quick, Tuning(4, 2), RNG(0).spawn(0))
    winner = min(result.trials, key=lambda row: row["mean"])
    assert result.best_params == winner["params"]
    assert (best.lr, best.dropout) == (winner["params"]["lr"], winner["params"]["dropout"])
    with pytest.raises(ValueError, match="--tune tunes"):
        run_uci("yacht", "gp", tuning=Tuning())


def test_split_results_do_not_depend_on_which_splits_run() -> None:
    quick = Defaults(epochs=3, num_samples=10)
    both = run_uci("yacht", "mc_dropout", splits=2, defaults=quick, progress=False)
    first = run_uci("yacht", "mc_dropout", splits=1, defaults=quick, progress=False)
    assert both[0].rmse == first[0].rmse


def test_splits_on_a_process_pool_give_the_serial_numbers() -> None:
    quick = Defaults(epochs=3, num_samples=10)
    serial = run_uci(
        "yacht", "mc_dropout", splits=2, defaults=quick, threads_per_job=1, progress=False
    )
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(2, mp_context=context) as pool:
        pooled = run_uci("yacht", "mc_dropout", splits=2, defaults=quick, executor=pool)
    assert [replace(r, seconds=0.0) for r in serial] == [replace(r, seconds=0.0) for r in pooled]


def test_cli_writes_markdown_and_json(tmp_path: Path) -> None:
    assert (
        main(
            [
                "benchmark",
                "uci",
                "--dataset",
                "yacht",
                "--method",
                "vi",
                "--splits",
                "1",
                "--epochs",
                "2",
                "--output",
                str(tmp_path),
            ]
        )
        == 0
    )
    report = json.loads((tmp_path / "uci.json").read_text())
    assert report["summary"][0]["dataset"] == "yacht" and len(report["splits"]) == 1
    assert (tmp_path / "uci.md").read_text().startswith("| dataset |")


def _copy_yacht(tmp_path: Path) -> Path:
    """The bundled yacht data in the published layout: column files and 20 split files."""
    source = Path(bnn.apps.datasets.__file__).parent / "yacht"
    target = tmp_path / "yacht"
    shutil.copytree(source, target)
    (target / "index_features.txt").write_text("\n".join(map(str, range(6))) + "\n")
    (target / "index_target.txt").write_text("6\n")
    for split in range(20):
        train, test = seeded_split(308, split)
        (target / f"index_train_{split}.txt").write_text("\n".join(map(str, train)) + "\n")
        (target / f"index_test_{split}.txt").write_text("\n".join(map(str, test)) + "\n")
    return target


def test_missing_split_file_is_named(tmp_path: Path) -> None:
    folder = _copy_yacht(tmp_path)
    (folder / "index_test_3.txt").unlink()
    with pytest.raises(FileNotFoundError, match="index_test_3.txt"):
        bnn.apps.datasets.load_uci("yacht", 3, data_dir=tmp_path)


def test_nan_rows_are_reported_with_the_file(tmp_path: Path) -> None:
    folder = _copy_yacht(tmp_path)
    lines = (folder / "data.txt").read_text().splitlines()
    lines[5] = " ".join(["nan"] * 7)
    (folder / "data.txt").write_text("\n".join(lines))
    with pytest.raises(ValueError, match=r"data.txt has non-finite values \(first at row 5\)"):
        bnn.apps.datasets.load_uci("yacht", 0, data_dir=tmp_path)


def test_out_of_range_indices_are_reported_with_the_file(tmp_path: Path) -> None:
    folder = _copy_yacht(tmp_path)
    (folder / "index_train_0.txt").write_text("0\n1\n5000\n")
    with pytest.raises(ValueError, match="index_train_0.txt has row index 5000"):
        bnn.apps.datasets.load_uci("yacht", 0, data_dir=tmp_path)


def test_unknown_method_and_split_count() -> None:
    with pytest.raises(ValueError, match="method must be one of"):
        run_uci("yacht", "magic")
    with pytest.raises(ValueError, match="splits must be in"):
        run_uci("yacht", "vi", splits=21)


def test_validation_is_carved_from_the_training_split_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[int] = []
    original = bnn.apps.uci.command._carve_validation

    def spy(size: int, defaults: Defaults, rng: bnn.RNG) -> object:
        train, validation = original(size, defaults, rng)
        assert validation is not None
        assert set(train.tolist()).isdisjoint(validation.tolist())
        assert sorted(train.tolist() + validation.tolist()) == list(range(size))
        seen.append(len(validation))
        return train, validation

    monkeypatch.setattr(bnn.apps.uci.command, "_carve_validation", spy)
    run_uci(
        "yacht", "mc_dropout", splits=1, defaults=Defaults(epochs=2, num_samples=5), progress=False
    )
    split = bnn.apps.datasets.load_uci("yacht", 0)
    assert seen == [round(0.1 * split.x_train.shape[0])]


def test_invalid_validation_fraction_is_rejected() -> None:
    with pytest.raises(ValueError, match="validation_fraction"):
        run_uci("yacht", "mc_dropout", splits=1, defaults=Defaults(validation_fraction=1.0))


def test_a_negative_split_index_is_reported_with_its_own_value_and_entry(tmp_path: Path) -> None:
    folder = _copy_yacht(tmp_path)
    (folder / "index_test_2.txt").write_text("4\n-3\n5000\n")
    with pytest.raises(ValueError, match=r"index_test_2.txt has row index -3 \(entry 1\)"):
        bnn.apps.datasets.load_uci("yacht", 2, data_dir=tmp_path)


def _result(split: int, **fields: Any) -> SplitResult:
    scores = {"rmse": 0.5, "log_likelihood": 0.0, "coverage_95": 0.95, "seconds": 1.0}
    return SplitResult("yacht", "mc_dropout", split, **(scores | fields))


def test_a_partial_run_is_not_compared_with_the_published_mean_over_20_splits() -> None:
    two = format_table(summarise([_result(0), _result(1)]))
    assert two.splitlines()[-1].endswith("| n/a (2 of 20 splits) |")
    twenty = format_table(summarise([_result(i) for i in range(20)]))
    assert twenty.splitlines()[-1].endswith("| yes |")  # RMSE 0.5 < 1.11, log-lik 0 > -1.55


def test_the_table_shows_the_tuned_parameters_and_their_seed_spread() -> None:
    rows = [
        _result(0, tuned={"dropout": 0.01, "lr": 0.003}, tuned_seed_std=0.05),
        _result(1, tuned={"dropout": 0.03, "lr": 0.001}, tuned_seed_std=0.07),
    ]
    table = format_table(summarise(rows))
    assert "| tuned (mean ± sd over splits) |" in table.splitlines()[0]
    assert "dropout 0.02 ± 0.014, lr 0.002 ± 0.0014; seed std 0.06" in table


def test_the_split_bar_advances_as_splits_finish_on_an_executor() -> None:
    finished: list[int] = []
    with ThreadPoolExecutor(2) as pool:
        results = run_jobs(
            lambda i: i * i, range(5), executor=pool, on_done=lambda: finished.append(1)
        )
    assert results == [0, 1, 4, 9, 16] and len(finished) == 5
