"""Isotonic recalibration of regression CDFs (Kuleshov et al. 2018): the recalibrated intervals
cover, and every reading of the prediction (CDF, quantiles, density, mean, variance, CRPS) is
that of one distribution ``G = R ∘ F``."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

import bnn
from bnn.evaluate.recalibrate import (
    IsotonicRegressionPrediction,
    isotonic_recalibrate,
)
from bnn.likelihoods import RegressionPrediction


class ConstantPosterior:
    """Predicts ``f(x) = x[:, :1]``: with ``bnn.Gaussian(σ)`` the predictive ``N(x, σ²)``."""

    def sample_functions(
        self, x: Tensor, num_samples: int, *, rng: object = None, memory_budget: object = None
    ) -> Tensor:
        del rng, memory_budget
        return x[:, :1].unsqueeze(0).expand(num_samples, -1, -1)


def _miscalibrated(n: int, seed: int) -> tuple[Tensor, Tensor]:
    """Inputs at 0 with targets ``N(0.5, 2²)``: the model's ``N(0, 1)`` is too narrow and biased."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.zeros(n, 1, dtype=torch.float64)
    return x, 0.5 + 2.0 * torch.randn(n, 1, dtype=torch.float64, generator=generator)


def _fitted(n_cal: int = 2000, seed: int = 0) -> bnn.evaluate.recalibrate.IsotonicRecalibrated:
    x_cal, y_cal = _miscalibrated(n_cal, seed)
    return isotonic_recalibrate(
        ConstantPosterior(), x_cal, y_cal, likelihood=bnn.Gaussian(1.0), num_samples=1
    )


def test_recalibrated_intervals_cover_at_their_level_and_the_nll_improves() -> None:
    recalibrated = _fitted()
    x_test, y_test = _miscalibrated(20_000, seed=1)
    base = bnn.predict_with_uncertainty(
        ConstantPosterior(), x_test, likelihood=bnn.Gaussian(1.0), num_samples=1
    )
    prediction = bnn.predict_with_uncertainty(recalibrated, x_test, num_samples=1)
    assert isinstance(prediction, IsotonicRegressionPrediction)
    for level in (0.5, 0.8, 0.9):
        # the fitted interval's coverage varies with the calibration set, sd ≈ sqrt(l(1-l)/n)
        # (0.011 at n = 2,000, 50 %), and the test estimate by sqrt(l(1-l)/20,000) ≈ 0.0035
        sd = math.sqrt(level * (1 - level) * (1 / 2000 + 1 / 20_000))
        covered = bnn.evaluate.metrics.interval_coverage(prediction, y_test, level)
        assert abs(covered - level) < 4 * sd, (level, covered)
    assert bnn.evaluate.metrics.interval_coverage(base, y_test, 0.9) < 0.6  # before: 0.575
    assert recalibrated.nll_after < recalibrated.nll_before
    assert bnn.evaluate.metrics.nll(prediction, y_test) < bnn.evaluate.metrics.nll(base, y_test)
    # the true N(0.5, 2²) inside the outermost knots: the median moves to 0.5
    assert float(prediction.quantile(0.5)[0]) == pytest.approx(
        0.5, abs=4 * 2 * 1.25 / math.sqrt(2000)
    )


def _one_input_prediction() -> IsotonicRegressionPrediction:
    recalibrated = _fitted(n_cal=300)
    base = RegressionPrediction(  # a two-component mixture at one input
        samples=torch.tensor([[[0.0]], [[1.5]]], dtype=torch.float64),
        loc=torch.tensor([[[0.0]], [[1.5]]], dtype=torch.float64),
        scale=torch.tensor([[[1.0]], [[0.5]]], dtype=torch.float64),
    )
    return IsotonicRegressionPrediction(
        samples=base.samples,
        loc=base.loc,
        scale=base.scale,
        knots=recalibrated.knots,
        levels=recalibrated.levels,
    )


def _at(prediction: IsotonicRegressionPrediction, count: int) -> IsotonicRegressionPrediction:
    """The same one-input predictive repeated at ``count`` inputs."""
    return IsotonicRegressionPrediction(
        samples=prediction.samples.expand(-1, count, -1),
        loc=prediction.loc.expand(-1, count, -1),
        scale=prediction.scale.expand(-1, count, -1),
        knots=prediction.knots,
        levels=prediction.levels,
    )


def test_density_cdf_quantiles_and_moments_are_one_distribution() -> None:
    prediction = _one_input_prediction()
    # the density is smooth between the knots' images t_k = F⁻¹(a_k) and jumps at them:
    # integrate each segment by the trapezoid rule (20,001 points, 1e-9 inside its ends, so
    # that no end takes the next segment's density; error ~ h²: 2e-8 here, 1.6e-6 with
    # 2,001 points)
    inner = [float(prediction._base.quantile(float(a))[0, 0]) for a in prediction.knots[1:-1]]
    edges = [-15.0, *inner, 15.0]
    grid = torch.cat(
        [
            torch.linspace(a + 1e-9, b - 1e-9, 20_001, dtype=torch.float64)
            for a, b in zip(edges, edges[1:], strict=False)
        ]
    )
    density = _at(prediction, len(grid)).log_likelihood(grid[:, None]).exp()

    def integral(values: Tensor) -> float:
        pieces = zip(values.split(20_001), grid.split(20_001), strict=True)
        return sum(float(torch.trapezoid(v, g)) for v, g in pieces)

    assert integral(density) == pytest.approx(1.0, abs=1e-7)
    mean = integral(grid * density)
    second = integral(grid**2 * density)
    assert float(prediction.mean[0, 0]) == pytest.approx(mean, abs=1e-7)
    assert float(prediction.variance[0, 0]) == pytest.approx(second - mean**2, abs=1e-6)
    # the density is the derivative of the CDF (central differences, between the knots)
    points = torch.tensor(
        [(a + b) / 2 for a, b in zip(edges, edges[1:], strict=False)], dtype=torch.float64
    )
    h = 1e-5
    repeated = _at(prediction, len(points))
    slope = (repeated.cdf(points[:, None] + h) - repeated.cdf(points[:, None] - h)) / (2 * h)
    torch.testing.assert_close(
        repeated.log_likelihood(points[:, None]).exp(), slope[:, 0], rtol=1e-6, atol=1e-12
    )
    for q in (0.05, 0.3, 0.5, 0.9, 0.99):
        assert float(prediction.cdf(prediction.quantile(q))[0, 0]) == pytest.approx(q, abs=1e-9)
    # CRPS = ∫ (G(t) − 1{t ≥ y})² dt, against the same segment-wise quadrature
    cdf = _at(prediction, len(grid)).cdf(grid[:, None])[:, 0]
    for target in (-1.0, 0.7, 3.0):
        exact = integral((cdf - (grid >= target).double()) ** 2)
        crps = float(prediction.crps(torch.tensor([[target]], dtype=torch.float64))[0, 0])
        assert crps == pytest.approx(exact, rel=2e-3)
    parts = prediction.epistemic + prediction.aleatoric
    torch.testing.assert_close(parts, prediction.variance)


