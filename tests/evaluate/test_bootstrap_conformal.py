"""Jackknife+-after-bootstrap (Kim, Xu & Barber 2020): coverage in simulation against the
nominal level for a stable learner (least squares, bags with and without replacement, both
scores), coverage restored for an unstable learner where CV+ over-covers, the out-of-bag
mixture against its definition, the same result on any executor, and refusals."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

import bnn
from bnn.evaluate._bootstrap_conformal import binomial_bag_count
from bnn.evaluate._out_of_bag import out_of_bag_predictive
from bnn.evaluate.recalibrate import cv_plus, jackknife_plus_after_bootstrap
from bnn.likelihoods import ClassificationPrediction, RegressionPrediction
from bnn.parallel.executors import local_pool
from tests.evaluate.test_cross_conformal import (
    _heteroscedastic,
    _regression,
    _ScaledLine,
    gradient_descent,
    least_squares,
)
from tests.evaluate.test_recalibrate import K_SD, _coverage_sd

LEVEL = 0.9


def _coverage(make: object, data: object, repetitions: int, n: int, m: int) -> float:
    """Mean test coverage over ``repetitions`` of ``make(x, y, r)``'s interval at LEVEL."""
    coverage = []
    for r in range(repetitions):
        x, y = data(n, 100 + 2 * r)  # type: ignore[operator]
        x_test, y_test = data(m, 101 + 2 * r)  # type: ignore[operator]
        lower, upper = make(x, y, r).interval(x_test)  # type: ignore[operator]
        coverage.append(float(((y_test >= lower) & (y_test <= upper)).double().mean()))
    return sum(coverage) / repetitions


@pytest.mark.parametrize(
    ("replace", "method", "random_count"),
    [
        (True, "absolute", False),
        (False, "absolute", False),
        (True, "normalized", False),
        (True, "absolute", True),
    ],
)
def test_it_covers_about_the_nominal_level_for_a_stable_learner(
    replace: bool, method: str, random_count: bool
) -> None:
    n, m, repetitions = 59, 100, 200
    learner, data = (
        (least_squares, _regression) if method == "absolute" else (_ScaledLine, _heteroscedastic)
    )
    resamplings = 80 if random_count else 30  # about 30 models either way

    def make(x: Tensor, y: Tensor, r: int) -> object:
        return jackknife_plus_after_bootstrap(
            learner, x, y, resamplings=resamplings, replace=replace, random_count=random_count,
            level=LEVEL, method=method, rng=r, progress=False,
        )  # fmt: skip

    mean = _coverage(make, data, repetitions, n, m)
    _, sd = _coverage_sd(n, LEVEL, m, repetitions)
    print(f"replace={replace}, {method}, random count {random_count}: {mean:.4f} (sd {sd:.4f})")
    assert LEVEL - K_SD * sd <= mean <= LEVEL + 0.03 + K_SD * sd


class _Shaky:
    """Least squares plus a random offset per trained model (sd 0.5, the noise's): an unstable
    learner whose models disagree by as much as the noise."""

    def __init__(self, x: Tensor, y: Tensor, rng: bnn.RNG) -> None:
        self.line = least_squares(x, y, rng).model
        self.offset = 0.5 * torch.randn(
            (), generator=rng.torch_generator("offset"), dtype=torch.float64
        )

    def predict(self, x: Tensor) -> RegressionPrediction:
        with torch.no_grad():
            mean = (self.line(x) + self.offset)[None]
        return RegressionPrediction(mean, mean, torch.full_like(mean, 0.5))


def test_it_restores_the_level_where_cv_plus_over_covers_an_unstable_learner() -> None:
    n, m, repetitions = 59, 100, 200
    _, sd = _coverage_sd(n, LEVEL, m, repetitions)

    def cross(x: Tensor, y: Tensor, r: int) -> object:
        return cv_plus(_Shaky, x, y, folds=10, level=LEVEL, rng=r, progress=False)

    def bootstrap(x: Tensor, y: Tensor, r: int) -> object:
        return jackknife_plus_after_bootstrap(
            _Shaky, x, y, resamplings=40, level=LEVEL, rng=r, progress=False
        )

    cv, jab = (_coverage(make, _regression, repetitions, n, m) for make in (cross, bootstrap))
    print(f"unstable learner: CV+ covers {cv:.4f}, jackknife+-after-bootstrap {jab:.4f}")
    # Measured 0.983 and 0.913: CV+ counts the models' disagreement twice (in the residuals
    # and in the scatter of the fold models at x); 40 bags average it away.
    assert cv > LEVEL + 0.05
    assert LEVEL - K_SD * sd <= jab <= LEVEL + 0.03 + K_SD * sd


