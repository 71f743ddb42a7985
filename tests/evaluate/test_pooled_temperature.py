"""Pool-then-calibrate temperature scaling against its closed form and a simulation.

The recovery test draws labels from a tempered mixture ``p̄^{1/T₀}`` and fits ``T``: the
maximum-likelihood estimate of ``log T`` has the standard error ``1/√(n I)`` (``I`` the
observed information of the mean NLL at the optimum); the test allows ``K_SD = 4.5`` of them.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

import bnn
from bnn.evaluate.recalibrate import (
    PooledTemperatureScaled,
    pooled_temperature_scale,
    temperature_scale,
)
from bnn.posterior import as_posterior

K_SD = 4.5
W = torch.tensor([[2.0, -1.0, 0.0], [0.5, 1.5, -2.0]], dtype=torch.float64)


class Fixed:
    """A deterministic posterior: fixed function samples ``fn(x)`` ``[S, N, ...]``."""

    def __init__(self, fn) -> None:  # type: ignore[no-untyped-def]
        self.fn = fn

    def sample_functions(self, x, num_samples, *, rng=None, memory_budget=None):  # type: ignore[no-untyped-def]  # noqa: ARG002
        return self.fn(x)[:num_samples]


def _mixture(n: int, seed: int) -> tuple[Tensor, Tensor]:
    """Inputs ``[n, 2]`` and 8 disagreeing logit samples ``[8, n, 3]`` at them."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 2, generator=g, dtype=torch.float64)
    noise = 2.0 * torch.randn(8, n, 3, generator=g, dtype=torch.float64)
    return x, 2.0 * (x @ W).unsqueeze(0) + noise


def _tempered_labels(samples: Tensor, temperature: float, seed: int) -> Tensor:
    pooled = samples.softmax(-1).mean(0)
    truth = (pooled.log() / temperature).softmax(-1)
    return torch.multinomial(truth, 1, generator=torch.Generator().manual_seed(seed)).squeeze(-1)