def test_metrics_calibration_and_rescaling_read_the_recalibrated_distribution() -> None:
    recalibrated = _fitted(n_cal=500)
    x_test, y_test = _miscalibrated(400, seed=2)
    prediction = bnn.predict_with_uncertainty(recalibrated, x_test)  # carries its Gaussian
    assert isinstance(prediction, IsotonicRegressionPrediction)
    assert bnn.evaluate.metrics.crps(prediction, y_test) == pytest.approx(
        float(prediction.crps(y_test).mean())
    )
    report = bnn.calibration(prediction, y_test)
    assert report.scores["nll"] == pytest.approx(bnn.evaluate.metrics.nll(prediction, y_test))
    assert report.scores["crps"] == pytest.approx(bnn.evaluate.metrics.crps(prediction, y_test))
    scaled = prediction.rescale(10.0, 3.0)  # y -> 10 + 3 y
    assert isinstance(scaled, IsotonicRegressionPrediction)
    torch.testing.assert_close(scaled.mean, 10 + 3 * prediction.mean)
    torch.testing.assert_close(scaled.std, 3 * prediction.std)
    torch.testing.assert_close(scaled.cdf(10 + 3 * y_test), prediction.cdf(y_test))


def test_bad_input_is_refused() -> None:
    x_cal, y_cal = _miscalibrated(50, 0)
    with pytest.raises(ValueError, match="num_knots"):
        isotonic_recalibrate(
            ConstantPosterior(), x_cal, y_cal, likelihood=bnn.Gaussian(1.0), num_knots=0
        )
    with pytest.raises(TypeError, match="regression"):
        isotonic_recalibrate(
            ConstantPosterior(), x_cal, y_cal[:, 0].long().clamp(0, 1), likelihood=bnn.Bernoulli()
        )
    with pytest.raises(ValueError):
        isotonic_recalibrate(ConstantPosterior(), x_cal, y_cal[:10], likelihood=bnn.Gaussian(1.0))


def test_float32_predictions_whose_pit_values_pile_up_at_one_keep_finite_densities() -> None:
    # a far too narrow float32 model: the targets lie ~10 stds above it, beyond even float64's
    # upper tail (PITs of exactly 1): warned about, the knots kept inside (0, 1), R float64
    generator = torch.Generator().manual_seed(3)
    x = torch.zeros(400, 1)
    y = 3 + torch.randn(400, 1, generator=generator)
    with pytest.warns(UserWarning, match="PIT of exactly 0 or 1"):
        recalibrated = isotonic_recalibrate(
            ConstantPosterior(), x[:200], y[:200], likelihood=bnn.Gaussian(0.3), num_samples=1
        )
    prediction = bnn.predict_with_uncertainty(recalibrated, x[200:], num_samples=1)
    assert prediction.loc.dtype == torch.float32
    assert bool(torch.isfinite(prediction.log_likelihood(y[200:])).all())
    assert math.isfinite(recalibrated.nll_after)


def test_small_calibration_sets_cover_at_the_nominal_level_on_average() -> None:
    # A calibrated N(0, 1) predictive recalibrated on n = 19 draws: with the knots at the PIT
    # order statistics (levels k / (n + 1)), the PIT of each interval end has expectation equal
    # to its level, so the interval's true coverage averages exactly 0.9 over calibration sets.
    # (Interpolating quantiles — torch.quantile's — would average about 0.81 here.)
    generator = torch.Generator().manual_seed(4)
    repetitions, n = 400, 19
    x = torch.zeros(n, 1, dtype=torch.float64)
    covered = []
    for _ in range(repetitions):
        y = torch.randn(n, 1, dtype=torch.float64, generator=generator)
        recalibrated = isotonic_recalibrate(
            ConstantPosterior(), x, y, likelihood=bnn.Gaussian(1.0), num_samples=1
        )
        prediction = bnn.predict_with_uncertainty(recalibrated, x[:1], num_samples=1)
        lower, upper = prediction.interval(0.9)
        normal = torch.distributions.Normal(0.0, 1.0)
        covered.append(float(normal.cdf(upper) - normal.cdf(lower)))
    values = torch.tensor(covered)
    # Monte Carlo error of the mean over 400 calibration sets (sd of one ≈ 0.065)
    sd = float(values.std()) / math.sqrt(repetitions)
    assert abs(float(values.mean()) - 0.9) < 4 * sd, (float(values.mean()), sd)
