"""Metrics and predictive summaries against closed forms and Monte Carlo references."""

from __future__ import annotations

import math

import pytest
import torch

from bnn.evaluate import metrics
from bnn.likelihoods import ClassificationPrediction, RegressionPrediction


def _gaussian(mean: torch.Tensor, std: torch.Tensor) -> RegressionPrediction:
    return RegressionPrediction(
        samples=mean.unsqueeze(0), loc=mean.unsqueeze(0), scale=std.unsqueeze(0)
    )


def test_law_of_total_variance_matches_the_mixture_variance() -> None:
    generator = torch.Generator().manual_seed(0)
    loc = torch.randn(30, 5, generator=generator, dtype=torch.float64)
    scale = 0.1 + torch.rand(30, 5, generator=generator, dtype=torch.float64)
    prediction = RegressionPrediction(samples=loc, loc=loc, scale=scale)
    component = torch.randint(0, 30, (400_000,), generator=generator)
    draws = loc[component] + scale[component] * torch.randn(
        400_000, 5, generator=generator, dtype=torch.float64
    )
    se = draws.var(0) * math.sqrt(2 / 400_000) * 3  # mixtures are heavier-tailed than Gaussians
    assert ((prediction.variance - draws.var(0)).abs() < 5 * se).all()
    assert torch.allclose(prediction.epistemic, loc.var(0, unbiased=False))
    assert torch.allclose(prediction.aleatoric, (scale**2).mean(0))


def test_single_gaussian_interval_is_the_normal_quantile() -> None:
    prediction = _gaussian(
        torch.tensor([1.0, -2.0], dtype=torch.float64),
        torch.tensor([2.0, 0.5], dtype=torch.float64),
    )
    lower, upper = prediction.interval(0.95)
    z = 1.959963984540054
    torch.testing.assert_close(upper, torch.tensor([1 + 2 * z, -2 + 0.5 * z], dtype=torch.float64))
    torch.testing.assert_close(lower, torch.tensor([1 - 2 * z, -2 - 0.5 * z], dtype=torch.float64))


def test_noise_free_interval_is_the_sample_quantile() -> None:
    samples = torch.arange(1000, dtype=torch.float64).reshape(1000, 1)
    prediction = RegressionPrediction(samples=samples, loc=samples, scale=torch.zeros(()))
    lower, upper = prediction.interval(0.9)
    assert 45 <= float(lower) <= 55 and 944 <= float(upper) <= 955


@pytest.mark.parametrize("level", [0.5, 0.8, 0.95])
def test_coverage_of_an_exact_gaussian_predictive_is_nominal(level: float) -> None:
    generator = torch.Generator().manual_seed(1)
    n = 20_000
    mean = torch.randn(n, generator=generator, dtype=torch.float64)
    std = 0.5 + torch.rand(n, generator=generator, dtype=torch.float64)
    y = mean + std * torch.randn(n, generator=generator, dtype=torch.float64)
    coverage = metrics.interval_coverage(_gaussian(mean, std), y, level)
    assert abs(coverage - level) < 5 * math.sqrt(level * (1 - level) / n)
    overconfident = metrics.interval_coverage(_gaussian(mean, std / 2), y, level)
    assert level - overconfident > 10 * math.sqrt(level * (1 - level) / n)


def test_gaussian_crps_matches_closed_form_and_mixture_matches_monte_carlo() -> None:
    mean, std, y = torch.tensor([0.3]), torch.tensor([1.7]), torch.tensor([1.1])
    z = (y - mean) / std
    normal = torch.distributions.Normal(0.0, 1.0)
    closed = std * (
        z * (2 * normal.cdf(z) - 1) + 2 * normal.log_prob(z).exp() - 1 / math.sqrt(math.pi)
    )
    assert metrics.crps(_gaussian(mean.double(), std.double()), y.double()) == pytest.approx(
        float(closed), rel=1e-6
    )

    generator = torch.Generator().manual_seed(0)
    loc = torch.randn(8, 1, generator=generator, dtype=torch.float64)
    scale = 0.2 + torch.rand(8, 1, generator=generator, dtype=torch.float64)
    mixture = RegressionPrediction(samples=loc, loc=loc, scale=scale)
    n = 400_000
    first_idx = torch.randint(0, 8, (n,), generator=generator)
    second_idx = torch.randint(0, 8, (n,), generator=generator)
    a = loc[first_idx, 0] + scale[first_idx, 0] * torch.randn(
        n, generator=generator, dtype=torch.float64
    )
    b = loc[second_idx, 0] + scale[second_idx, 0] * torch.randn(
        n, generator=generator, dtype=torch.float64
    )
    energy = (a - 0.4).abs() - 0.5 * (a - b).abs()
    assert abs(
        metrics.crps(mixture, torch.tensor([0.4], dtype=torch.float64)) - float(energy.mean())
    ) < 5 * float(energy.std()) / math.sqrt(n)


def test_mixture_log_likelihood_is_log_mean_exp() -> None:
    loc = torch.tensor([[0.0], [2.0]], dtype=torch.float64)
    prediction = RegressionPrediction(samples=loc, loc=loc, scale=torch.ones_like(loc))
    y = torch.tensor([1.0], dtype=torch.float64)
    expected = math.log(math.exp(-0.5) / math.sqrt(2 * math.pi))
    assert float(prediction.log_likelihood(y)) == pytest.approx(expected)
    assert metrics.nll(prediction, y) == pytest.approx(-expected)


def _classifier(confidence: torch.Tensor) -> ClassificationPrediction:
    probs = torch.stack([confidence, 1 - confidence], -1).unsqueeze(0)
    return ClassificationPrediction(samples=probs.log(), class_probs=probs)


def test_ece_is_small_when_calibrated_and_large_when_overconfident() -> None:
    generator = torch.Generator().manual_seed(0)
    n = 50_000
    p_true = 0.5 + 0.5 * torch.rand(n, generator=generator, dtype=torch.float64)
    labels = (
        torch.rand(n, generator=generator, dtype=torch.float64) > p_true
    ).long()  # class 0 w.p. p_true
    calibrated = metrics.expected_calibration_error(_classifier(p_true), labels)
    sharpened = p_true + 0.9 * (1 - p_true)  # claims more confidence than the truth
    overconfident = metrics.expected_calibration_error(_classifier(sharpened), labels)
    assert calibrated < 0.01  # 15 bins of ~3300 points: per-bin sd of accuracy < 0.009, weighted
    assert overconfident > 0.05


def test_accuracy_and_brier_on_known_values() -> None:
    prediction = _classifier(torch.tensor([0.9, 0.2, 0.6], dtype=torch.float64))
    labels = torch.tensor([0, 0, 1])
    assert metrics.accuracy(prediction, labels) == pytest.approx(1 / 3)
    expected = ((0.1**2 + 0.1**2) + (0.8**2 + 0.8**2) + (0.6**2 + 0.6**2)) / 3
    assert metrics.brier_score(prediction, labels) == pytest.approx(expected)


def test_mutual_information_decomposition() -> None:
    probs = torch.tensor([[[0.9, 0.1]], [[0.1, 0.9]]], dtype=torch.float64)
    prediction = ClassificationPrediction(samples=probs.log(), class_probs=probs)
    assert float(prediction.entropy) == pytest.approx(math.log(2))
    h = -(0.9 * math.log(0.9) + 0.1 * math.log(0.1))
    assert float(prediction.expected_entropy) == pytest.approx(h)
    assert float(prediction.mutual_information) == pytest.approx(math.log(2) - h)
