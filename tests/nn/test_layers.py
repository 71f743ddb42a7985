"""Bayesian layers: estimators agree in distribution, KL closed forms, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

import bnn
from bnn.nn.layers import BayesianModule

SAMPLES = 4000


def _random_posterior(layer: BayesianModule, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for posterior in layer.bayesian_parameters().values():
            posterior.loc.copy_(
                torch.randn(posterior.loc.shape, generator=generator, dtype=posterior.loc.dtype)
            )
            scale = 0.2 + 0.5 * torch.rand(
                posterior.loc.shape, generator=generator, dtype=posterior.loc.dtype
            )
            posterior.rho.copy_(bnn.nn.layers.inverse_softplus(scale))


def _moments(
    layer: BayesianModule, x: torch.Tensor, estimator: str, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    layer.estimator = estimator
    with bnn.RNG(seed).stream("test"), torch.no_grad():
        outputs = torch.stack([layer(x) for _ in range(SAMPLES)])
    return outputs.mean(0), outputs.var(0)


@pytest.mark.parametrize(
    "make, x_shape",
    [
        (lambda: nn.Linear(5, 3), (4, 5)),
        (lambda: nn.Conv2d(2, 3, 3, padding=1), (2, 2, 5, 5)),
        (lambda: nn.ConvTranspose2d(2, 2, 3, stride=2), (1, 2, 3, 3)),
    ],
)
@pytest.mark.parametrize("estimator", ["local_reparam", "flipout"])
def test_estimators_match_reparam_mean_and_variance(make, x_shape, estimator: str) -> None:  # type: ignore[no-untyped-def]
    """Per-output mean and variance agree with reparam within 5 MC standard errors.

    Outputs are Gaussian given x for all three estimators (linear in Gaussian weights), so the
    sample variance has sd ≈ var·sqrt(2/(S-1)); the mean has sd ≈ sqrt(var/S).
    """
    layer = bnn.nn.BayesianModule(make().double())
    _random_posterior(layer, seed=0)
    x = torch.randn(x_shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    mean_ref, var_ref = _moments(layer, x, "reparam", seed=2)
    mean, var = _moments(layer, x, estimator, seed=3)
    mean_se = torch.sqrt(var_ref / SAMPLES + var / SAMPLES)
    var_se = math.sqrt(2 / (SAMPLES - 1)) * torch.sqrt(var_ref**2 + var**2)
    assert ((mean - mean_ref).abs() < 5 * mean_se).all()
    assert ((var - var_ref).abs() < 5 * var_se).all()
    # Exact variance of a linear layer's output: f(x²; σ²). Checks all three against the truth.
    if isinstance(layer.module, nn.Linear):
        posterior = layer.bayesian_parameters()
        exact = x**2 @ (posterior["weight"].scale ** 2).T + posterior["bias"].scale ** 2
        assert ((var_ref - exact).abs() < 5 * math.sqrt(2 / (SAMPLES - 1)) * exact).all()


@pytest.mark.parametrize("prior", [bnn.nn.Normal(0.3, 0.7), bnn.nn.Laplace(-0.2, 0.5)])
def test_closed_form_kl_matches_monte_carlo(prior: bnn.nn.Prior) -> None:
    generator = torch.Generator().manual_seed(0)
    loc = torch.randn(50, dtype=torch.float64, generator=generator)
    scale = 0.1 + torch.rand(50, dtype=torch.float64, generator=generator)
    closed = prior.kl_from_normal(loc, scale)
    assert closed is not None
    n = 200_000
    weights = loc + scale * torch.randn(n, 50, dtype=torch.float64, generator=generator)
    log_ratio = torch.distributions.Normal(loc, scale).log_prob(weights) - prior.distribution(
        loc
    ).log_prob(weights)
    estimate, standard_error = log_ratio.mean(0), log_ratio.std(0) / math.sqrt(n)
    assert ((closed - estimate).abs() < 5 * standard_error).all()


@pytest.mark.parametrize(
    "prior",
    [bnn.nn.Normal(0.3, 0.7), bnn.nn.Normal(0.0, 1.3), bnn.nn.Laplace(-0.2, 0.5)],
)
def test_training_kl_from_rho_equals_the_elementwise_formula_with_its_gradient(
    prior: bnn.nn.Prior,
) -> None:
    """The (fused, for Normal) KL on ``rho`` equals the elementwise closed form; gradcheck."""
    generator = torch.Generator().manual_seed(1)
    loc = torch.randn(6, 4, dtype=torch.float64, generator=generator).requires_grad_()
    rho = (3 * torch.randn(6, 4, dtype=torch.float64, generator=generator)).requires_grad_()
    reference = prior.kl_from_normal(loc, torch.nn.functional.softplus(rho))
    fused = prior.kl_sum_from_softplus(loc, rho)
    assert reference is not None and fused is not None
    torch.testing.assert_close(fused, reference.sum(), rtol=1e-12, atol=1e-12)
    expected = torch.autograd.grad(reference.sum(), (loc, rho))
    for got, want in zip(torch.autograd.grad(fused, (loc, rho)), expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(prior.kl_sum_from_softplus, (loc, rho))
    # torch.func transforms see the same function.
    func_grad = torch.func.grad(lambda m: prior.kl_sum_from_softplus(m, rho.detach()))
    torch.testing.assert_close(func_grad(loc.detach()), expected[0], rtol=1e-12, atol=1e-12)
    batched = torch.func.vmap(lambda m: prior.kl_sum_from_softplus(m, rho.detach()))
    stacked = torch.stack([loc.detach(), 2 * loc.detach()])
    each = torch.stack([prior.kl_sum_from_softplus(m, rho.detach()) for m in stacked])
    torch.testing.assert_close(batched(stacked), each, rtol=1e-12, atol=1e-12)
    # reverse mode over rho with a batched cotangent (the backward must not work in place)
    jacobian = torch.func.jacrev(lambda r: prior.kl_sum_from_softplus(loc.detach(), r))
    torch.testing.assert_close(jacobian(rho.detach()), expected[1], rtol=1e-12, atol=1e-12)


def test_scale_mixture_kl_monte_carlo_matches_quadrature() -> None:
    """No closed form: the MC estimate must match Gauss-Hermite quadrature within 5 SE."""
    prior = bnn.nn.ScaleMixture(0.5, 1.0, 0.05)
    layer = bnn.BayesLinear(4, 3, prior=prior).double()
    _random_posterior(layer, seed=4)
    nodes, weights = np.polynomial.hermite_e.hermegauss(200)
    nodes_t = torch.from_numpy(nodes)
    weights_t = torch.from_numpy(weights) / math.sqrt(2 * math.pi)
    reference = 0.0
    with torch.no_grad():
        for posterior in layer.bayesian_parameters().values():
            loc, scale = posterior.loc.reshape(-1, 1), posterior.scale.reshape(-1, 1)
            w = loc + scale * nodes_t
            log_ratio = torch.distributions.Normal(loc, scale).log_prob(w) - prior.distribution(
                w
            ).log_prob(w)
            reference += float((log_ratio * weights_t).sum())
        with bnn.RNG(0).stream("kl"):
            draws = torch.stack([bnn.nn.kl_divergence(layer) for _ in range(2000)])
    assert abs(float(draws.mean()) - reference) < 5 * float(draws.std()) / math.sqrt(2000)


def test_kl_divergence_sums_layers_and_is_zero_without_any() -> None:
    net = nn.Sequential(bnn.BayesLinear(2, 3), nn.ReLU(), bnn.BayesLinear(3, 1))
    assert torch.allclose(bnn.nn.kl_divergence(net), net[0].kl() + net[2].kl())
    assert float(bnn.nn.kl_divergence(nn.Linear(2, 2))) == 0.0


def test_drop_in_layers_keep_signatures_and_shapes() -> None:
    assert bnn.BayesLinear(3, 2)(torch.randn(4, 3)).shape == (4, 2)
    assert bnn.BayesConv1d(2, 4, 3)(torch.randn(1, 2, 10)).shape == (1, 4, 8)
    assert bnn.BayesConv2d(2, 4, 3, padding=1)(torch.randn(1, 2, 6, 6)).shape == (1, 4, 6, 6)
    assert bnn.BayesConv3d(1, 2, 3)(torch.randn(1, 1, 5, 5, 5)).shape == (1, 2, 3, 3, 3)
    assert bnn.BayesConvTranspose2d(2, 1, 2, stride=2)(torch.randn(1, 2, 3, 3)).shape == (
        1,
        1,
        6,
        6,
    )
    assert isinstance(bnn.BayesLinear(3, 2), bnn.nn.BayesianModule)


def test_any_module_works_with_reparam() -> None:
    layer = bnn.nn.BayesianModule(nn.GRUCell(3, 4))
    assert layer(torch.randn(2, 3)).shape == (2, 4)
    assert float(layer.kl().detach()) > 0


def test_forward_is_random_and_posterior_mean_is_not() -> None:
    layer = bnn.BayesLinear(3, 2)
    x = torch.randn(4, 3)
    assert not torch.equal(layer(x), layer(x))
    with bnn.nn.posterior_mean(layer):
        assert torch.equal(layer(x), layer(x))


def test_layers_move_with_to_and_keep_state_dict_keys() -> None:
    layer = bnn.BayesLinear(3, 2).double()
    assert layer.bayesian_parameters()["weight"].loc.dtype == torch.float64
    assert set(layer.state_dict()) == {
        "posterior.weight.loc",
        "posterior.weight.rho",
        "posterior.bias.loc",
        "posterior.bias.rho",
    }


@pytest.mark.parametrize(
    "build, error, match",
    [
        (lambda: bnn.nn.Normal(0.0, -1.0), ValueError, "std must be a positive"),
        (lambda: bnn.nn.Laplace(0.0, 0.0), ValueError, "scale must be a positive"),
        (lambda: bnn.nn.ScaleMixture(1.5), ValueError, "pi must be in"),
        (lambda: bnn.BayesLinear(2, 2, estimator="magic"), ValueError, "unknown estimator"),
        (
            lambda: bnn.nn.BayesianModule(nn.GRUCell(2, 2), estimator="flipout"),
            ValueError,
            "linear in its weights",
        ),
        (lambda: bnn.BayesLinear(2, 2, init_std=-0.1), ValueError, "positive"),
        (lambda: bnn.nn.BayesianModule(nn.ReLU()), ValueError, "no parameters"),
        (lambda: bnn.BayesLinear(2, 2, prior="normal"), TypeError, "Prior"),
    ],
)
def test_bad_layer_arguments(build, error, match) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(error, match=match):
        build()
