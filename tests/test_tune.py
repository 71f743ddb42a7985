"""Seed-aware tuning: optimum within its CI, the injected seed noise recovered, reproducible
studies, risk aversion, racing, failures recorded, storages and executors."""

from __future__ import annotations

import math
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import torch

import bnn

pytest.importorskip("optuna")
from bnn.parallel.executors import local_pool
from bnn.tune import Categorical, Float, Int, Race, tune  # noqa: E402
from tests.parallel.jobs import noisy_quadratic  # noqa: E402

NOISE = 0.05


def test_the_optimum_lies_in_the_reported_interval_and_the_seed_noise_is_recovered() -> None:
    result = tune(
        noisy_quadratic, {"x": Float(-1.0, 1.0)}, seeds=8, n_trials=25, rng=0, progress=False
    )
    assert abs(result.best_params["x"] - 0.3) < 0.15
    best = min(result.trials, key=lambda row: row["score"])
    true_value = (best["params"]["x"] - 0.3) ** 2
    assert best["ci95_low"] <= true_value <= best["ci95_high"]
    # common random numbers: every trial saw the same 8 noise draws, so its spread over seeds
    # is exactly the spread of those draws, in every trial
    draws = torch.stack(
        [
            torch.randn(
                (),
                generator=bnn.RNG(0).spawn(f"seed-{i}").torch_generator("noise"),
                dtype=torch.float64,
            )
            for i in range(8)
        ]
    )
    for row in result.trials:
        assert math.isclose(row["std"], NOISE * float(draws.std()), rel_tol=1e-9)


def test_the_reported_spread_estimates_the_injected_seed_noise() -> None:
    result = tune(
        noisy_quadratic, {"x": Float(-1.0, 1.0)}, seeds=40, n_trials=2, rng=1, progress=False
    )
    standard_error = NOISE / math.sqrt(2 * (40 - 1))  # of a normal sample's std
    for row in result.trials:
        assert abs(row["std"] - NOISE) < 4 * standard_error


def test_a_study_is_bit_reproducible_per_seed_and_differs_between_seeds() -> None:
    def run(seed: int) -> list[tuple[float, float]]:
        result = tune(
            noisy_quadratic, {"x": Float(-1.0, 1.0)}, seeds=3, n_trials=8, rng=seed, progress=False
        )
        return [(row["params"]["x"], row["mean"]) for row in result.trials]

    assert run(1) == run(1)
    assert run(1) != run(2)


def _two_modes(params: dict[str, Any], rng: bnn.RNG) -> float:
    """'steady': always 1.0; 'wild': mean 0.6, std 0.5 over seeds."""
    if params["mode"] == "steady":
        return 1.0
    return 0.6 + 0.5 * float(torch.randn((), generator=rng.torch_generator("noise")))


def test_risk_aversion_picks_the_low_variance_optimum_the_mean_would_not() -> None:
    space = {"mode": Categorical(("steady", "wild"))}
    by_mean = tune(_two_modes, space, seeds=10, n_trials=6, rng=3, progress=False)
    averse = tune(_two_modes, space, seeds=10, n_trials=6, risk=2.0, rng=3, progress=False)
    assert by_mean.best_params == {"mode": "wild"}
    assert averse.best_params == {"mode": "steady"}


def _close_pair(params: dict[str, Any], rng: bnn.RNG) -> float:
    offset = {"a": 0.0, "b": 0.01, "c": 1.0}[params["arm"]]
    # the arm changes the random path (as a different architecture would): no common noise
    return offset + float(torch.randn((), generator=rng.torch_generator(f"noise-{params['arm']}")))


def _far_pair(params: dict[str, Any], rng: bnn.RNG) -> float:
    offset = {"a": 0.0, "b": 0.3, "c": 1.0}[params["arm"]]
    return offset + 0.2 * float(torch.randn((), generator=rng.torch_generator("noise"))) * (
        1 + 0.5 * (params["arm"] == "b")
    )


def test_racing_separates_a_real_difference_and_admits_an_unresolvable_one() -> None:
    space = {"arm": Categorical(("a", "b", "c"))}
    race = Race(max_seeds=16, step=4)
    far = tune(_far_pair, space, seeds=3, n_trials=9, race=race, rng=0, progress=False)
    assert far.separated is True and far.best_params == {"arm": "a"}
    assert "beats" in far.message
    close = tune(_close_pair, space, seeds=3, n_trials=9, race=race, rng=0, progress=False)
    assert close.separated is False
    assert "indistinguishable under seed noise after 16 common seeds" in close.message
    assert all(len(values) == 16 for values in close.race.values())


def _fails_on_some_seeds(params: dict[str, Any], rng: bnn.RNG) -> float:
    draw = float(torch.rand((), generator=rng.torch_generator("fail")))
    if params["x"] > 0.5 and draw < 0.5:
        raise RuntimeError("diverged")
    if params["x"] > 0.9:
        return math.nan
    return params["x"]


