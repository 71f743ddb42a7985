"""seed_sweep aggregates, reproducibility and bad input."""

from __future__ import annotations

import math

import pytest
import torch

import bnn
from bnn.random.sweep import student_t_quantile


def test_aggregates_for_known_outputs() -> None:
    values = iter([1.0, 2.0, 3.0, 4.0, 10.0])
    result = bnn.seed_sweep(lambda _rng: {"v": next(values)}, [0, 1, 2, 3, 4], progress=False)
    row = result.table["v"]
    assert row["mean"] == pytest.approx(4.0)
    assert row["std"] == pytest.approx(math.sqrt(50 / 4))
    assert row["sem"] == pytest.approx(math.sqrt(50 / 4) / math.sqrt(5))
    assert (row["min"], row["max"], row["n"]) == (1.0, 10.0, 5.0)
    half_width = 2.7764451051977987 * row["sem"]  # t_{0.975, 4}
    assert row["ci95_low"] == pytest.approx(4.0 - half_width)
    assert row["ci95_high"] == pytest.approx(4.0 + half_width)
    assert result.seeds == (0, 1, 2, 3, 4)


def test_each_seed_gets_its_own_reproducible_rng() -> None:
    def run(rng: bnn.RNG) -> dict[str, float]:
        with rng.stream("init"):
            return {
                "draw": float(torch.rand(())),
                "default_is_run_rng": float(bnn.random.get_rng() is rng),
            }

    first = bnn.seed_sweep(run, seeds=5, rng=0, progress=False)
    second = bnn.seed_sweep(run, seeds=5, rng=0, progress=False)
    assert first.runs == second.runs
    assert len({r["draw"] for r in first.runs}) == 5
    assert all(r["default_is_run_rng"] == 1.0 for r in first.runs)
    with bnn.random.use_rng(bnn.RNG(0).spawn(2)) as rng:
        assert run(rng)["draw"] == first.runs[2]["draw"]


def test_markdown_table_lists_every_metric() -> None:
    result = bnn.seed_sweep(
        lambda _rng: {"a": 1.0, "b": torch.tensor(2.0)}, seeds=2, progress=False
    )
    text = result.to_markdown()
    assert "| a |" in text and "| b |" in text


@pytest.mark.parametrize(
    "p, dof, expected",
    [
        (0.975, 1, 12.706204736),
        (0.975, 10, 2.228138852),
        (0.95, 30, 1.697260887),
        (0.025, 4, -2.776445105),
    ],
)
def test_student_t_quantile_matches_tables(p: float, dof: int, expected: float) -> None:
    assert student_t_quantile(p, dof) == pytest.approx(expected, abs=1e-8)


@pytest.mark.parametrize(
    "fn, seeds, error, match",
    [
        (lambda _rng: {"a": 1.0}, 0, ValueError, "positive count"),
        (lambda _rng: {"a": 1.0}, [], ValueError, "empty"),
        (lambda _rng: {"a": 1.0}, [1, 1], ValueError, "duplicates"),
        (lambda _rng: {"a": 1.0}, [-1], TypeError, "non-negative int"),
        (lambda _rng: {"a": float("nan")}, 2, ValueError, "diverged"),
        (lambda _rng: [1.0], 2, TypeError, "dict of metric"),
        (lambda _rng: {"a": torch.ones(3)}, 2, TypeError, "scalar"),
        (lambda _rng: {"a": "x"}, 2, TypeError, "not a number"),
    ],
)
def test_bad_input(fn, seeds, error, match) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(error, match=match):
        bnn.seed_sweep(fn, seeds, progress=False)


def test_runs_must_agree_on_metric_names() -> None:
    names = iter([{"a": 1.0}, {"b": 1.0}])
    with pytest.raises(ValueError, match="same names"):
        bnn.seed_sweep(lambda _rng: next(names), seeds=2, progress=False)
