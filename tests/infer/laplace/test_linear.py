"""Probabilistic heads: closed-form BLR against numpy, neural linear, mixture density network."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

import bnn


def test_blr_posterior_equals_a_direct_numpy_computation() -> None:
    rng = np.random.default_rng(0)
    phi = rng.normal(size=(40, 3))
    y = phi @ np.array([1.0, -2.0, 0.5]) + 0.7 + 0.3 * rng.normal(size=40)
    head = bnn.infer.BayesianLinearRegression(prior_precision=2.0, noise_std=0.3).fit(
        torch.from_numpy(phi), torch.from_numpy(y)
    )
    design = np.hstack([phi, np.ones((40, 1))])
    precision = 2.0 * np.eye(4) + design.T @ design / 0.3**2
    covariance = np.linalg.inv(precision)
    mean = covariance @ design.T @ y / 0.3**2
    np.testing.assert_allclose(head.mean.numpy().ravel(), mean, rtol=1e-10)
    np.testing.assert_allclose(head.covariance.numpy(), covariance, rtol=1e-9, atol=1e-14)
    test = rng.normal(size=(5, 3))
    predicted_mean, epistemic = head.predict_moments(torch.from_numpy(test))
    test_design = np.hstack([test, np.ones((5, 1))])
    np.testing.assert_allclose(predicted_mean.numpy().ravel(), test_design @ mean, rtol=1e-10)
    np.testing.assert_allclose(
        epistemic.numpy(), np.einsum("nd,de,ne->n", test_design, covariance, test_design), rtol=1e-9
    )


def test_blr_weight_draws_have_the_posterior_moments() -> None:
    generator = torch.Generator().manual_seed(0)
    phi = torch.randn(30, 2, generator=generator, dtype=torch.float64)
    y = phi @ torch.tensor([1.0, -1.0], dtype=torch.float64) + 0.5 * torch.randn(
        30, generator=generator, dtype=torch.float64
    )
    head = bnn.infer.BayesianLinearRegression(noise_std=0.5).fit(phi, y)
    n = 50_000
    draws = head.sample_weights(n, rng=0).squeeze(-1)
    sd = head.covariance.diagonal().sqrt()
    assert ((draws.mean(0) - head.mean.squeeze(-1)).abs() < 5 * sd / math.sqrt(n)).all()
    assert ((draws.var(0) / sd**2 - 1).abs() < 5 * math.sqrt(2 / (n - 1))).all()


def test_neural_linear_predicts_through_the_posterior_interface() -> None:
    body = nn.Sequential(nn.Linear(1, 8), nn.Tanh())
    x = torch.linspace(-1, 1, 50).unsqueeze(-1)
    y = torch.sin(3 * x)
    model = bnn.infer.NeuralLinear(body, bnn.infer.BayesianLinearRegression(noise_std=0.1)).fit(
        x, y
    )
    prediction = bnn.predict_with_uncertainty(
        model, torch.tensor([[0.0], [5.0]]), likelihood=bnn.Gaussian(0.1), rng=0
    )
    assert prediction.samples.shape == (100, 2, 1)
    assert float(prediction.epistemic[1]) > float(prediction.epistemic[0])


def test_mdn_captures_a_bimodal_conditional_density() -> None:
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(1000, 1, generator=generator) * 2 - 1
    sign = torch.where(torch.rand(1000, 1, generator=generator) < 0.5, -1.0, 1.0)
    y = sign * (1.0 + 0.5 * x) + 0.1 * torch.randn(1000, 1, generator=generator)
    with bnn.RNG(0).stream("init"):
        net = nn.Sequential(nn.Linear(1, 32), nn.Tanh(), nn.Linear(32, 6))
    likelihood = bnn.MixtureDensity(2)
    bnn.fit(
        net,
        (x, y),
        likelihood=likelihood,
        epochs=60,
        batch_size=100,
        lr=1e-2,
        rng=0,
        progress=False,
    )
    grid = torch.linspace(-2, 2, 81)
    prediction = bnn.predict_with_uncertainty(
        bnn.posterior.PointEstimate(net), torch.zeros(81, 1), likelihood=likelihood
    )
    density = prediction.log_likelihood(grid).exp()
    peaks = [
        float(grid[i])
        for i in range(1, 80)
        if density[i] > density[i - 1] and density[i] >= density[i + 1] and density[i] > 0.5
    ]
    assert len(peaks) == 2 and abs(peaks[0] + 1) < 0.15 and abs(peaks[1] - 1) < 0.15
    assert float(density[40]) < 0.05 * float(density.max())  # almost no mass between the modes
    assert abs(float(prediction.mean[40])) < 0.2  # the mean sits between the modes


@pytest.mark.parametrize(
    "build, error, match",
    [
        (
            lambda: bnn.infer.BayesianLinearRegression(prior_precision=0.0),
            ValueError,
            "prior_precision",
        ),
        (
            lambda: bnn.infer.BayesianLinearRegression().fit(torch.randn(5, 2), torch.randn(4)),
            ValueError,
            "N = 5",
        ),
        (
            lambda: bnn.infer.BayesianLinearRegression().predict_moments(torch.randn(3, 2)),
            RuntimeError,
            "call fit",
        ),
        (lambda: bnn.MixtureDensity(0), ValueError, "num_components"),
        (
            lambda: bnn.MixtureDensity(2).log_prob(torch.zeros(4, 5), torch.zeros(4)),
            ValueError,
            "last dimension 6",
        ),
    ],
)
def test_bad_head_input(build, error, match) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(error, match=match):
        build()


def test_beta_nll_weights_training_gradients_and_leaves_evaluation_alone() -> None:
    """β = 1 gives the mean the MSE gradient; the density everyone else sees stays plain."""
    generator = torch.Generator().manual_seed(0)
    output = torch.randn(16, 2, generator=generator, dtype=torch.float64).requires_grad_()
    y = torch.randn(16, 1, generator=generator, dtype=torch.float64)
    plain, beta_one = bnn.HeteroscedasticGaussian(), bnn.HeteroscedasticGaussian(beta=1.0)
    (gradient,) = torch.autograd.grad(-beta_one.training_log_prob(output, y).sum(), output)
    mean = output[:, :1].detach()
    torch.testing.assert_close(gradient[:, :1], mean - y)  # d/dμ of ½(y - μ)²
    torch.testing.assert_close(beta_one.log_prob(output, y), plain.log_prob(output, y))
    torch.testing.assert_close(plain.training_log_prob(output, y), plain.log_prob(output, y))
    with pytest.raises(ValueError, match="beta"):
        bnn.HeteroscedasticGaussian(beta=1.5)


def test_neural_linear_from_a_loader_or_dataset_equals_the_tensor_fit() -> None:
    """Accumulated ``ΦᵀΦ`` and ``Φᵀy`` over batches of 7 give the one-batch posterior (float64
    rounding); a NaN in a later batch and data of the wrong kind are refused."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(50, 3, generator=generator, dtype=torch.float64)
    y = torch.randn(50, 2, generator=generator, dtype=torch.float64)
    body = nn.Sequential(nn.Linear(3, 4), nn.Tanh()).double()
    likelihood = bnn.Gaussian(0.3)
    reference, _ = bnn.infer.neural_linear(body, (x, y), likelihood=likelihood, progress=False)
    dataset = torch.utils.data.TensorDataset(x, y)
    for data in (torch.utils.data.DataLoader(dataset, batch_size=7), dataset):
        posterior, _ = bnn.infer.neural_linear(body, data, likelihood=likelihood, progress=False)
        torch.testing.assert_close(posterior.head.mean, reference.head.mean, rtol=0, atol=1e-12)
        torch.testing.assert_close(
            posterior.head.covariance, reference.head.covariance, rtol=0, atol=1e-12
        )
    bad = x.clone()
    bad[30, 1] = float("nan")
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(bad, y), batch_size=7)
    with pytest.raises(ValueError, match="NaN or inf"):
        bnn.infer.neural_linear(body, loader, likelihood=likelihood, progress=False)
    with pytest.raises(TypeError, match="a Dataset or a DataLoader"):
        bnn.infer.neural_linear(body, "data", likelihood=likelihood, progress=False)  # type: ignore[arg-type]