def test_pooled_temperature_recovers_the_mixtures_temperature_within_its_standard_error() -> None:
    true_temperature, n = 0.6, 4000  # the averaged mixture is under-confident
    x, samples = _mixture(n, 0)
    y = _tempered_labels(samples, true_temperature, 1)
    scaled = pooled_temperature_scale(Fixed(lambda _: samples), x, y, num_samples=8, rng=0)
    assert isinstance(scaled, PooledTemperatureScaled) and isinstance(scaled, bnn.Posterior)
    log_pooled = samples.softmax(-1).mean(0).log()
    t = torch.tensor(math.log(scaled.temperature), dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(
        F.cross_entropy(log_pooled * torch.exp(-t), y), t, create_graph=True
    )
    (curvature,) = torch.autograd.grad(grad, t)
    assert abs(float(grad.detach())) < 1e-7  # the fit is at the optimum
    se = 1.0 / math.sqrt(n * float(curvature))
    assert abs(math.log(scaled.temperature) - math.log(true_temperature)) < K_SD * se
    assert scaled.nll_after < scaled.nll_before
    # a temperature on each sample fits this mixture worse than one on the pool
    per_sample = temperature_scale(Fixed(lambda _: samples), x, y, num_samples=8, rng=0)
    assert scaled.nll_after < per_sample.nll_after


def test_the_prediction_is_the_tempered_pool_through_every_door() -> None:
    x, samples = _mixture(300, 2)
    y = _tempered_labels(samples, 0.7, 3)
    scaled = pooled_temperature_scale(Fixed(lambda _: samples), x, y, num_samples=8, rng=0)
    expected = (samples.softmax(-1).mean(0).log() / scaled.temperature).softmax(-1)
    plain = bnn.predict_with_uncertainty(scaled, x, num_samples=8)
    named = bnn.predict_with_uncertainty(scaled, x, likelihood=bnn.Categorical(), num_samples=8)
    assert torch.allclose(plain.probs, expected, atol=1e-12)
    assert torch.equal(plain.probs, named.probs)
    assert plain.class_probs.shape == (1, 300, 3)
    assert torch.equal(plain.mutual_information, torch.zeros(300, dtype=torch.float64))
    drawn = scaled.sample_functions(x, 8)
    assert drawn.shape == (8, 300, 3)
    assert torch.allclose(bnn.Categorical().predict(drawn).probs, expected, atol=1e-12)
    with pytest.raises(ValueError, match="likelihood|Gaussian"):
        bnn.predict_with_uncertainty(scaled, x, likelihood=bnn.Gaussian(1.0), num_samples=8)


def test_with_one_sample_pooling_first_is_the_same_model_as_a_temperature_per_sample() -> None:
    x, samples = _mixture(500, 4)
    point = samples[:1]
    y = _tempered_labels(point, 1.8, 5)
    pooled = pooled_temperature_scale(Fixed(lambda _: point), x, y, num_samples=1, rng=0)
    per_sample = temperature_scale(Fixed(lambda _: point), x, y, num_samples=1, rng=0)
    assert pooled.temperature == pytest.approx(per_sample.temperature, rel=1e-6)
    a = bnn.predict_with_uncertainty(pooled, x, num_samples=1).probs
    b = bnn.predict_with_uncertainty(per_sample, x, likelihood=bnn.Categorical(), num_samples=1)
    assert torch.allclose(a, b.probs, atol=1e-9)


def test_a_bernoulli_pool_is_tempered_on_its_logit() -> None:
    g = torch.Generator().manual_seed(6)
    x = torch.randn(400, 1, generator=g, dtype=torch.float64)
    logits = 3.0 * x.T + torch.randn(6, 400, generator=g, dtype=torch.float64)  # [6, 400]
    y = torch.bernoulli(torch.sigmoid(logits.mean(0)), generator=g)
    scaled = pooled_temperature_scale(
        Fixed(lambda _: logits), x, y, likelihood=bnn.Bernoulli(), num_samples=6, rng=0
    )
    pooled = torch.sigmoid(logits).mean(0)
    expected = torch.sigmoid(torch.logit(pooled) / scaled.temperature)
    prediction = bnn.predict_with_uncertainty(scaled, x, num_samples=6)
    assert torch.allclose(prediction.probs, expected, atol=1e-12)
    assert scaled.sample_functions(x, 6).shape == (6, 400)


def test_same_seed_same_temperature_another_seed_another() -> None:
    torch.manual_seed(0)
    layers = [torch.nn.Linear(2, 16), torch.nn.ReLU(), torch.nn.Dropout(0.3)]
    network = as_posterior(bnn.nn.MCDropout(torch.nn.Sequential(*layers, torch.nn.Linear(16, 3))))
    x = 3.0 * torch.randn(200, 2)
    predictive = bnn.predict_with_uncertainty(network, x, likelihood=bnn.Categorical(), rng=99)
    probs = predictive.probs
    y = torch.multinomial(probs, 1).squeeze(-1)  # labels the model predicts: T near 1
    first = pooled_temperature_scale(network, x, y, num_samples=16, rng=0).temperature
    again = pooled_temperature_scale(network, x, y, num_samples=16, rng=0).temperature
    other = pooled_temperature_scale(network, x, y, num_samples=16, rng=1).temperature
    assert first == again and first != other
    assert 0.1 < first < 10.0


def test_bad_input_is_refused_with_what_to_do() -> None:
    x, samples = _mixture(50, 7)
    y = _tempered_labels(samples, 1.0, 8)
    model = Fixed(lambda _: samples)
    with pytest.raises(TypeError, match="std_scale"):
        pooled_temperature_scale(model, x, y.double(), likelihood=bnn.Gaussian(1.0))
    with pytest.raises(ValueError, match="positive"):
        PooledTemperatureScaled(model, 0.0, bnn.Categorical())  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="Categorical"):
        PooledTemperatureScaled(model, 1.0, bnn.Gaussian(1.0))  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        pooled_temperature_scale(model, x, y[:-1], num_samples=8)
