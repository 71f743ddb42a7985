"""Laplace: exact on Bayesian linear regression, the GGN against brute force, marglik tuning."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.functional import hessian as autograd_hessian
from torch.autograd.functional import jacobian as autograd_jacobian

import bnn
from bnn.infer.laplace.laplace import laplace
from bnn.likelihoods import ClassificationPrediction, RegressionPrediction
from bnn.posterior._covariance import DiagonalFactor
from bnn.posterior.gaussian import GaussianPosterior
from tests.oracles import linear_gaussian_posterior, linear_regression_data

# float64 throughout: the exact comparisons below are to a few hundred ulps of the entries.
RTOL = 1e-9


def _gaussian(std: float) -> bnn.Gaussian:
    """A Gaussian likelihood whose std is exactly ``std`` (see ``_std``)."""
    return bnn.Gaussian(std)


def _std(std: float) -> float:
    """The std a ``bnn.Gaussian(std)`` holds: its log is stored in float32, so the oracles use
    this value (exact in float64) rather than ``std`` (1e-7 apart)."""
    return float(bnn.Gaussian(std).std)


def _blr(outputs: int, *, bias: bool, alpha: float, noise: float, n: int = 40):
    """A linear layer at the exact posterior mean, its data and the exact posterior."""
    generator = torch.Generator().manual_seed(0)
    x, _, _ = linear_regression_data(n, 3, noise, seed=1)
    w = torch.randn(3, outputs, generator=generator, dtype=torch.float64)
    y = x @ w + noise * torch.randn(n, outputs, generator=generator, dtype=torch.float64)
    design = torch.cat([x, torch.ones(n, 1, dtype=torch.float64)], 1) if bias else x
    exact = linear_gaussian_posterior(design, y, noise, alpha**-0.5)  # mean [D', K]
    layer = nn.Linear(3, outputs, bias=bias).double()
    with torch.no_grad():
        layer.weight.copy_(exact.mean[:3].T)
        if bias:
            layer.bias.copy_(exact.mean[3])
    covariance_y = noise**2 * torch.eye(n, dtype=torch.float64) + design @ design.T / alpha
    gaussian = torch.distributions.MultivariateNormal(
        torch.zeros(n, dtype=torch.float64), covariance_y
    )
    log_evidence = sum(gaussian.log_prob(y[:, k]) for k in range(outputs))
    return x, y, layer, exact, log_evidence


def _weight_major(matrix: Tensor, inputs: int, outputs: int, bias: bool) -> Tensor:
    """Reorder an exact ``[D', D']`` per-output covariance into bnn's flat order
    (weight ``[K, D]`` row-major, then bias ``[K]``) for ``K`` outputs sharing it."""
    per_output = torch.kron(
        torch.eye(outputs, dtype=matrix.dtype), matrix.contiguous()
    )  # (k, d) order
    d = inputs + int(bias)
    order = [k * d + i for k in range(outputs) for i in range(inputs)]
    order += [k * d + inputs for k in range(outputs)] if bias else []
    return per_output[order][:, order]


@pytest.mark.parametrize("hessian", ["full", "kron", "diag"])
@pytest.mark.parametrize(("outputs", "bias"), [(1, False), (2, True)])
def test_laplace_is_the_exact_posterior_of_bayesian_linear_regression(
    hessian: str, outputs: int, bias: bool
) -> None:
    alpha, noise = 2.0, _std(0.5)
    x, y, layer, exact, log_evidence = _blr(outputs, bias=bias, alpha=alpha, noise=noise)
    posterior, history = laplace(
        layer,
        (x, y),
        likelihood=_gaussian(noise),
        subset="all",
        hessian=hessian,
        prior_precision=alpha,
        batch_size=16,  # several batches: the sums must not depend on the split
        progress=False,
    )
    flat_mean = torch.cat([layer.weight.detach().reshape(-1), *([layer.bias] if bias else [])])
    torch.testing.assert_close(posterior.mean, flat_mean.detach(), rtol=0, atol=0)
    covariance = _weight_major(exact.covariance, 3, outputs, bias)
    precision = _weight_major(exact.precision, 3, outputs, bias)
    if hessian == "diag":
        # the diagonal of the exact precision, and the marglik of that diagonal Gaussian
        torch.testing.assert_close(
            posterior.variance, precision.diagonal().reciprocal(), rtol=RTOL, atol=0
        )
        assert float(posterior.log_marginal_likelihood()) <= float(log_evidence)  # Hadamard
        return
    torch.testing.assert_close(posterior.covariance, covariance, rtol=RTOL, atol=1e-15)
    torch.testing.assert_close(posterior.posterior_precision, precision, rtol=RTOL, atol=1e-9)
    assert history.log_marginal_likelihood == pytest.approx(float(log_evidence), rel=1e-12)


def test_the_mean_is_the_map_after_training() -> None:
    """Trained by full-batch L-BFGS on the log joint, the weights are the exact mean."""
    alpha, noise = 2.0, _std(0.5)
    x, y, layer, exact, _ = _blr(1, bias=False, alpha=alpha, noise=noise)
    nn.init.zeros_(layer.weight)
    optimizer = torch.optim.LBFGS(
        layer.parameters(),
        tolerance_grad=1e-13,
        tolerance_change=0,
        max_iter=500,
        line_search_fn="strong_wolfe",
    )

    def closure() -> Tensor:
        optimizer.zero_grad()
        loss = ((layer(x) - y) ** 2).sum() / (2 * noise**2) + alpha / 2 * (layer.weight**2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    posterior, _ = laplace(
        layer,
        (x, y),
        likelihood=_gaussian(noise),
        subset="all",
        hessian="full",
        prior_precision=alpha,
        progress=False,
    )
    torch.testing.assert_close(posterior.mean, exact.mean.reshape(-1), rtol=1e-8, atol=1e-10)


def _mlp(outputs: int) -> nn.Module:
    with bnn.RNG(0).stream("init"):
        return nn.Sequential(
            nn.Linear(2, 6), nn.Tanh(), nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, outputs)
        ).double()


def _data(n: int, outputs: int, classify: bool) -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(n, 2, generator=generator, dtype=torch.float64)
    if classify:
        return x, torch.randint(0, outputs, (n,), generator=generator)
    return x, torch.randn(n, outputs, generator=generator, dtype=torch.float64)


def _brute_force_ggn(model: nn.Module, x: Tensor, y: Tensor, classify: bool) -> Tensor:
    """``Σ_n J_nᵀ H_n J_n`` with one ``autograd.functional`` Jacobian and Hessian per datum."""
    names = [n for n, _ in model.named_parameters()]
    values = [p.detach() for p in model.parameters()]
    total = 0
    for xi, yi in zip(x, y, strict=True):

        def output(*params: Tensor, xi: Tensor = xi) -> Tensor:
            return torch.func.functional_call(
                model, dict(zip(names, params, strict=True)), (xi[None],)
            )[0]

        jac = torch.cat(
            [j.reshape(j.shape[0], -1) for j in autograd_jacobian(output, tuple(values))], 1
        )
        f = output(*values).detach()
        if classify:
            h = autograd_hessian(lambda z, yi=yi: -z.log_softmax(-1)[yi], f)
        else:
            h = torch.eye(f.shape[0], dtype=f.dtype)  # unit noise
        total = total + jac.T @ h @ jac
    assert isinstance(total, Tensor)
    return total


@pytest.mark.parametrize("classify", [False, True])
def test_full_and_diag_ggn_equal_a_brute_force_computation(classify: bool) -> None:
    model = _mlp(3)
    x, y = _data(12, 3, classify)
    likelihood = bnn.Categorical() if classify else _gaussian(1.0)
    ggn = _brute_force_ggn(model, x, y, classify)
    eye = torch.eye(ggn.shape[0], dtype=torch.float64)
    full, _ = laplace(
        model,
        (x, y),
        likelihood=likelihood,
        subset="all",
        hessian="full",
        prior_precision=0.5,
        batch_size=5,
        progress=False,
    )
    torch.testing.assert_close(full.posterior_precision, ggn + 0.5 * eye, rtol=RTOL, atol=1e-10)
    diag, _ = laplace(
        model,
        (x, y),
        likelihood=likelihood,
        subset="all",
        hessian="diag",
        prior_precision=0.5,
        progress=False,
    )
    torch.testing.assert_close(
        diag.variance, (ggn.diagonal() + 0.5).reciprocal(), rtol=RTOL, atol=0
    )
    # Hadamard: det Λ ≤ Π Λ_ii, so the diagonal marglik is a lower bound of the full one
    assert float(diag.log_marginal_likelihood()) <= float(full.log_marginal_likelihood())


def test_kron_is_exact_per_layer_for_one_datum() -> None:
    """With N = 1 every per-layer GGN block is exactly ``(ã ãᵀ) ⊗ (gᵀ H g)``."""
    model = _mlp(3)
    x, y = _data(1, 3, classify=True)
    ggn = _brute_force_ggn(model, x, y, classify=True)
    kron, _ = laplace(
        model,
        (x, y),
        likelihood=bnn.Categorical(),
        subset="all",
        hessian="kron",
        prior_precision=0.5,
        progress=False,
    )
    sizes = [p.numel() for p in model.parameters()]
    bounds = torch.tensor([0, *sizes]).cumsum(0).tolist()
    blocks = [slice(bounds[i], bounds[i + 2]) for i in range(0, len(sizes), 2)]  # weight + bias
    expected = torch.block_diag(*[ggn[b, b] for b in blocks])
    eye = torch.eye(ggn.shape[0], dtype=torch.float64)
    torch.testing.assert_close(kron.posterior_precision, expected + 0.5 * eye, rtol=1e-8, atol=1e-9)


def test_last_layer_kron_equals_full_for_a_gaussian_mlp() -> None:
    """Under a Gaussian likelihood the last layer's ``G = I/σ²`` is exact: kron = full GGN,
    hence the same marginal likelihood and the same linearised predictive variance."""
    model = _mlp(2)
    x, y = _data(30, 2, classify=False)
    options = dict(
        likelihood=_gaussian(0.3), subset="last_layer", prior_precision=2.0, progress=False
    )
    full, _ = laplace(model, (x, y), hessian="full", **options)
    kron, _ = laplace(model, (x, y), hessian="kron", **options)
    assert full.names == ["4.weight", "4.bias"]
    by_module, _ = laplace(model, (x, y), hessian="full", **{**options, "subset": [model[4]]})
    by_name, _ = laplace(model, (x, y), hessian="full", **{**options, "subset": ["0", "4.bias"]})
    assert by_module.names == full.names and by_name.names == ["0.weight", "0.bias", "4.bias"]
    torch.testing.assert_close(kron.covariance, full.covariance, rtol=RTOL, atol=1e-14)
    assert float(kron.log_marginal_likelihood()) == pytest.approx(
        float(full.log_marginal_likelihood()), rel=1e-12
    )
    x_test = torch.linspace(-3, 3, 7, dtype=torch.float64).reshape(-1, 1).repeat(1, 2)
    full_prediction = bnn.predict_with_uncertainty(full, x_test)
    kron_prediction = bnn.predict_with_uncertainty(kron, x_test)
    torch.testing.assert_close(
        kron_prediction.variance, full_prediction.variance, rtol=RTOL, atol=0
    )


def test_glm_predictive_is_j_sigma_jt_plus_noise() -> None:
    model = _mlp(1)
    x, y = _data(20, 1, classify=False)
    posterior, _ = laplace(
        model, (x, y), likelihood=_gaussian(0.3), subset="all", hessian="full", progress=False
    )
    x_test = torch.randn(4, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(9))
    names = posterior.names
    params = tuple(dict(model.named_parameters())[n].detach() for n in names)

    def output(*values: Tensor) -> Tensor:
        return torch.func.functional_call(model, dict(zip(names, values, strict=True)), (x_test,))

    jac = torch.cat([j.reshape(4, -1) for j in autograd_jacobian(output, params)], 1)
    expected = (jac @ posterior.covariance * jac).sum(1) + _std(0.3) ** 2
    prediction = bnn.predict_with_uncertainty(posterior, x_test)
    assert isinstance(prediction, RegressionPrediction)
    torch.testing.assert_close(prediction.variance.squeeze(-1), expected, rtol=RTOL, atol=0)
    torch.testing.assert_close(
        prediction.aleatoric, torch.full_like(prediction.mean, _std(0.3) ** 2)
    )
    torch.testing.assert_close(prediction.mean, model(x_test).detach())
    # the Gaussian's own density and interval, not a mixture's
    lower, upper = prediction.interval(0.95)
    torch.testing.assert_close(
        (upper - lower) / 2, 1.959963984540054 * prediction.std, rtol=1e-9, atol=0
    )


def test_samples_of_a_linear_model_have_the_glm_moments() -> None:
    """For a linear model the sampled and the linearised predictive agree (within MC error)."""
    x, y, layer, _, _ = _blr(1, bias=True, alpha=2.0, noise=0.5)
    posterior, _ = laplace(
        layer,
        (x, y),
        likelihood=_gaussian(0.5),
        subset="all",
        hessian="kron",
        prior_precision=2.0,
        progress=False,
    )
    x_test = x[:5]
    glm = bnn.predict_with_uncertainty(posterior, x_test)
    samples = posterior.sample_functions(x_test, 20_000, rng=0).squeeze(-1)
    s = samples.shape[0]
    sd = glm.epistemic.squeeze(-1).sqrt()
    assert ((samples.mean(0) - glm.mean.squeeze(-1)).abs() < 5 * sd / math.sqrt(s)).all()
    assert ((samples.var(0) / sd**2 - 1).abs() < 5 * math.sqrt(2 / (s - 1))).all()


def test_categorical_probit_predictive() -> None:
    model = _mlp(3)
    x, y = _data(30, 3, classify=True)
    posterior, _ = laplace(
        model,
        (x, y),
        likelihood=bnn.Categorical(),
        subset="last_layer",
        hessian="kron",
        progress=False,
    )
    x_test = x[:6]
    prediction = bnn.predict_with_uncertainty(posterior, x_test, num_samples=50, rng=0)
    assert isinstance(prediction, ClassificationPrediction)
    mean, covariance = posterior.functional_moments(x_test)
    kappa = (1 + math.pi / 8 * covariance.diagonal(dim1=-2, dim2=-1)).rsqrt()
    torch.testing.assert_close(prediction.probs, (mean * kappa).softmax(-1), rtol=1e-12, atol=0)
    assert prediction.samples.shape == (50, 6, 3)
    assert (prediction.mutual_information >= 0).all()
    posterior.predictive = "samples"
    sampled = bnn.predict_with_uncertainty(posterior, x_test, num_samples=50, rng=0)
    assert type(sampled) is ClassificationPrediction


def test_marglik_recovers_the_prior_precision_and_noise_of_data_from_the_model() -> None:
    """Weights ``W [30, 30] ~ N(0, 1/α)``, ``y = x Wᵀ + σ ε``. With N/σ² ≫ α the MAP is W up to
    negligible shrinkage, and the evidence-optimal α̂ = P/‖W‖² has relative sd √(2/P)
    (P = 900 weights): log α̂ is checked within 4·√(2/P) = 0.19 of log α. The noise is
    determined by N·K = 30,000 residuals: log σ̂ within 4/√(2(NK − P)) = 0.017."""
    alpha, noise, n, d = 4.0, 0.1, 1000, 30
    generator = torch.Generator().manual_seed(0)
    w = torch.randn(d, d, generator=generator, dtype=torch.float64) / math.sqrt(alpha)
    x = torch.randn(n, d, generator=generator, dtype=torch.float64)
    y = x @ w.T + noise * torch.randn(n, d, generator=generator, dtype=torch.float64)
    layer = nn.Linear(d, d, bias=False).double()
    with torch.no_grad():  # MAP under the initial δ = 1, σ = 1 (ridge)
        layer.weight.copy_(
            torch.linalg.solve(x.T @ x + torch.eye(d, dtype=torch.float64), x.T @ y).T
        )
    posterior, _ = laplace(
        layer, (x, y), likelihood=_gaussian(1.0), subset="all", hessian="kron", progress=False
    )
    before = float(posterior.log_marginal_likelihood())
    history = posterior.optimize_prior_precision(steps=300)
    assert history.neg_log_marglik[-1] < -before
    assert abs(math.log(float(posterior.prior_precision)) - math.log(alpha)) < 4 * math.sqrt(
        2 / d**2
    )
    assert posterior.noise_std is not None
    assert abs(math.log(posterior.noise_std / noise)) < 4 / math.sqrt(2 * (n * d - d**2))
    # the optimum: the gradient of the marglik vanishes there
    log_precision = posterior.prior_precision.log().clone().requires_grad_(True)
    lml = posterior.log_marginal_likelihood(log_precision.exp())
    (gradient,) = torch.autograd.grad(lml, log_precision)
    assert abs(float(gradient)) < 1e-2 * d**2


def test_per_layer_marglik_and_validation_grid() -> None:
    model = _mlp(1)
    x, y = _data(40, 1, classify=False)
    posterior, _ = laplace(
        model, (x, y), likelihood=_gaussian(1.0), subset="all", hessian="kron", progress=False
    )
    assert posterior.groups == ["0", "2", "4"]
    start = float(posterior.log_marginal_likelihood())
    posterior.optimize_prior_precision(per_layer=True, steps=100)
    assert posterior.prior_precision.shape == (3,)
    assert float(posterior.log_marginal_likelihood()) > start
    grid = torch.tensor([0.01, 1.0, 100.0], dtype=torch.float64)
    history = posterior.optimize_prior_precision(
        "validation", validation=(x[:10], y[:10]), grid=grid, optimize_noise=False
    )
    best = float(grid[int(torch.tensor(history.val_nll).argmin())])
    assert float(posterior.prior_precision) == best
    nll = -bnn.predict_with_uncertainty(posterior, x[:10]).log_likelihood(y[:10]).mean()
    assert float(nll) == pytest.approx(min(history.val_nll), rel=1e-10)


def test_validation_chooses_the_noise_with_the_prior_precision() -> None:
    """Data with σ = 0.5, a Laplace started at σ = 0.2: on 4,000 validation points the joint
    grid picks the σ candidate nearest 0.5 (0.2·2^1.25 = 0.476; the next, 0.566, is 2.6 times
    farther in log σ and costs ~0.01 nats per point, 40 nats in all)."""
    generator = torch.Generator().manual_seed(3)
    weights = torch.tensor([[1.0, -2.0, 0.5]], dtype=torch.float64)
    x = torch.randn(4200, 3, generator=generator, dtype=torch.float64)
    y = x @ weights.T + 0.5 * torch.randn(4200, 1, generator=generator, dtype=torch.float64)
    model = nn.Linear(3, 1).double()
    with torch.no_grad():
        solution = torch.linalg.lstsq(torch.cat([x[:200], torch.ones(200, 1).double()], 1), y[:200])
        model.weight.copy_(solution.solution[:3].T)
        model.bias.copy_(solution.solution[3])
    posterior, _ = laplace(
        model, (x[:200], y[:200]), likelihood=_gaussian(0.2), subset="all", hessian="full",
        progress=False,
    )  # fmt: skip
    history = posterior.optimize_prior_precision("validation", validation=(x[200:], y[200:]))
    assert posterior.noise_std == pytest.approx(0.2 * 2**1.25, rel=1e-6)  # σ₀ = 0.2 in float32
    assert len(history.val_nll) == 41 * 13
    nll = -bnn.predict_with_uncertainty(posterior, x[200:]).log_likelihood(y[200:]).mean()
    assert float(nll) == pytest.approx(min(history.val_nll), rel=1e-9)


def test_same_seed_same_bits() -> None:
    model = _mlp(2)
    x, y = _data(20, 2, classify=False)
    posterior, _ = laplace(
        model, (x, y), likelihood=_gaussian(0.5), subset="all", hessian="diag", progress=False
    )
    a = posterior.sample_functions(x, 9, rng=5)
    b = posterior.sample_functions(x, 9, rng=5)
    c = posterior.sample_functions(x, 9, rng=6)
    assert torch.equal(a, b) and not torch.equal(a, c)
    draws = posterior.draws(4, x=x[:3], rng=1)
    assert draws.parameters["0.weight"].shape == (1, 4, 6, 2)
    assert draws.functions is not None and draws.functions.shape == (1, 4, 3, 2)
    assert isinstance(posterior, bnn.posterior.ParameterPosterior)


def test_bad_input_is_refused_with_a_clear_error() -> None:
    model = _mlp(2)
    x, y = _data(10, 2, classify=False)
    gaussian = _gaussian(1.0)
    with pytest.raises(ValueError, match="no parameter of the model matches"):
        laplace(model, (x, y), likelihood=gaussian, subset=["decoder"], progress=False)
    with pytest.raises(ValueError, match="supports bnn.Gaussian"):
        laplace(model, (x, y), likelihood=bnn.HeteroscedasticGaussian(), progress=False)
    with pytest.raises(ValueError, match="hessian must be"):
        laplace(model, (x, y), likelihood=gaussian, hessian="block", progress=False)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="positive"):
        laplace(model, (x, y), likelihood=gaussian, prior_precision=0.0, progress=False)
    with pytest.raises(ValueError, match="one value per layer"):
        laplace(
            model,
            (x, y),
            likelihood=gaussian,
            subset="all",
            prior_precision=[1.0, 2.0],
            progress=False,
        )
    normed = nn.Sequential(nn.Linear(2, 4), nn.LayerNorm(4), nn.Linear(4, 2)).double()
    with pytest.raises(ValueError, match="whole nn.Linear, nn.Conv1d or nn.Conv2d layers"):
        laplace(normed, (x, y), likelihood=gaussian, subset="all", hessian="kron", progress=False)

    class Tied(nn.Module):  # one layer applied twice: KFAC would see only the last call
        def __init__(self) -> None:
            super().__init__()
            self.layer = nn.Linear(2, 2).double()

        def forward(self, inputs: torch.Tensor) -> torch.Tensor:
            return self.layer(torch.tanh(self.layer(inputs)))  # type: ignore[no-any-return]

    for per_layer in ("kron", "diag"):
        with pytest.raises(ValueError, match="called more than once per forward pass"):
            laplace(Tied(), (x, y), likelihood=gaussian, subset="all", hessian=per_layer)  # type: ignore[arg-type]
    tied, _ = laplace(Tied(), (x, y), likelihood=gaussian, subset="all", hessian="full")
    assert tied.mean.shape == (6,)
    broken = _mlp(2)
    with torch.no_grad():
        broken[0].weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match="needs finite weights"):
        laplace(broken, (x, y), likelihood=gaussian, hessian="diag", subset="all", progress=False)
    # a rank-deficient curvature with a vanishing prior precision: singular in float64
    duplicate = torch.cat([x[:, :1], x[:, :1]], 1)
    layer = nn.Linear(2, 1, bias=False).double()
    with pytest.raises(ValueError, match="singular"):
        laplace(
            layer,
            (duplicate, y[:, :1]),
            likelihood=gaussian,
            subset="all",
            hessian="full",
            prior_precision=1e-300,
            progress=False,
        )
    posterior = GaussianPosterior(
        layer,
        ["weight"],
        torch.zeros(2, dtype=torch.float64),
        DiagonalFactor(torch.ones(2, dtype=torch.float64)),
        likelihood=bnn.Bernoulli(),
    )
    with pytest.raises(ValueError, match="bnn.Gaussian and bnn.Categorical"):
        posterior.predictive = "glm"


@pytest.mark.parametrize("classify", [False, True])
def test_the_factorised_linear_diagonal_equals_the_per_datum_jacobian_one(classify: bool) -> None:
    """Whole Linear layers take the factorised path; other layers the per-datum Jacobians."""
    from bnn.infer.laplace._curvature import CurvatureSums, accumulate_curvature

    model = _mlp(3)
    x, y = _data(12, 3, classify)
    likelihood = bnn.Categorical() if classify else _gaussian(1.0)
    names = [name for name, _ in model.named_parameters()]
    layers = [m for m in model.modules() if isinstance(m, nn.Linear)]
    factorised, per_datum = CurvatureSums(), CurvatureSums()
    accumulate_curvature(factorised, "diag", model, names, layers, likelihood, (x, y), 2**26)
    accumulate_curvature(per_datum, "diag", model, names, [], likelihood, (x, y), 2**26)
    assert factorised.diagonal is not None and per_datum.diagonal is not None
    torch.testing.assert_close(factorised.diagonal, per_datum.diagonal, rtol=RTOL, atol=1e-12)


# ---------------------------------------------------------------- convolutions (KFAC-expand)


def _conv_data(n: int, shape: tuple[int, ...], outputs: int, classify: bool, seed: int = 4):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, *shape, generator=generator, dtype=torch.float64)
    if classify:
        return x, torch.randint(0, outputs, (n,), generator=generator)
    return x, torch.randn(n, outputs, generator=generator, dtype=torch.float64)


def _weight_then_bias(matrix: Tensor, outputs: int, columns: int, bias: bool) -> Tensor:
    """Reorder a ``[out·in', out·in']`` matrix over ``W̃ = [W, b]`` (row-major) into bnn's flat
    order: the weight row-major, then the bias."""
    inputs = columns - int(bias)
    order = [o * columns + i for o in range(outputs) for i in range(inputs)]
    order += [o * columns + inputs for o in range(outputs)] if bias else []
    return matrix[order][:, order]


@pytest.mark.parametrize(
    ("conv", "shape"),
    [
        ((nn.Conv2d, {"kernel_size": (4, 5)}), (2, 4, 5)),  # the kernel covers the input: R = 1
        (
            (nn.Conv2d, {"kernel_size": (2, 3), "stride": 2, "padding": 1, "dilation": (1, 2)}),
            (2, 6, 7),
        ),  # R = 4·3: stride, padding, dilation
        pytest.param(  # an odd total padding: one more zero at the end
            (nn.Conv2d, {"kernel_size": (2, 4), "padding": "same", "bias": False}),
            (2, 5, 5),
            marks=pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel"),
        ),
        ((nn.Conv1d, {"kernel_size": 4, "padding": "same", "dilation": 2}), (2, 7)),
    ],
    ids=["one-location", "strided", "same", "conv1d"],
)
def test_kron_of_a_convolution_is_exact_for_gaussian_outputs(
    conv: tuple[type[nn.Conv1d | nn.Conv2d], dict[str, object]], shape: tuple[int, ...]
) -> None:
    """A convolution whose outputs are the network's outputs, under a Gaussian likelihood:
    ``g_{n,r}`` selects location ``r``'s ``C_out`` outputs, so ``g_{n,r}ᵀ g_{n,r'} = δ_{rr'} I``:
    no cross-location terms, ``G = R·I`` and ``A ⊗ G = Σ_{n,r} ã ãᵀ ⊗ I`` is the exact GGN.
    KFAC-expand then equals ``hessian="full"`` for any stride, padding and dilation."""
    with bnn.RNG(0).stream("init"):
        layer = conv[0](2, 3, **conv[1])
    model = nn.Sequential(layer, nn.Flatten()).double()
    x, _ = _conv_data(7, shape, 1, classify=False)
    with torch.no_grad():
        f = model(x)
    y = f + torch.randn(f.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    options = dict(
        likelihood=_gaussian(0.5),
        subset="all",
        prior_precision=0.7,
        batch_size=3,  # several batches
        progress=False,
    )
    full, full_history = laplace(model, (x, y), hessian="full", **options)
    kron, kron_history = laplace(model, (x, y), hessian="kron", **options)
    torch.testing.assert_close(
        kron.posterior_precision, full.posterior_precision, rtol=RTOL, atol=1e-9
    )
    torch.testing.assert_close(kron.covariance, full.covariance, rtol=RTOL, atol=1e-15)
    assert kron_history.log_marginal_likelihood == pytest.approx(
        full_history.log_marginal_likelihood, rel=1e-12
    )


def test_a_one_location_convolution_has_the_factors_of_the_linear_layer() -> None:
    """With ``R = 1`` the expand normalisation is the ``nn.Linear`` one, factor by factor."""
    conv = nn.Sequential(nn.Conv2d(2, 3, (2, 3)), nn.Tanh(), nn.Flatten(), nn.Linear(3, 2))
    conv = conv.double()
    linear = nn.Sequential(nn.Flatten(), nn.Linear(12, 3), nn.Tanh(), nn.Linear(3, 2)).double()
    with torch.no_grad():
        linear[1].weight.copy_(conv[0].weight.reshape(3, -1))
        linear[1].bias.copy_(conv[0].bias)
        linear[3].load_state_dict(conv[3].state_dict())
    x, y = _conv_data(6, (2, 2, 3), 2, classify=True)
    options = dict(likelihood=bnn.Categorical(), subset="all", hessian="kron", progress=False)
    from_conv, _ = laplace(conv, (x, y), **options)
    from_linear, _ = laplace(linear, (x, y), **options)
    for a, b in zip(
        from_conv.sums.factors_a + from_conv.sums.factors_g,
        from_linear.sums.factors_a + from_linear.sums.factors_g,
        strict=True,
    ):
        torch.testing.assert_close(a, b, rtol=RTOL, atol=1e-14)
    torch.testing.assert_close(from_conv.covariance, from_linear.covariance, rtol=RTOL, atol=1e-14)


@pytest.mark.parametrize("classify", [False, True])
def test_conv_factors_equal_the_kfac_expand_formula(classify: bool) -> None:
    """``A = Σ_n Σ_r ã_{n,r} ã_{n,r}ᵀ / R`` from ``F.unfold`` and
    ``G = Σ_n Σ_r g_{n,r}ᵀ H_n g_{n,r} / N`` from per-datum autograd Jacobians with respect to
    the convolution's output; the layer's precision block is ``δ I + G ⊗ A`` in flat order."""
    with bnn.RNG(0).stream("init"):
        model = nn.Sequential(
            nn.Conv2d(2, 3, 3, stride=2, padding=1), nn.Tanh(), nn.Flatten(), nn.Linear(27, 3)
        ).double()
    x, y = _conv_data(5, (2, 6, 5), 3, classify)
    patches = F.unfold(x, 3, padding=1, stride=2).transpose(1, 2)  # [N, R, 18]
    patches = torch.cat([patches, torch.ones_like(patches[..., :1])], -1)
    locations = patches.shape[1]  # R = 3·3
    expected_a = torch.einsum("nri,nrj->ij", patches, patches) / locations
    expected_g = torch.zeros(3, 3, dtype=torch.float64)
    for xi, yi in zip(x, y, strict=True):
        s = model[0](xi[None]).detach()
        g = autograd_jacobian(lambda s: model[1:](s)[0], s).reshape(3, 3, locations)  # [C, o, r]
        f = model(xi[None])[0].detach()
        h = (
            autograd_hessian(lambda z, yi=yi: -z.log_softmax(-1)[yi], f)
            if classify
            else torch.eye(3, dtype=torch.float64)
        )
        expected_g += torch.einsum("cor,cd,dpr->op", g, h, g) / x.shape[0]
    posterior, _ = laplace(
        model,
        (x, y),
        likelihood=bnn.Categorical() if classify else _gaussian(1.0),
        subset="all",
        hessian="kron",
        prior_precision=0.5,
        batch_size=2,
        progress=False,
    )
    sums = posterior.sums
    torch.testing.assert_close(sums.factors_a[0], expected_a, rtol=RTOL, atol=1e-12)
    torch.testing.assert_close(sums.factors_g[0] / sums.count, expected_g, rtol=RTOL, atol=1e-14)
    block = _weight_then_bias(torch.kron(expected_g, expected_a), 3, 19, bias=True)
    eye = torch.eye(block.shape[0], dtype=torch.float64)
    size = block.shape[0]  # 3·2·3·3 weights, then 3 biases
    torch.testing.assert_close(
        posterior.posterior_precision[:size, :size], block + 0.5 * eye, rtol=1e-8, atol=1e-9
    )


@pytest.mark.parametrize("classify", [False, True])
def test_kron_of_a_small_conv_net_is_near_the_full_ggn(classify: bool) -> None:
    """Conv2d(1, 2, 3) on 6×6 → ReLU → flatten → Linear, all layers, δ = 1: KFAC drops the
    cross-layer blocks and, in the convolution, the cross-location terms, so it is not exact.
    Measured (float64): log marginal likelihood -290.2 (kron) against -261.8 (full), and
    predictive variance ratios in [0.32, 0.77] (regression, σ = 0.3); -32.6 against -28.1 and
    [0.81, 0.97] (classification). That is the accuracy of whole-network KFAC on this size of
    model (``_mlp(2)`` on 20 inputs of ``_data`` gives -258.5 against -244.3 and ratios in
    [1.1, 2.3] for regression, -23.5 against -22.7 for classification); the bounds are 20 % of
    the log marginal likelihood and a factor 4 of the variance. The diagonal GGN is further
    from full in both cases (-338.4 and -42.5)."""
    with bnn.RNG(0).stream("init"):
        model = nn.Sequential(
            nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(32, 2)
        ).double()
    generator = torch.Generator().manual_seed(10)
    x = torch.randn(20, 1, 6, 6, generator=generator, dtype=torch.float64)
    y = (
        torch.randint(0, 2, (20,), generator=generator)
        if classify
        else torch.randn(20, 2, generator=generator, dtype=torch.float64)
    )
    x_test = torch.randn(6, 1, 6, 6, generator=generator, dtype=torch.float64)
    options = dict(
        likelihood=bnn.Categorical() if classify else _gaussian(0.3),
        subset="all",
        prior_precision=1.0,
        progress=False,
    )
    lml, variance = {}, {}
    for hessian in ("full", "kron", "diag"):
        posterior, history = laplace(model, (x, y), hessian=hessian, **options)
        lml[hessian] = history.log_marginal_likelihood
        variance[hessian] = posterior.functional_moments(x_test)[1].diagonal(dim1=-2, dim2=-1)
    assert abs(lml["kron"] - lml["full"]) < 0.2 * abs(lml["full"])
    ratio = variance["kron"] / variance["full"]
    assert bool(((ratio > 0.25) & (ratio < 4)).all())
    assert abs(lml["kron"] - lml["full"]) < abs(lml["diag"] - lml["full"])


def test_conv1d_kron_fits_and_predicts() -> None:
    """Conv1d layers (padding, stride) with a Linear head; ``"diag"`` on the same network falls
    back to per-datum Jacobians (its fast path is for whole Linear layers) and is exact."""
    with bnn.RNG(0).stream("init"):
        model = nn.Sequential(
            nn.Conv1d(2, 4, 3, padding=1),
            nn.ReLU(),
            nn.Conv1d(4, 2, 3, stride=2, bias=False),
            nn.Flatten(),
            nn.Linear(2 * 6, 3),
        ).double()
    x, y = _conv_data(9, (2, 13), 3, classify=True)
    kron, history = laplace(
        model, (x, y), likelihood=bnn.Categorical(), subset="all", hessian="kron", progress=False
    )
    assert kron.groups == ["0", "2", "4"]
    assert [a.shape[0] for a in kron.sums.factors_a] == [2 * 3 + 1, 4 * 3, 12 + 1]
    assert [g.shape[0] for g in kron.sums.factors_g] == [4, 2, 3]
    assert kron.variance.shape == (sum(p.numel() for p in model.parameters()),)
    assert math.isfinite(history.log_marginal_likelihood)
    prediction = bnn.predict_with_uncertainty(kron, x[:4], rng=0)
    assert isinstance(prediction, ClassificationPrediction)
    assert prediction.probs.shape == (4, 3) and bool(torch.isfinite(prediction.probs).all())
    assert kron.sample_functions(x[:4], 5, rng=0).shape == (5, 4, 3)
    options = dict(likelihood=bnn.Categorical(), subset="all", prior_precision=0.5, progress=False)
    full, _ = laplace(model, (x, y), hessian="full", **options)
    diag, _ = laplace(model, (x, y), hessian="diag", **options)
    torch.testing.assert_close(
        diag.variance,
        (full.posterior_precision.diagonal()).reciprocal(),
        rtol=RTOL,
        atol=0,
    )


@pytest.mark.parametrize(
    "options", [{"groups": 2}, {"padding": 1, "padding_mode": "reflect"}], ids=["groups", "reflect"]
)
def test_kron_refuses_convolutions_it_cannot_factor(options: dict) -> None:
    model = nn.Sequential(nn.Conv2d(2, 2, 3, **options), nn.Flatten()).double()
    x = torch.randn(3, 2, 5, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    y = model(x).detach()
    with pytest.raises(ValueError, match="groups=1 and padding_mode='zeros'.*hessian='diag'"):
        laplace(
            model, (x, y), likelihood=_gaussian(1.0), subset="all", hessian="kron", progress=False
        )
    posterior, _ = laplace(  # the other structures take any layer
        model, (x, y), likelihood=_gaussian(1.0), subset="all", hessian="diag", progress=False
    )
    assert bool(torch.isfinite(posterior.variance).all())
