"""CV+ and jackknife+ (Barber et al. 2021): coverage in simulation against the nominal level
(the theory guarantees ``1 − 2α`` for any model and about ``1 − α`` for a stable one like least
squares), the classification sets likewise, and the same result on any executor."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

import bnn
from bnn.evaluate.recalibrate import cv_plus, jackknife_plus
from bnn.likelihoods import RegressionPrediction
from bnn.parallel.executors import local_pool
from tests.evaluate.test_recalibrate import K_SD, _coverage_sd


def least_squares(x: Tensor, y: Tensor, rng: bnn.RNG) -> bnn.posterior.PointEstimate:  # noqa: ARG001
    """A linear model fitted in closed form (a stable learner: CV+ covers about 1 − α)."""
    design = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], -1)
    solution = torch.linalg.lstsq(design, y).solution
    layer = nn.Linear(x.shape[-1], 1).to(x.dtype)
    with torch.no_grad():
        layer.weight.copy_(solution[:-1].T)
        layer.bias.copy_(solution[-1])
    return bnn.posterior.PointEstimate(layer)


def gradient_descent(x: Tensor, y: Tensor, rng: bnn.RNG) -> bnn.posterior.PointEstimate:
    """A linear model fitted by 200 full-batch gradient steps from a seeded start (plain torch
    arithmetic: the same bits in any process, unlike LAPACK's least squares)."""
    with rng.stream("init"):
        layer = nn.Linear(x.shape[-1], 1).to(x.dtype)
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.1)
    for _ in range(200):
        optimizer.zero_grad()
        ((layer(x) - y) ** 2).mean().backward()
        optimizer.step()
    return bnn.posterior.PointEstimate(layer)


def _regression(n: int, seed: int) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 2, generator=g, dtype=torch.float64)
    return x, x @ torch.tensor([[2.0], [-1.0]]).double() + 0.5 * torch.randn(n, 1, generator=g)


@pytest.mark.parametrize("folds", [5, None])  # None: the jackknife+
def test_cv_plus_and_jackknife_plus_cover_about_the_nominal_level(folds: int | None) -> None:
    n, m, repetitions, level = 39, 100, 200, 0.9
    coverage = []
    for r in range(repetitions):
        x, y = _regression(n, 100 + 2 * r)
        x_test, y_test = _regression(m, 101 + 2 * r)
        options = {"level": level, "rng": r, "progress": False}
        cross = (
            jackknife_plus(least_squares, x, y, **options)
            if folds is None
            else cv_plus(least_squares, x, y, folds=folds, **options)
        )
        lower, upper = cross.interval(x_test)
        coverage.append(float(((y_test >= lower) & (y_test <= upper)).double().mean()))
    mean = sum(coverage) / repetitions
    _, sd = _coverage_sd(n, level, m, repetitions)
    print(f"folds={folds}: coverage {mean:.4f} (nominal {level}, sd {sd:.4f})")
    assert mean >= level - K_SD * sd  # the 1 − 2α guarantee, and about 1 − α here
    assert mean <= level + 0.03 + K_SD * sd  # not wider than a held-out split would give


def _noise_scale(x: Tensor) -> Tensor:
    return 0.1 + x.abs()


def _heteroscedastic(n: int, seed: int) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = 4 * torch.rand(n, 1, generator=g, dtype=torch.float64) - 2
    return x, 2 * x + _noise_scale(x) * torch.randn(n, 1, generator=g, dtype=torch.float64)


class _ScaledLine:
    """Least squares with a noise std of known shape ``c (0.1 + |x|)``, ``c`` fitted."""

    def __init__(self, x: Tensor, y: Tensor, rng: bnn.RNG) -> None:  # noqa: ARG002
        design = torch.cat([x, torch.ones_like(x)], -1)
        self.solution = torch.linalg.lstsq(design, y).solution
        residuals = (y - design @ self.solution) / _noise_scale(x)
        self.c = residuals.pow(2).mean().sqrt()

    def predict(self, x: Tensor) -> RegressionPrediction:
        mean = (torch.cat([x, torch.ones_like(x)], -1) @ self.solution)[None]
        return RegressionPrediction(mean, mean, (self.c * _noise_scale(x))[None])


