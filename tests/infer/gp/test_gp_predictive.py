"""The GP's closed-form predictive: GPyTorch's exact predictive per input, without ``N × N``.

``bnn.predict_with_uncertainty`` on a `GPPosterior` reads the mean and the diagonal of the
posterior covariance of ``f`` (regression: the Gaussian ``N(μ, σ_f² + σ²)`` per input;
classification: draws of each input's ``f`` through the link). Skipped without GPyTorch.
"""

from __future__ import annotations

import math
import warnings

import numpy
import pytest
import torch
from torch import Tensor, nn

import bnn

with warnings.catch_warnings():  # linear_operator scripts a helper with torch.jit on import
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    gpytorch = pytest.importorskip("gpytorch")

from bnn.infer.gp._models import _exact_linear_algebra  # noqa: E402
from bnn.infer.gp.gp import GPPosterior, gp  # noqa: E402


def _data(n: int, seed: int = 0, dtype: torch.dtype = torch.float64) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 2, dtype=dtype, generator=g) * 4 - 2
    y = torch.sin(2 * x[:, 0]) * x[:, 1] + 0.1 * torch.randn(n, dtype=dtype, generator=g)
    return x, y


def _gpytorch_predictive(posterior: GPPosterior, x: Tensor) -> tuple[Tensor, Tensor]:
    """Mean and variance of GPyTorch's own ``likelihood(model(x))`` (dense, float64)."""
    with torch.no_grad(), _exact_linear_algebra():
        distribution = posterior.gp_likelihood(posterior.gp_model(x))
        return distribution.mean, distribution.variance


def _trained_exact(features: nn.Module | None = None) -> tuple[GPPosterior, Tensor, Tensor]:
    x, y = _data(200)
    posterior, _ = gp(
        features,
        (x, y),
        likelihood=bnn.Gaussian(0.3, learn_std=True),
        method="exact",
        epochs=30,
        rng=0,
        progress=False,
    )
    x_test, y_test = _data(300, seed=1)
    return posterior, x_test, y_test


def test_exact_prediction_is_gpytorchs_predictive_input_by_input() -> None:
    posterior, x_test, y_test = _trained_exact()
    prediction = bnn.predict_with_uncertainty(posterior, x_test, rng=0)
    mean, variance = _gpytorch_predictive(posterior, x_test)
    # float64 throughout: the two computations (GPyTorch's cholesky_solve against one
    # triangular solve here) differ only by rounding, ~1e-16 · cond(K + σ²I) ≈ 1e-12
    torch.testing.assert_close(prediction.mean[:, 0], mean, rtol=0, atol=1e-9)
    torch.testing.assert_close(prediction.variance[:, 0], variance, rtol=0, atol=1e-9)
    expected_nll = -torch.distributions.Normal(mean, variance.sqrt()).log_prob(y_test).mean()
    # the carried bnn.Gaussian stores log σ in float32 (relative rounding 6e-8 of σ²), which
    # moves the mean NLL by ≲ 1e-7; the bar is 1e-6
    assert float(bnn.evaluate.metrics.nll(prediction, y_test)) == pytest.approx(
        float(expected_nll), abs=1e-7
    )
    noise = float(posterior.predictive_likelihood.std) ** 2  # type: ignore[attr-defined]
    torch.testing.assert_close(prediction.aleatoric, torch.full_like(prediction.aleatoric, noise))
    _, covariance = posterior.functional_moments(x_test[:20])
    diagonal = covariance.diagonal()
    torch.testing.assert_close(prediction.epistemic[:20, 0], diagonal, atol=1e-9, rtol=0)


def test_prediction_in_blocks_of_inputs_matches_one_block_and_never_builds_n_by_n() -> None:
    posterior, x_test, _ = _trained_exact()
    whole = bnn.predict_with_uncertainty(posterior, x_test, rng=0)
    # 200 training points · 8 bytes · 4 copies: a 20 kB budget holds blocks of 3 test inputs
    blocks = bnn.predict_with_uncertainty(posterior, x_test, rng=0, memory_budget=20_000)
    torch.testing.assert_close(blocks.mean, whole.mean, rtol=0, atol=1e-12)
    torch.testing.assert_close(blocks.std, whole.std, rtol=0, atol=1e-12)
    # the samples the prediction carries are per-input draws from the stated marginals
    assert whole.samples.shape == (100, 300, 1)
    z = (whole.samples - whole.mean) / whole.epistemic.sqrt()
    assert abs(float(z.mean())) < 4 / math.sqrt(z.numel())
    assert abs(float(z.var()) - 1) < 4 * math.sqrt(2 / z.numel())
    again = bnn.predict_with_uncertainty(posterior, x_test, rng=0)
    assert torch.equal(again.samples, whole.samples)


