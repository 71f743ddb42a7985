"""SWAG against the exact stationary law of constant-step SGD; its Gaussian; seeds; bad input."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, RandomSampler, TensorDataset

import bnn
from bnn.infer.ensembles.swag import SWAGPosterior, multi_swag, swag
from bnn.posterior._covariance import DiagonalFactor, LowRankFactor
from bnn.posterior.gaussian import GaussianMixturePosterior, GaussianPosterior


def sgd_stationary_covariance(x: Tensor, y: Tensor, w: Tensor, step: float) -> Tensor:
    """Exact stationary covariance of single-example SGD on ``½(xᵢᵀw − yᵢ)²``, ``i`` uniform.

    With ``e = w − w*`` (``w*`` the least-squares solution), ``e' = M_i e − η r_i x_i`` with
    ``M_i = I − η x_i x_iᵀ`` and ``r_i = x_iᵀw* − y_i``; ``E_i[r_i x_i] = 0`` and ``e`` is
    independent of the fresh ``i``, so ``Σ = E_i[M_i Σ M_iᵀ] + η² E_i[r_i² x_i x_iᵀ]`` — a
    generalised discrete Lyapunov equation, solved exactly by vectorisation.
    """
    d = x.shape[1]
    eye = torch.eye(d, dtype=x.dtype)
    m = eye - step * torch.einsum("ni,nj->nij", x, x)
    expected_kron = torch.stack([torch.kron(mi, mi) for mi in m]).mean(0)
    residual = x @ w - y
    q = step**2 * torch.einsum("n,ni,nj->ij", residual**2, x, x) / x.shape[0]
    vec = torch.linalg.solve(torch.eye(d * d, dtype=x.dtype) - expected_kron, q.reshape(-1))
    return vec.reshape(d, d)


@pytest.mark.parametrize("steps", [pytest.param(4000, marks=pytest.mark.slow), 1500])
def test_collected_moments_match_the_stationary_law_of_sgd(steps: int) -> None:
    """Mean, Σ_diag and the low-rank covariance of 8 independent runs against the Lyapunov
    solution, each within 5 standard errors of the mean over runs (t with 7 dof: the test
    fails by chance with probability < 0.002 per entry)."""
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(50, 2, generator=generator, dtype=torch.float64)
    y = x @ torch.tensor([1.0, -0.5], dtype=torch.float64) + 0.7 * torch.randn(
        50, generator=generator, dtype=torch.float64
    )
    w_star = torch.linalg.lstsq(x, y).solution
    step = 0.05
    target = sgd_stationary_covariance(x, y, w_star, step)
    layer = nn.Linear(2, 1, bias=False).double()
    with torch.no_grad():
        layer.weight.copy_(w_star[None])
    dataset = TensorDataset(x, y[:, None])
    sampler = RandomSampler(dataset, replacement=True, num_samples=1, generator=generator)
    loader = DataLoader(dataset, batch_size=1, sampler=sampler)  # one step per "epoch"
    mixture, _ = multi_swag(
        layer,
        loader,
        likelihood=bnn.Gaussian(1.0),
        num_runs=8,
        epochs=steps + 200,
        burn_in=200,
        lr=step,
        momentum=0.0,
        rank=steps,
        scale=1.0,
        rng=0,
        progress=False,
    )
    runs = [c for c in mixture.components if isinstance(c, SWAGPosterior)]
    means = torch.stack([run.moments.mean for run in runs])
    variances = torch.stack([run.moments.variance for run in runs])
    low_rank = torch.stack(
        [
            torch.stack(list(run.moments.deviations), 1)
            @ torch.stack(list(run.moments.deviations), 1).T
            / (steps - 1)
            for run in runs
        ]
    )

    def within(values: Tensor, expected: Tensor) -> bool:
        se = values.std(0) / math.sqrt(values.shape[0])
        return bool(((values.mean(0) - expected).abs() < 5 * se).all())

    assert within(means, w_star)
    assert within(variances, target.diagonal())
    assert within(low_rank.reshape(8, -1), target.reshape(-1))
    # the collected law is SGD's, not the posterior's: the test can tell them apart
    assert (target.diagonal() > 0).all() and not within(variances, 2 * target.diagonal())


def test_low_rank_plus_diagonal_samples_have_the_claimed_covariance() -> None:
    generator = torch.Generator().manual_seed(1)
    variance = torch.rand(4, generator=generator, dtype=torch.float64) + 0.1
    deviations = torch.randn(4, 3, generator=generator, dtype=torch.float64)
    factor = LowRankFactor(variance, deviations, scale=0.5)
    claimed = 0.5 * (torch.diag(variance) + deviations @ deviations.T / 2)
    torch.testing.assert_close(factor.dense(), claimed, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(factor.variance(), claimed.diagonal(), rtol=1e-12, atol=0)
    layer = nn.Linear(4, 1, bias=False).double()
    mean = torch.arange(4, dtype=torch.float64)
    posterior = GaussianPosterior(layer, ["weight"], mean, factor)
    s = 40_000
    draws = posterior.sample_flat(s, rng=0)
    centred = draws - mean
    sample_covariance = centred.T @ centred / s
    # the sd of a Gaussian sample covariance entry: sqrt((Σ_ii Σ_jj + Σ_ij²) / S)
    se = ((claimed.diagonal()[:, None] * claimed.diagonal()[None] + claimed**2) / s).sqrt()
    assert ((sample_covariance - claimed).abs() < 5 * se).all()
    assert ((draws.mean(0) - mean).abs() < 5 * (claimed.diagonal() / s).sqrt()).all()
    # function samples are these draws pushed through the layer
    x = torch.randn(3, 4, generator=generator, dtype=torch.float64)
    functions = posterior.sample_functions(x, 5, rng=0)
    first = posterior.sample_flat(5, rng=0)
    torch.testing.assert_close(functions, (first @ x.T).unsqueeze(-1), rtol=1e-12, atol=1e-12)


def _net() -> nn.Module:
    with bnn.RNG(0).stream("init"):
        return nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 1)).double()


def _data() -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(2)
    x = torch.randn(64, 2, generator=generator, dtype=torch.float64)
    return x, torch.sin(x[:, :1]) + 0.1 * torch.randn(
        64, 1, generator=generator, dtype=torch.float64
    )


def test_swag_is_reproducible_leaves_the_model_alone_and_predicts() -> None:
    net, (x, y) = _net(), _data()
    before = copy.deepcopy(net.state_dict())
    options = dict(
        likelihood=bnn.Gaussian(0.1), epochs=12, lr=0.01, rank=5, batch_size=16, progress=False
    )
    a, history = swag(net, (x, y), rng=0, **options)
    b, _ = swag(net, (x, y), rng=0, **options)
    c, _ = swag(net, (x, y), rng=1, **options)
    assert history.collected == 12 and len(history.loss) == 12
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in before.items())
    assert torch.equal(a.mean, b.mean) and not torch.equal(a.mean, c.mean)
    assert torch.equal(a.sample_functions(x, 7, rng=3), b.sample_functions(x, 7, rng=3))
    assert not torch.equal(a.sample_functions(x, 7, rng=3), a.sample_functions(x, 7, rng=4))
    prediction = bnn.predict_with_uncertainty(a, x[:5], likelihood=bnn.Gaussian(0.1), rng=0)
    assert prediction.samples.shape == (100, 5, 1) and (prediction.epistemic > 0).all()
    assert isinstance(a, bnn.posterior.ParameterPosterior)
    draws = a.draws(3, x=x[:2], rng=0)
    assert draws.parameters["0.weight"].shape == (1, 3, 8, 2)
    diagonal, _ = swag(net, (x, y), rng=0, diagonal_only=True, **options)
    torch.testing.assert_close(diagonal.variance, 0.5 * a.moments.variance)
    # rescaling after the run equals running with that scale (the moments do not depend on it)
    scaled, _ = swag(net, (x, y), rng=0, scale=8.0, **options)
    a.scale = 8.0
    assert a.scale == 8.0
    torch.testing.assert_close(a.factor.dense(), scaled.factor.dense(), rtol=0, atol=0)
    assert torch.equal(a.sample_functions(x, 7, rng=3), scaled.sample_functions(x, 7, rng=3))
    diagonal.scale = 1.0
    torch.testing.assert_close(diagonal.variance, diagonal.moments.variance)
    with pytest.raises(ValueError, match="scale"):
        a.scale = 0.0


def test_multi_swag_is_a_reproducible_mixture() -> None:
    net, (x, y) = _net(), _data()
    options = dict(
        likelihood=bnn.Gaussian(0.1),
        epochs=6,
        lr=0.01,
        rank=3,
        batch_size=16,
        num_runs=3,
        progress=False,
    )
    mixture, history = multi_swag(net, (x, y), rng=0, **options)
    again, _ = multi_swag(net, (x, y), rng=0, **options)
    assert isinstance(mixture, GaussianMixturePosterior) and len(history.chains) == 3
    assert not torch.equal(mixture.components[0].mean, mixture.components[1].mean)
    samples = mixture.sample_functions(x[:4], 7, rng=0)
    assert samples.shape == (7, 4, 1)
    assert torch.equal(samples, again.sample_functions(x[:4], 7, rng=0))


def test_multi_swag_from_independent_networks_evaluates_each_through_its_own() -> None:
    """MultiSWAG of the paper: run ``i`` continues from network ``i``; draw ``j`` of the
    mixture comes from component ``j mod M`` and is evaluated through that component's
    network (which matters where the networks differ outside the selected parameters)."""
    x, y = _data()
    networks = []
    for seed in range(3):
        with bnn.RNG(seed).stream("init"):
            networks.append(nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 1)).double())
    before = [copy.deepcopy(n.state_dict()) for n in networks]
    options = dict(likelihood=bnn.Gaussian(0.1), epochs=6, lr=0.01, rank=3, batch_size=16)
    mixture, history = multi_swag(networks, (x, y), rng=0, progress=False, **options)
    assert len(history.chains) == 3
    assert [c.model for c in mixture.components] == networks
    for network, state in zip(networks, before, strict=True):
        for name, value in network.state_dict().items():
            assert torch.equal(value, state[name])
    single, _ = swag(networks[1], (x, y), rng=bnn.RNG(0).spawn(1), progress=False, **options)
    torch.testing.assert_close(mixture.components[1].mean, single.mean, rtol=0, atol=0)

    # Last layer only: the first layer stays each network's own, so the network matters.
    last = [
        GaussianPosterior(
            n,
            ["2.weight", "2.bias"],
            c.mean[-9:],
            DiagonalFactor(torch.full((9,), 1e-2, dtype=torch.float64)),
        )
        for n, c in zip(networks, mixture.components, strict=True)
    ]
    last_layer_mixture = GaussianMixturePosterior(last)
    samples = last_layer_mixture.sample_functions(x[:5], 7, rng=4)
    flat = last_layer_mixture.sample_flat(7, rng=4)
    for j in range(7):
        component = last[j % 3]
        expected = component.evaluate(flat[j : j + 1], x[:5], 2**20)[0]
        torch.testing.assert_close(samples[j], expected, rtol=0, atol=0)
    draws = last_layer_mixture.draws(7, x=x[:5], rng=4)
    assert draws.functions is not None
    torch.testing.assert_close(draws.functions[0], samples, rtol=0, atol=0)


def test_multi_swag_and_mixtures_refuse_mismatched_networks() -> None:
    x, y = _data()
    options = dict(likelihood=bnn.Gaussian(0.1), epochs=2, lr=0.01, rank=2, progress=False)
    with pytest.raises(ValueError, match="one run per network"):
        multi_swag([_net(), _net()], (x, y), num_runs=3, **options)
    with pytest.raises(TypeError, match="sequence of nn.Modules"):
        multi_swag([], (x, y), **options)
    small = nn.Sequential(nn.Linear(2, 4), nn.Tanh(), nn.Linear(4, 1)).double()
    a, _ = swag(_net(), (x, y), **options)
    b, _ = swag(small, (x, y), **options)
    with pytest.raises(ValueError, match="same names and shapes"):
        GaussianMixturePosterior([a, b])


def test_batchnorm_statistics_are_recomputed_for_every_sample() -> None:
    with bnn.RNG(0).stream("init"):
        net = nn.Sequential(nn.Linear(2, 4), nn.BatchNorm1d(4), nn.Tanh(), nn.Linear(4, 1)).double()
    x, y = _data()
    posterior, _ = swag(
        net,
        (x, y),
        likelihood=bnn.Gaussian(0.1),
        epochs=4,
        lr=0.01,
        rank=2,
        batch_size=16,
        rng=0,
        progress=False,
    )
    draws = posterior.sample_parameters(2, rng=5)
    functions = posterior.sample_functions(x[:3], 2, rng=5)
    for s in range(2):
        weights = {k: v[0, s] for k, v in draws.items()}
        hidden = x @ weights["0.weight"].T + weights["0.bias"]  # all 64 inputs: one block
        normed = (hidden[:3] - hidden.mean(0)) / (hidden.var(0) + 1e-5).sqrt()
        out = torch.tanh(normed * weights["1.weight"] + weights["1.bias"])
        expected = out @ weights["3.weight"].T + weights["3.bias"]
        torch.testing.assert_close(functions[s], expected)


def test_bad_input_is_refused_before_training() -> None:
    net, data = _net(), _data()
    gaussian = bnn.Gaussian(0.1)
    with pytest.raises(ValueError, match="collect 5 models .* needs at least 20"):
        swag(net, data, likelihood=gaussian, epochs=5, lr=0.01, rank=20, progress=False)
    with pytest.raises(ValueError, match="collect 3 models"):
        swag(
            net,
            data,
            likelihood=gaussian,
            epochs=10,
            lr=0.01,
            rank=4,
            burn_in=4,
            collect_every=2,
            progress=False,
        )
    with pytest.raises(ValueError, match="rank"):
        swag(net, data, likelihood=gaussian, epochs=10, lr=0.01, rank=1, progress=False)
    with pytest.raises(ValueError, match="lr"):
        swag(net, data, likelihood=gaussian, epochs=10, lr=0.0, rank=2, progress=False)
    with pytest.raises(TypeError, match="likelihood"):
        swag(net, data, likelihood="gaussian", epochs=10, lr=0.01, rank=2, progress=False)  # type: ignore[arg-type]
    linear = nn.Linear(2, 1).double()
    with pytest.raises(bnn.infer.NonFiniteLossError, match="lower lr"):
        swag(
            linear,
            data,
            likelihood=gaussian,
            epochs=10,
            lr=1e30,
            rank=2,
            momentum=0.0,
            progress=False,
        )
