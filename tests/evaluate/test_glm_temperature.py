"""Temperature scaling of a linearised (GLM) Laplace classifier keeps its closed form: the
scaled predictive is the GLM predictive of ``N(μ/T, Σ/T²)`` exactly, the temperature is the
optimum of that predictive's calibration NLL, and an over-confident model's factor is
recovered within its standard error."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

import bnn
from bnn.evaluate.recalibrate import TemperatureScaled, temperature_scale
from tests.evaluate.test_recalibrate import K_SD, W, _classification_data


def _glm_laplace(factor: float, x: Tensor, y: Tensor, link: str) -> bnn.Posterior:
    """A linear classifier with logits ``factor · x W`` and its last-layer KFAC Laplace."""
    layer = nn.Linear(2, 3, bias=False).double()
    with torch.no_grad():
        layer.weight.copy_(factor * W.T)
    posterior, _ = bnn.infer.laplace(
        layer,
        (x, y),
        likelihood=bnn.Categorical(),
        prior_precision=1.0,
        predictive="glm",
        link=link,
        progress=False,
    )
    return posterior


def _probit_probs(posterior: bnn.Posterior, x: Tensor, temperature: float) -> Tensor:
    mean, covariance = posterior.functional_moments(x)  # type: ignore[attr-defined]
    variance = covariance.diagonal(dim1=-2, dim2=-1) / temperature**2
    return (mean / temperature / torch.sqrt(1 + math.pi / 8 * variance)).softmax(-1)


def test_the_scaled_predictive_is_the_glm_predictive_of_the_scaled_logits() -> None:
    x, y = _classification_data(300, 11)
    posterior = _glm_laplace(3.0, x, y, "probit")
    scaled = temperature_scale(posterior, x, y, rng=0)
    assert isinstance(scaled, TemperatureScaled) and scaled.temperature > 1.5
    x_test, _ = _classification_data(50, 12)
    prediction = bnn.predict_with_uncertainty(scaled, x_test, likelihood=bnn.Categorical(), rng=0)
    expected = _probit_probs(posterior, x_test, scaled.temperature)
    torch.testing.assert_close(prediction.probs, expected, rtol=0, atol=1e-12)
    unscaled = bnn.predict_with_uncertainty(posterior, x_test, likelihood=bnn.Categorical())
    torch.testing.assert_close(unscaled.probs, _probit_probs(posterior, x_test, 1.0))


@pytest.mark.parametrize("link", ["probit", "mc"])
def test_the_temperature_is_the_optimum_of_the_glm_calibration_nll(link: str) -> None:
    x, y = _classification_data(400, 13)
    posterior = _glm_laplace(2.5, x, y, link)
    scaled = temperature_scale(posterior, x, y, num_samples=64, rng=1)
    assert scaled.nll_after < scaled.nll_before
    if link == "probit":  # the closed form, at T and on either side of it
        t = torch.tensor(math.log(scaled.temperature), dtype=torch.float64, requires_grad=True)
        mean, covariance = posterior.functional_moments(x)  # type: ignore[attr-defined]
        variance = covariance.diagonal(dim1=-2, dim2=-1).detach()
        scale = torch.exp(-t)
        logits = mean.detach() * scale / torch.sqrt(1 + math.pi / 8 * variance * scale**2)
        (grad,) = torch.autograd.grad(F.cross_entropy(logits, y), t)
        assert abs(float(grad)) < 1e-7
        assert abs(scaled.nll_after - float(F.cross_entropy(logits, y).detach())) < 1e-12


def test_an_over_confident_glm_classifier_gets_its_factor_back() -> None:
    # logits 3× the true ones, a prior so tight the linearised variance is negligible: T → 3
    c, n = 3.0, 4000
    x, y = _classification_data(n, 0)
    layer = nn.Linear(2, 3, bias=False).double()
    with torch.no_grad():
        layer.weight.copy_(c * W.T)
    posterior, _ = bnn.infer.laplace(
        layer, (x, y), likelihood=bnn.Categorical(), prior_precision=1e8, predictive="glm",
        progress=False,
    )  # fmt: skip
    scaled = temperature_scale(posterior, x, y, rng=0)
    t = torch.tensor(math.log(scaled.temperature), dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(
        F.cross_entropy(c * x @ W * torch.exp(-t), y), t, create_graph=True
    )
    (curvature,) = torch.autograd.grad(grad, t)
    se = 1.0 / math.sqrt(n * float(curvature))
    assert abs(math.log(scaled.temperature) - math.log(c)) < K_SD * se