def test_neural_linear_predicts_its_exact_gaussian_in_closed_form() -> None:
    """``predict_with_uncertainty`` gives ``N(φᵀm, φᵀΛ⁻¹φ + σ²)`` exactly (float64, 1e-12):
    epistemic ``φᵀΛ⁻¹φ`` from the head's covariance, aleatoric ``σ²``; the head alone on
    features predicts the same; 95 % intervals are the Gaussian's."""
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(40, 2, generator=generator, dtype=torch.float64)
    y = torch.randn(40, 3, generator=generator, dtype=torch.float64)
    body = nn.Sequential(nn.Linear(2, 5), nn.Tanh()).double()
    sigma = 0.4
    posterior, _ = bnn.infer.neural_linear(
        body, (x, y), likelihood=bnn.Gaussian(sigma), progress=False
    )
    x_test = torch.randn(6, 2, generator=generator, dtype=torch.float64)
    prediction = bnn.predict_with_uncertainty(
        posterior, x_test, likelihood=bnn.Gaussian(sigma), rng=0
    )
    with torch.no_grad():
        phi = torch.cat([body(x_test), torch.ones(6, 1, dtype=torch.float64)], 1)
    epistemic = ((phi @ posterior.head.covariance) * phi).sum(1, keepdim=True).expand(6, 3)
    torch.testing.assert_close(prediction.mean, phi @ posterior.head.mean, rtol=0, atol=1e-12)
    torch.testing.assert_close(prediction.epistemic, epistemic, rtol=0, atol=1e-12)
    noise = bnn.Gaussian(sigma).std.double() ** 2  # the likelihood's σ² (its log in float32)
    torch.testing.assert_close(prediction.variance, epistemic + noise, rtol=0, atol=1e-12)
    lower, upper = prediction.interval(0.95)
    half = 1.959963984540054 * (epistemic + noise).sqrt()
    torch.testing.assert_close(upper - lower, 2 * half, rtol=1e-9, atol=0)
    alone = bnn.predict_with_uncertainty(
        posterior.head, phi[:, :-1], likelihood=bnn.Gaussian(sigma), rng=0
    )
    torch.testing.assert_close(alone.variance, prediction.variance, rtol=0, atol=1e-12)