def test_the_out_of_bag_predictive_is_the_mixture_of_the_models_that_left_a_point_out() -> None:
    g = torch.Generator().manual_seed(0)
    means = 100 + torch.randn(5, 7, 2, generator=g, dtype=torch.float64)  # [B, N, event]
    stds = torch.rand(5, 7, 2, generator=g, dtype=torch.float64) + 0.1
    out_of_bag = torch.rand(4, 5, generator=g) < 0.5
    out_of_bag[:, 0] = True  # every point out of at least one model
    mean, std = out_of_bag_predictive(means, stds, out_of_bag)
    assert std is not None
    for i in range(4):
        chosen = out_of_bag[i]
        expected = means[chosen].mean(0)
        second = (stds[chosen] ** 2 + means[chosen] ** 2).mean(0)
        torch.testing.assert_close(mean[i], expected, rtol=0, atol=1e-12)
        torch.testing.assert_close(std[i] ** 2, second - expected**2, rtol=0, atol=1e-9)
    one = torch.nn.functional.one_hot(torch.tensor([2, 0, 4, 2]), 5).bool()
    mean, std = out_of_bag_predictive(means, stds, one)  # CV+: each point's own model, bitwise
    assert std is not None
    assert torch.equal(mean, means[[2, 0, 4, 2]]) and torch.equal(std, stds[[2, 0, 4, 2]])


def test_the_mixture_is_exact_beside_a_diverged_model_and_ignores_models_in_the_bag() -> None:
    means = torch.tensor([[1e4], [1.0], [1.5]])  # [B = 3, N = 1], float32
    stds = torch.tensor([[1.0], [0.1], [0.2]])
    out_of_bag = torch.tensor([[False, True, True], [True, True, True]])
    mean, std = out_of_bag_predictive(means, stds, out_of_bag)
    assert std is not None
    exact = math.sqrt((0.1**2 + 0.2**2) / 2 + 0.25**2)  # models 1 and 2 only
    assert float(mean[0, 0]) == 1.25 and abs(float(std[0, 0]) / exact - 1) < 1e-6
    means[0, 0] = float("nan")  # a model point 0 trained on cannot leak into its predictive
    mean, std = out_of_bag_predictive(means, stds, out_of_bag)
    assert std is not None and torch.isfinite(mean[0]).all() and torch.isfinite(std[0]).all()


def test_scores_and_intervals_follow_the_definition() -> None:
    x, y = _regression(12, 9)
    x_test = torch.linspace(-2, 2, 5, dtype=torch.float64)[:, None].repeat(1, 2)
    level = 0.8
    jab = jackknife_plus_after_bootstrap(
        least_squares, x, y, resamplings=6, replace=False, sample_size=6, level=level, rng=3,
        progress=False,
    )  # fmt: skip
    assert bool(jab.out_of_bag.any(1).all())  # no point dropped with this seed
    with torch.no_grad():
        at_train = [model.model(x) for model in jab.models]  # [n, 1] each
        at_test = [model.model(x_test) for model in jab.models]
    lows, highs = [], []
    for i in range(12):
        chosen = [b for b in range(6) if jab.out_of_bag[i, b]]
        centre_i = sum(at_train[b][i] for b in chosen) / len(chosen)
        residual = float((y[i] - centre_i).abs())
        assert abs(float(jab.scores[i]) - residual) < 1e-12
        centre = sum(at_test[b] for b in chosen) / len(chosen)
        lows.append(centre - residual)
        highs.append(centre + residual)
    # ranks ⌊α(n+1)⌋ = 2 and ⌈(1−α)(n+1)⌉ = 11 of the n = 12 values
    lower = torch.stack(lows).sort(0).values[1]
    upper = torch.stack(highs).sort(0).values[10]
    mine = jab.interval(x_test, level)
    torch.testing.assert_close(mine, (lower, upper), rtol=0, atol=1e-12)


def test_the_same_result_serially_and_on_an_executor_and_other_bags_for_another_seed() -> None:
    x, y = _regression(30, 7)
    options = {"resamplings": 12, "replace": False, "rng": 0, "threads_per_job": 1}
    options["progress"] = False
    serial = jackknife_plus_after_bootstrap(gradient_descent, x, y, **options)
    with local_pool(2) as pool:
        pooled = jackknife_plus_after_bootstrap(gradient_descent, x, y, executor=pool, **options)
    assert torch.equal(serial.out_of_bag, pooled.out_of_bag)
    assert torch.equal(serial.scores, pooled.scores)
    torch.testing.assert_close(serial.interval(x[:5]), pooled.interval(x[:5]), rtol=0, atol=0)
    other = jackknife_plus_after_bootstrap(
        gradient_descent, x, y, resamplings=12, replace=False, rng=1, progress=False
    )
    assert not torch.equal(serial.out_of_bag, other.out_of_bag)