def test_a_deep_kernel_and_float32_data_predict_the_same_closed_form() -> None:
    with bnn.RNG(0).stream("init"):
        features = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 2)).double()
    posterior, x_test, _ = _trained_exact(features)
    prediction = bnn.predict_with_uncertainty(posterior, x_test, rng=0)
    mean, variance = _gpytorch_predictive(posterior, x_test)
    torch.testing.assert_close(prediction.mean[:, 0], mean, rtol=0, atol=1e-9)
    torch.testing.assert_close(prediction.variance[:, 0], variance, rtol=0, atol=1e-9)

    x, y = _data(200, dtype=torch.float32)
    single, _ = gp(
        None, (x, y), likelihood=bnn.Gaussian(0.3), method="exact", epochs=0, progress=False
    )
    x_test32 = x_test.float()
    prediction32 = bnn.predict_with_uncertainty(single, x_test32, rng=0)
    assert prediction32.mean.dtype == torch.float32
    mean64, covariance64 = single.functional_moments(x_test32)  # solved in float64 too
    torch.testing.assert_close(prediction32.mean[:, 0], mean64, rtol=0, atol=1e-5)
    diagonal = covariance64.diagonal()
    torch.testing.assert_close(prediction32.epistemic[:, 0], diagonal, rtol=0, atol=1e-5)


def test_svgp_prediction_is_its_variational_predictive() -> None:
    x, y = _data(300)
    posterior, _ = gp(
        None,
        (x, y),
        likelihood=bnn.Gaussian(0.3, learn_std=True),
        method="svgp",
        num_inducing=16,
        batch_size=100,
        epochs=5,
        rng=0,
        progress=False,
    )
    x_test, _ = _data(50, seed=1)
    prediction = bnn.predict_with_uncertainty(posterior, x_test, rng=0, memory_budget=2_000)
    mean, variance = _gpytorch_predictive(posterior, x_test)
    torch.testing.assert_close(prediction.mean[:, 0], mean, rtol=0, atol=1e-10)
    # σ² carried as a bnn.Gaussian, whose log σ is float32: relative rounding ≤ 1.2e-7
    torch.testing.assert_close(prediction.variance[:, 0], variance, rtol=1.2e-7, atol=1e-12)


def test_binary_classification_averages_the_link_over_each_inputs_marginal() -> None:
    g = torch.Generator().manual_seed(3)
    x = torch.rand(300, 2, dtype=torch.float64, generator=g) * 2 - 1
    y = (x[:, 0] ** 2 + x[:, 1] ** 2 < 0.5).double()
    posterior, _ = gp(
        None,
        (x, y),
        likelihood=bnn.Bernoulli(),
        method="svgp",
        num_inducing=16,
        epochs=20,
        rng=0,
        progress=False,
    )
    x_test = x[:40]
    s = 4000
    prediction = bnn.predict_with_uncertainty(posterior, x_test, num_samples=s, rng=0)
    # E[sigmoid(f)], f ~ N(μ, σ²) per input, by 60-point Gauss–Hermite quadrature
    mean, variance = posterior.marginal_moments(x_test)
    nodes, weights = (torch.as_tensor(a) for a in numpy.polynomial.hermite.hermgauss(60))
    f = mean[:, None] + math.sqrt(2) * variance.sqrt()[:, None] * nodes
    expected = (torch.sigmoid(f) * weights).sum(-1) / math.sqrt(math.pi)
    # MC error of a mean of S sigmoids: its std ≤ sqrt(Var sigmoid(f) / S) ≤ 0.5 / sqrt(S)
    second = (torch.sigmoid(f) ** 2 * weights).sum(-1) / math.sqrt(math.pi)
    mcse = ((second - expected**2).clamp_min(1e-12) / s).sqrt()
    probability = prediction.probs[:, -1] if prediction.probs.dim() == 2 else prediction.probs
    assert bool(((probability - expected).abs() <= 4.5 * mcse + 1e-12).all())


def test_a_stack_predicts_and_scores_its_gp_members_in_closed_form() -> None:
    posterior, x_test, y_test = _trained_exact()
    x, y = _data(200)
    other, _ = gp(  # fixed hyper-parameters: the stack gives it weight 0.85 here
        None,
        (x, y),
        likelihood=bnn.Gaussian(0.1),
        lengthscale=1.0,
        method="exact",
        epochs=0,
        progress=False,
    )
    alone = bnn.predict_with_uncertainty(posterior, x_test, rng=0)
    stacked_alone = bnn.infer.StackedPosterior([posterior], torch.ones(1))
    through_stack = bnn.predict_with_uncertainty(stacked_alone, x_test, rng=0)
    torch.testing.assert_close(through_stack.mean, alone.mean, rtol=0, atol=0)
    torch.testing.assert_close(through_stack.std, alone.std, rtol=0, atol=0)

    stacked, history = bnn.infer.stack([posterior, other], x_test, y_test, rng=0)
    for k, member in enumerate([posterior, other]):
        exact = bnn.predict_with_uncertainty(member, x_test, rng=0).log_likelihood(y_test)
        assert history.member_log_scores[k] == pytest.approx(float(exact.mean()), abs=1e-12)
    weights = torch.tensor(history.weights)
    assert 0.1 < float(weights[0]) < 0.9
    mixture = bnn.predict_with_uncertainty(stacked, x_test, num_samples=1000, rng=0)
    # each member's one Gaussian carries its share of the 1000 samples (systematic
    # resampling: within 1/1000 of its weight)
    assert mixture.loc.shape[0] == 2
    shares = mixture.component_weights[:, 0, 0]
    assert bool(((shares - weights.to(shares)).abs() <= 1e-3).all())