def test_failing_seeds_are_recorded_per_trial_and_the_study_goes_on() -> None:
    with pytest.warns(RuntimeWarning, match=r"of 60 seed runs failed") as caught:
        result = tune(
            _fails_on_some_seeds,
            {"x": Float(0.0, 1.0)},
            seeds=4,
            n_trials=15,
            rng=0,
            progress=False,
        )
    failed = [row for row in result.trials if row["failed"]]
    counted = sum(int(t.user_attrs["failed"]) for t in result.study.trials)
    message = str(caught[0].message)
    assert message.startswith(f"{counted} of 60 seed runs failed") and "diverged" in message
    assert failed and all(row["n"] + row["failed"] == 4 for row in result.trials)
    assert result.best_params["x"] < 0.5
    states = {t.state.name for t in result.study.trials}
    assert "COMPLETE" in states


def test_pruning_stops_poor_trials_after_a_seed() -> None:
    result = tune(
        noisy_quadratic,
        {"x": Float(-3.0, 3.0)},
        seeds=6,
        n_trials=30,
        pruner=True,
        rng=0,
        progress=False,
    )
    pruned = [t for t in result.study.trials if t.state.name == "PRUNED"]
    assert pruned and all(len(t.user_attrs["values"]) < 6 for t in pruned)


def test_a_shared_storage_continues_one_study(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    space = {"x": Float(-1.0, 1.0), "layers": Int(1, 3)}

    def objective(params: dict[str, Any], rng: bnn.RNG) -> float:
        return noisy_quadratic(params, rng) + 0.01 * params["layers"]

    first = tune(
        objective,
        space,
        seeds=2,
        n_trials=3,
        storage=storage,
        study_name="s",
        rng=0,
        progress=False,
    )
    second = tune(
        objective,
        space,
        seeds=2,
        n_trials=3,
        storage=storage,
        study_name="s",
        rng=0,
        progress=False,
    )
    assert len(first.trials) == 3 and len(second.trials) == 6


def test_a_trial_s_seeds_on_a_process_pool_equal_the_serial_ones() -> None:
    serial = tune(
        noisy_quadratic,
        {"x": Float(-1.0, 1.0)},
        seeds=4,
        n_trials=3,
        rng=5,
        threads_per_job=1,
        progress=False,
    )
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(2, mp_context=context) as pool:
        pooled = tune(
            noisy_quadratic,
            {"x": Float(-1.0, 1.0)},
            seeds=4,
            n_trials=3,
            rng=5,
            executor=pool,
            progress=False,
        )
    assert [r["values"] for r in pooled.trials] == [r["values"] for r in serial.trials]


def test_the_result_renders_as_a_table_and_a_figure() -> None:
    pytest.importorskip("matplotlib")
    result = tune(
        noisy_quadratic, {"x": Float(-1.0, 1.0)}, seeds=3, n_trials=4, rng=0, progress=False
    )
    assert result.to_markdown().startswith("| trial | params | mean |")
    assert result.plot()._repr_png_()[:4] == b"\x89PNG"
    assert 0.0 <= result.seed_noise_share <= 1.0


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"space": {}}, ValueError, "space must be a non-empty"),
        ({"space": {"x": (0, 1)}}, TypeError, "must be bnn.tune.Float, Int or Categorical"),
        ({"seeds": 1, "risk": 1.0}, ValueError, "needs seeds >= 2"),
        ({"risk": -1.0}, ValueError, "risk must be >= 0"),
        ({"direction": "down"}, ValueError, "direction must be"),
        ({"seeds": 0}, ValueError, "seeds"),
    ],
)
def test_bad_settings_are_refused_before_any_trial(
    kwargs: dict[str, Any], error: type, message: str
) -> None:
    arguments: dict[str, Any] = {"space": {"x": Float(-1.0, 1.0)}, "seeds": 2, "n_trials": 2}
    arguments |= kwargs
    space = arguments.pop("space")
    with pytest.raises(error, match=message):
        tune(noisy_quadratic, space, rng=0, progress=False, **arguments)


def test_empty_and_invalid_ranges_are_refused_when_written() -> None:
    with pytest.raises(ValueError, match=r"empty range \[1.0, 1.0\]"):
        Float(1.0, 1.0)
    with pytest.raises(ValueError, match="log-scale range needs low > 0"):
        Float(0.0, 1.0, log=True)
    with pytest.raises(TypeError, match="Int bounds must be ints"):
        Int(0, 2.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="at least one choice"):
        Categorical(())


def test_one_seed_per_trial_is_reported_as_possibly_luck() -> None:
    result = tune(
        noisy_quadratic, {"x": Float(-1.0, 1.0)}, seeds=1, n_trials=3, rng=0, progress=False
    )
    assert "one seed per trial: there is no interval" in result.message