def test_bad_input_is_refused_before_training() -> None:
    x, y = _regression(20, 8)

    def never(x: Tensor, y: Tensor, rng: bnn.RNG) -> None:  # noqa: ARG001
        raise AssertionError("trained although the input was bad")

    jab = jackknife_plus_after_bootstrap
    with pytest.raises(ValueError, match="resamplings must be an int ≥ 2"):
        jab(never, x, y, resamplings=1)
    with pytest.raises(ValueError, match=r"sample_size must be an int in \[1, 19\]"):
        jab(never, x, y, sample_size=20, replace=False)
    with pytest.raises(ValueError, match=r"sample_size must be an int in \[1, 20\]"):
        jab(never, x, y, sample_size=0)
    with pytest.raises(TypeError, match="replace must be True or False"):
        jab(never, x, y, replace=1)
    with pytest.raises(ValueError, match="'absolute' or 'normalized'"):
        jab(never, x, y, method="cqr")
    with pytest.raises(ValueError, match="needs at least 99 points"):
        jab(never, x, y, level=0.99)
    with pytest.raises(TypeError, match="use cv_plus for"):
        jab(never, x, torch.zeros(20, dtype=torch.long))
    with pytest.raises(TypeError, match="use cv_plus for"):
        jab(never, x, y, likelihood=bnn.Categorical())
    with pytest.raises(ValueError, match="NaN or inf"):
        jab(never, x, torch.where(y > 1, float("nan"), y))
    with (
        pytest.raises(ValueError, match="raise resamplings or lower sample_size"),
        pytest.warns(UserWarning, match="in every bag"),
    ):
        jab(never, x, y, resamplings=2, sample_size=19, replace=False, level=0.8)


class _Voter:
    """A predictor that returns class probabilities whatever it is given."""

    def __init__(self, x: Tensor, y: Tensor, rng: bnn.RNG) -> None:  # noqa: ARG002
        pass

    def predict(self, x: Tensor) -> ClassificationPrediction:
        logits = torch.zeros(1, x.shape[0], 3, dtype=x.dtype)
        return ClassificationPrediction(logits, logits.softmax(-1))


def test_a_classifier_and_points_in_every_bag_are_reported() -> None:
    x, y = _regression(20, 8)
    with pytest.raises(TypeError, match="use cv_plus for a classifier"):
        jackknife_plus_after_bootstrap(  # seeded: enough bags that every point is out of one
            _Voter, x, y, resamplings=30, rng=0, progress=False
        )
    x, y = _regression(20, 8)
    with pytest.warns(UserWarning, match="in every bag and have no out-of-bag model"):
        cross = jackknife_plus_after_bootstrap(
            least_squares, x, y, resamplings=2, level=0.8, rng=0, progress=False
        )
    assert cross.out_of_bag.any(1).all() and len(cross.scores) < 20
    with pytest.raises(ValueError, match="no one fold each"):
        _ = cross.fold_of


@pytest.mark.parametrize("method", ["absolute", "normalized"])
def test_intervals_in_blocks_of_test_inputs_equal_the_whole_at_once(
    method: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    x, y = _heteroscedastic(59, 3)
    x_test, _ = _heteroscedastic(100, 4)
    options = {"level": LEVEL, "method": method, "progress": False}
    bags = jackknife_plus_after_bootstrap(_ScaledLine, x, y, resamplings=20, rng=1, **options)
    folds = cv_plus(_ScaledLine, x, y, folds=5, rng=1, **options)
    whole = [made.interval(x_test, rng=2) for made in (bags, folds)]
    monkeypatch.setattr(bnn.evaluate._cross_conformal, "_BLOCK_ELEMENTS", 59 * 7)  # 7 a block
    (bag_lower, bag_upper), (fold_lower, fold_upper) = (
        made.interval(x_test, rng=2) for made in (bags, folds)
    )
    assert torch.equal(fold_lower, whole[1][0]) and torch.equal(fold_upper, whole[1][1])
    assert torch.equal(bag_lower, whole[0][0]) and torch.equal(bag_upper, whole[0][1])


@pytest.mark.parametrize(("replace", "size"), [(True, 59), (False, 20)])
def test_a_random_count_is_binomial_with_the_chance_a_bag_leaves_out_one_more_point(
    replace: bool, size: int
) -> None:
    n, resamplings, draws = 59, 80, 4000
    chance = (1 - 1 / (n + 1)) ** size if replace else 1 - size / (n + 1)
    generator = torch.Generator().manual_seed(0)
    counts = torch.tensor(
        [binomial_bag_count(n, resamplings, size, replace, generator) for _ in range(draws)],
        dtype=torch.float64,
    )
    mean, variance = resamplings * chance, resamplings * chance * (1 - chance)
    assert abs(float(counts.mean()) - mean) <= K_SD * math.sqrt(variance / draws)
    assert abs(float(counts.var()) / variance - 1) <= K_SD * math.sqrt(2 / (draws - 1))
    x, y = _regression(n, 5)
    drawn = jackknife_plus_after_bootstrap(
        least_squares, x, y, resamplings=resamplings, random_count=True, rng=3, progress=False
    )
    expected = binomial_bag_count(n, resamplings, n, True, bnn.RNG(3).torch_generator("bag count"))
    assert len(drawn.models) == drawn.out_of_bag.shape[1] == expected
    with pytest.raises(ValueError, match="random_count drew .* raise resamplings"):
        jackknife_plus_after_bootstrap(  # each bag kept with chance 1 − 58/60
            least_squares, x, y, resamplings=2, replace=False, sample_size=58,
            random_count=True, rng=0, progress=False,
        )  # fmt: skip
    with pytest.raises(TypeError, match="random_count must be True or False"):
        jackknife_plus_after_bootstrap(least_squares, x, y, random_count=1, progress=False)  # type: ignore[arg-type]