def test_normalized_cv_plus_covers_the_level_where_the_noise_is_small_and_where_it_is_large() -> (
    None
):
    n, m, repetitions, level = 59, 200, 200, 0.9
    covered = {"absolute": [], "normalized": []}
    quiet, loud = [], []
    for r in range(repetitions):
        x, y = _heteroscedastic(n, 5000 + 2 * r)
        x_test, y_test = _heteroscedastic(m, 5001 + 2 * r)
        quiet.append(x_test.abs().squeeze(-1) < 0.5)
        loud.append(x_test.abs().squeeze(-1) > 1.5)
        for method, inside in covered.items():
            cross = cv_plus(
                _ScaledLine, x, y, folds=5, level=level, method=method, rng=r, progress=False
            )
            lower, upper = cross.interval(x_test)
            inside.append(((y_test >= lower) & (y_test <= upper)).squeeze(-1))
    _, sd = _coverage_sd(n, level, m, repetitions)
    for method, inside in covered.items():
        every = torch.cat(inside).double()
        small, large = every[torch.cat(quiet)].mean(), every[torch.cat(loud)].mean()
        print(f"{method}: coverage {every.mean():.4f}, |x| < 0.5: {small:.4f}, > 1.5: {large:.4f}")
        assert level - K_SD * sd <= float(every.mean()) <= level + 0.03 + K_SD * sd
        # Conditional coverage has no guarantee; what separates the two methods is the gap
        # between the quiet and the loud quarter of x (measured 0.235 and 0.037: the line's
        # own error weighs more where the noise is small).
        if method == "normalized":  # widths follow the noise
            assert abs(float(small) - float(large)) < 0.06
        else:  # one width for all: too wide where it is quiet, too narrow where it is loud
            assert float(small) - float(large) > 0.2


def _blobs(n: int, seed: int) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=g)
    centres = torch.tensor([[-1.0, 0.0], [1.0, 0.0], [0.0, 1.5]], dtype=torch.float64)
    return centres[y] + torch.randn(n, 2, generator=g, dtype=torch.float64), y


def nearest_centre(x: Tensor, y: Tensor, rng: bnn.RNG) -> bnn.posterior.PointEstimate:  # noqa: ARG001
    """Class probabilities from the distances to the class means (a quick stable classifier)."""
    centres = torch.stack([x[y == k].mean(0) for k in range(3)])

    class Distances(nn.Module):
        def forward(self, inputs: Tensor) -> Tensor:
            return -0.5 * torch.cdist(inputs, centres) ** 2

    return bnn.posterior.PointEstimate(Distances())


def test_cv_plus_sets_cover_about_the_nominal_level() -> None:
    n, m, repetitions, level = 59, 100, 100, 0.9
    coverage, sizes = [], []
    for r in range(repetitions):
        x, y = _blobs(n, 3000 + 2 * r)
        x_test, y_test = _blobs(m, 3001 + 2 * r)
        cross = cv_plus(
            nearest_centre,
            x,
            y,
            folds=5,
            level=level,
            likelihood=bnn.Categorical(),
            rng=r,
            progress=False,
        )
        sets = cross.prediction_set(x_test, rng=r)
        coverage.append(float(sets[torch.arange(m), y_test].double().mean()))
        sizes.append(float(sets.sum(-1).double().mean()))
    mean = sum(coverage) / repetitions
    _, sd = _coverage_sd(n, level, m, repetitions)
    print(f"CV+ sets: coverage {mean:.4f}, mean size {sum(sizes) / repetitions:.2f}")
    assert level - K_SD * sd <= mean <= level + 0.03 + K_SD * sd


def test_the_same_result_serially_and_on_an_executor() -> None:
    x, y = _regression(30, 7)
    options = {"folds": 3, "rng": 0, "threads_per_job": 1, "progress": False}
    serial = cv_plus(gradient_descent, x, y, **options)
    with local_pool(2) as pool:
        pooled = cv_plus(gradient_descent, x, y, executor=pool, **options)
    assert torch.equal(serial.fold_of, pooled.fold_of)
    assert torch.equal(serial.scores, pooled.scores)
    torch.testing.assert_close(serial.interval(x[:5]), pooled.interval(x[:5]), rtol=0, atol=0)
    other = cv_plus(gradient_descent, x, y, folds=3, rng=1, progress=False)
    assert not torch.equal(serial.fold_of, other.fold_of)  # another seed, other folds


def test_bad_input_is_refused_before_training() -> None:
    x, y = _regression(20, 8)

    def never(x: Tensor, y: Tensor, rng: bnn.RNG) -> None:  # noqa: ARG001
        raise AssertionError("trained although the input was bad")

    with pytest.raises(ValueError, match="folds must be an int in"):
        cv_plus(never, x, y, folds=1)
    with pytest.raises(ValueError, match="folds must be an int in"):
        cv_plus(never, x, y, folds=21)
    with pytest.raises(ValueError, match="needs at least 99 points"):
        cv_plus(never, x, y, level=0.99)
    with pytest.raises(ValueError, match="rows"):
        cv_plus(never, x, y[:10])
    cross = cv_plus(least_squares, x, y, folds=4, rng=0, progress=False)
    with pytest.raises(TypeError, match="prediction sets are for classifiers"):
        cross.prediction_set(x)


def test_normalized_scores_need_a_positive_std_and_a_known_method() -> None:
    x, y = _regression(30, 3)
    with pytest.raises(ValueError, match="predictive std, which is 0"):
        cv_plus(least_squares, x, y, folds=3, method="normalized", rng=0, progress=False)
    with pytest.raises(ValueError, match="'absolute' or 'normalized'"):
        cv_plus(least_squares, x, y, folds=3, method="cqr", rng=0, progress=False)
