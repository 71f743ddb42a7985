"""Bayesian layers: estimators agree in distribution, KL closed forms, bad input."""

from __future__ import annotations

import copy
import io
import math

import numpy as np
import pytest
import torch
from torch import Tensor, nn

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


@pytest.mark.parametrize("prior", [bnn.nn.Normal(0.3, 0.7), bnn.nn.Laplace(-0.2, 0.5)])
def test_scale_and_kl_of_one_pass_have_the_gradient_of_the_separate_formulas(
    prior: bnn.nn.Prior,
) -> None:
    """The fused (scale, KL) pass: same values, and the joint gradient of scale and KL."""
    generator = torch.Generator().manual_seed(2)
    loc = torch.randn(5, 3, dtype=torch.float64, generator=generator).requires_grad_()
    rho = (2 * torch.randn(5, 3, dtype=torch.float64, generator=generator)).requires_grad_()
    cotangent = torch.randn(5, 3, dtype=torch.float64, generator=generator)
    scale, kl = prior.scale_and_kl(loc, rho)
    torch.testing.assert_close(scale, torch.nn.functional.softplus(rho), rtol=0, atol=0)
    if kl is None:  # priors without a fused form give the scale alone
        assert not isinstance(prior, bnn.nn.Normal)
        return
    reference_kl = prior.kl_from_normal(loc, torch.nn.functional.softplus(rho))
    assert reference_kl is not None
    torch.testing.assert_close(kl, reference_kl.sum(), rtol=1e-12, atol=1e-12)
    joint = (scale * cotangent).sum() + 0.7 * kl
    reference = (torch.nn.functional.softplus(rho) * cotangent).sum() + 0.7 * reference_kl.sum()
    for got, want in zip(
        torch.autograd.grad(joint, (loc, rho)),
        torch.autograd.grad(reference, (loc, rho)),
        strict=True,
    ):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    assert torch.autograd.gradcheck(lambda m, r: prior.scale_and_kl(m, r), (loc, rho))  # type: ignore[arg-type, return-value]
    # the scale alone (the KL unused) has softplus's gradient
    (scale_only,) = torch.autograd.grad(prior.scale_and_kl(loc, rho)[0].sum(), rho)
    torch.testing.assert_close(scale_only, torch.sigmoid(rho), rtol=1e-12, atol=1e-12)


def _training_loss_gradients(
    model: nn.Module, x: Tensor, *, keep_pending: bool
) -> dict[str, Tensor]:
    with bnn.RNG(3).stream("step"):
        output = model(x)
    kept = [m._pending_kl for m in model.modules() if isinstance(m, bnn.nn.BayesianParameter)]
    assert kept and all(pending is not None for pending in kept)  # the forward kept its KL
    if not keep_pending:  # forget the KL of the forward pass: kl_divergence computes afresh
        for module in model.modules():
            if isinstance(module, bnn.nn.BayesianParameter):
                module._pending_kl = None
    loss = output.square().sum() + 0.37 * bnn.nn.kl_divergence(model)
    model.zero_grad()
    loss.backward()
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("estimator", ["reparam", "local_reparam", "flipout"])
def test_kl_kept_from_the_training_forward_gives_the_same_gradient(
    estimator: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bnn.nn.layers, "FUSE_MIN_ELEMENTS", 0)  # every tensor keeps its KL

    def build() -> nn.Module:
        net = nn.Sequential(nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 2)).double()
        prior = bnn.nn.Normal(0.3, 0.7)
        return bnn.bayesianize(net, estimator=estimator, prior=prior, init="random", rng=0)

    x = torch.linspace(-2, 2, 55, dtype=torch.float64).view(11, 5)
    fused = _training_loss_gradients(build(), x, keep_pending=True)
    separate = _training_loss_gradients(build(), x, keep_pending=False)
    assert fused.keys() == separate.keys() and len(fused) == 8
    for name in fused:
        torch.testing.assert_close(fused[name], separate[name], rtol=1e-12, atol=1e-12)


def test_small_tensors_share_one_kl_with_the_per_tensor_value_and_gradient() -> None:
    """``kl_divergence`` joins small tensors per prior; mixed priors and an MC prior stay apart."""
    torch.manual_seed(0)
    model = nn.Sequential(
        bnn.BayesLinear(4, 6, prior=bnn.nn.Normal(0.1, 0.8)),
        bnn.BayesLinear(6, 5, prior=bnn.nn.Laplace(0.0, 0.5)),
        bnn.BayesLinear(5, 3, prior=bnn.nn.Normal(0.1, 0.8)),
        bnn.BayesLinear(3, 2, prior=bnn.nn.ScaleMixture(0.5, 1.0, 0.01)),
    ).double()
    parameters = [p for p in model.modules() if isinstance(p, bnn.nn.BayesianParameter)]
    assert all(p.loc.numel() < bnn.nn.layers.FUSE_MIN_ELEMENTS for p in parameters)
    with bnn.RNG(0).stream("kl"):
        joint = bnn.nn.kl_divergence(model)
    with bnn.RNG(0).stream("kl"):
        separate = torch.stack([p.kl() for p in parameters[:6]] + [model[3].kl()]).sum()
    torch.testing.assert_close(joint, separate, rtol=1e-12, atol=1e-12)
    for got, want in zip(
        torch.autograd.grad(joint, [p.rho for p in parameters]),
        torch.autograd.grad(separate, [p.rho for p in parameters]),
        strict=True,
    ):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_a_kept_kl_is_never_stale(monkeypatch: pytest.MonkeyPatch) -> None:
    """Changed weights, a finished backward pass, no-grad: ``kl_divergence`` is computed afresh."""
    monkeypatch.setattr(bnn.nn.layers, "FUSE_MIN_ELEMENTS", 0)
    torch.manual_seed(0)
    model = bnn.BayesLinear(4, 3, prior=bnn.nn.Normal(0.0, 1.0))
    loc = model.posterior["weight"].loc
    x = torch.randn(6, 4)

    def fresh_kl() -> Tensor:
        return sum(p.prior.kl_sum_from_softplus(p.loc, p.rho) for p in model.posterior.values())  # type: ignore[return-value]

    model(x)
    with torch.no_grad():
        loc.add_(1.0)  # in place: the forward's KL is out of date
    torch.testing.assert_close(bnn.nn.kl_divergence(model), fresh_kl(), rtol=0, atol=0)
    model(x)
    loc.data = loc.data + 1.0  # new storage, no version bump
    torch.testing.assert_close(bnn.nn.kl_divergence(model), fresh_kl(), rtol=0, atol=0)
    # the likelihood's backward pass first, then the KL's own: the graph is not reused
    model(x).sum().backward()
    bnn.nn.kl_divergence(model).backward()
    # copies and saved models carry no kept KL; a no-grad forward keeps none
    model(x)
    copied = copy.deepcopy(model)
    assert all(p._pending_kl is None for p in copied.posterior.values())
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    with torch.no_grad():
        model(x)
    assert all(p._pending_kl is None for p in model.posterior.values())
    # the KL is kept for one call: a second call in the same loss computes its own
    model(x)
    first, second = bnn.nn.kl_divergence(model), bnn.nn.kl_divergence(model)
    torch.testing.assert_close(first, second, rtol=0, atol=0)
    assert first.grad_fn is not second.grad_fn


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