def test_importance_splits_the_spread_into_seed_noise_and_the_parameter_that_matters() -> None:
    """``x`` moves the objective, ``y`` does not; the seed noise share is the within share."""
    pytest.importorskip("sklearn")

    def objective(params: dict[str, Any], rng: bnn.RNG) -> float:
        noise = torch.randn((), generator=rng.torch_generator("noise"), dtype=torch.float64)
        return (params["x"] - 0.3) ** 2 + 0.0 * params["y"] + 0.05 * float(noise)

    space = {"x": Float(-1.0, 1.0), "y": Float(0.0, 1.0)}
    result = tune(objective, space, seeds=4, n_trials=20, rng=0, progress=False)
    shares = result.importance()
    assert sum(shares.values()) == pytest.approx(1.0)
    assert shares["seed noise"] == pytest.approx(result.seed_noise_share)
    assert shares["x"] > 10 * shares["y"]
    pytest.importorskip("matplotlib")
    figure = result.plot_importance()
    assert len(figure.axes[0].patches) == 3
    one_seed = tune(objective, space, seeds=1, n_trials=3, rng=0, progress=False)
    with pytest.raises(ValueError, match="seeds >= 2"):
        one_seed.importance()


def test_a_configuration_already_scored_is_reused_not_run_again() -> None:
    calls: list[dict[str, Any]] = []

    def objective(params: dict[str, Any], rng: bnn.RNG) -> float:
        calls.append(params)
        return noisy_quadratic({"x": params["x"]}, rng)

    space = {"x": Categorical((-1.0, 0.0, 1.0))}
    result = tune(objective, space, seeds=3, n_trials=9, rng=0, progress=False)
    distinct = {tuple(t.params.items()) for t in result.study.trials}
    assert len(calls) == 3 * len(distinct) < 3 * 9  # each configuration ran its seeds once
    reused = [t for t in result.study.trials if "reused_from" in t.user_attrs]
    assert reused and all(
        t.user_attrs["values"]
        == result.study.trials[t.user_attrs["reused_from"]].user_attrs["values"]
        for t in reused
    )


def test_trials_at_once_give_the_same_study_for_the_same_n_jobs_on_any_executor() -> None:
    space = {"x": Float(-3.0, 3.0)}
    options: dict[str, Any] = {"seeds": 3, "n_trials": 6, "n_jobs": 2, "rng": 0, "progress": False}
    own_pool = tune(noisy_quadratic, space, **options)  # n_jobs spawned workers
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=context) as one_worker:  # another completion order
        on_one_worker = tune(noisy_quadratic, space, executor=one_worker, **options)
    rows = [(r["params"], r["values"]) for r in own_pool.trials]
    assert rows == [(r["params"], r["values"]) for r in on_one_worker.trials]
    assert len(rows) == 6 and rows[0][0] != rows[1][0]  # the constant liar keeps a batch apart
    serial = tune(noisy_quadratic, space, **(options | {"n_jobs": 1}))
    first = serial.trials[0]["params"]  # the first configuration asked is the same
    assert [r["values"] for r in serial.trials if r["params"] == first] == [rows[0][1]]


def test_trials_at_once_prune_seed_by_seed_and_give_the_same_study_on_any_executor() -> None:
    options: dict[str, Any] = {
        "seeds": 6,
        "n_trials": 16,
        "n_jobs": 2,
        "pruner": True,
        "rng": 0,
        "progress": False,
    }
    own_pool = tune(noisy_quadratic, {"x": Float(-3.0, 3.0)}, **options)
    with local_pool(1) as one_worker:  # another completion order
        on_one_worker = tune(
            noisy_quadratic, {"x": Float(-3.0, 3.0)}, executor=one_worker, **options
        )
    pruned = [t for t in own_pool.study.trials if t.state.name == "PRUNED"]
    assert pruned and all(len(t.user_attrs["values"]) < 6 for t in pruned)
    assert any(t.state.name == "COMPLETE" for t in own_pool.study.trials)

    def history(result: Any) -> list[tuple[Any, ...]]:
        return [(t.state.name, t.params, t.user_attrs["values"]) for t in result.study.trials]

    assert history(own_pool) == history(on_one_worker)


def test_n_jobs_refuses_a_bad_count_and_pruning_on_an_executor_one_trial_at_a_time() -> None:
    with pytest.raises(ValueError, match="n_jobs must be a positive int"):
        tune(noisy_quadratic, {"x": Float(0, 1)}, n_jobs=0, progress=False)
    with local_pool(1) as pool, pytest.raises(ValueError, match="prune with n_jobs > 1"):
        tune(noisy_quadratic, {"x": Float(0, 1)}, executor=pool, pruner=True, progress=False)
