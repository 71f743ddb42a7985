"""NUTS, SVI and SG-MCMC against closed-form Bayesian linear regression; SampleSet behaviour."""

from __future__ import annotations

import math
from pathlib import Path

import pyro
import pyro.optim
import pytest
import torch
from torch import nn
from torch.func import functional_call

import bnn
import bnn.infer
from tests.oracles import (
    batch_means_mcse,
    linear_gaussian_posterior,
    linear_regression_data,
    sghmc_stationary_covariance,
    sgld_stationary_covariance,
    split_rhat,
)


def _blr(n: int, d: int, noise: float, seed: int = 0):  # type: ignore[no-untyped-def]
    x, y, _ = linear_regression_data(n, d, noise, seed=seed)
    return (
        x,
        y.unsqueeze(-1),
        linear_gaussian_posterior(x, y, noise, 1.0),
        nn.Linear(d, 1, bias=False).double(),
    )


@pytest.mark.parametrize(
    ("backend", "jit_compile"), [("bnn", False), ("bnn", True), ("pyro", False)]
)
def test_nuts_matches_closed_form_posterior_and_mixes(backend: str, jit_compile: bool) -> None:
    """Mean within 5 MCSE and covariance within 5 MCSE of the exact posterior (d = 5, 4 chains).

    ``jit_compile`` with the lock-step backend runs the torch.compile'd vmapped gradient.
    """
    x, y, exact, layer = _blr(50, 5, 1.0)
    samples, history = bnn.infer.nuts(
        layer,
        x,
        y,
        likelihood=bnn.Gaussian(1.0),
        num_chains=4,
        warmup=200,
        draws=400,
        backend=backend,
        jit_compile=jit_compile,
        rng=0,
        progress=False,
    )
    w = samples.samples["weight"].reshape(4, 400, 5)
    assert samples.num_chains == 4 and samples.num_draws == 400
    assert (split_rhat(w) < 1.01).all(), split_rhat(w)
    flat = w.reshape(-1, 5)
    mean_mcse = torch.stack([batch_means_mcse(w[c]) for c in range(4)]).pow(2).mean(0).sqrt() / 2
    assert ((flat.mean(0) - exact.mean).abs() < 5 * mean_mcse).all()
    centred = flat - exact.mean
    outer = centred.unsqueeze(-1) * centred.unsqueeze(-2)  # unbiased for Σ given the exact mean
    outer_by_chain = outer.reshape(4, 400, 5, 5)
    cov_mcse = (
        torch.stack([batch_means_mcse(outer_by_chain[c]) for c in range(4)]).pow(2).mean(0).sqrt()
        / 2
    )
    assert ((outer.mean(0) - exact.covariance).abs() < 5 * cov_mcse).all()
    assert history.divergences == [0, 0, 0, 0]
    stats = samples.sample_stats
    assert set(stats) == {"step_size", "n_steps", "tree_depth", "acceptance_rate", "diverging"}
    assert 0.6 < float(stats["acceptance_rate"].mean()) <= 1.0


def test_chains_are_reproducible_distinct_and_independent_of_chain_count() -> None:
    """Also the per-draw statistics: lock-step chains stop subtrees at different times."""
    x, y, _, layer = _blr(20, 3, 1.0)

    def run(chains: int, seed: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        samples, _ = bnn.infer.nuts(
            layer,
            x,
            y,
            likelihood=bnn.Gaussian(1.0),
            num_chains=chains,
            warmup=30,
            draws=20,
            rng=seed,
            progress=False,
        )
        return samples.samples["weight"], samples.sample_stats

    three, stats = run(3, 0)
    assert torch.equal(three, run(3, 0)[0])
    assert not torch.equal(three[0], three[1])
    one, one_stats = run(1, 0)
    assert torch.equal(one[0], three[0])
    for name in ("acceptance_rate", "n_steps", "tree_depth", "diverging"):
        assert torch.equal(one_stats[name][0], stats[name][0]), name
    assert not torch.equal(run(3, 1)[0], three)


def test_hmc_runs_and_reports_stats() -> None:
    x, y, exact, layer = _blr(30, 2, 1.0)
    samples, history = bnn.infer.hmc(
        layer,
        x,
        y,
        likelihood=bnn.Gaussian(1.0),
        num_chains=2,
        warmup=100,
        draws=200,
        trajectory_length=1.0,
        rng=0,
        progress=False,
    )
    assert samples.samples["weight"].shape == (2, 200, 1, 2)
    step = samples.sample_stats["step_size"]
    assert (samples.sample_stats["n_steps"] == torch.ceil(1.0 / step).long()).all()
    # Mean of 2 chains x 200 draws within 5 batch-means MCSE of the exact posterior mean.
    w = samples.samples["weight"].reshape(2, 200, 2)
    mcse = torch.stack([batch_means_mcse(w[c]) for c in range(2)]).pow(2).mean(0).sqrt() / 2**0.5
    assert ((w.reshape(-1, 2).mean(0) - exact.mean).abs() < 5 * mcse).all()
    assert len(history.seconds) == 2


@pytest.mark.parametrize("guide", ["mvn", pytest.param("lowrank", marks=pytest.mark.slow)])
def test_svi_full_rank_guides_match_closed_form_mean_and_covariance(guide: str) -> None:
    """Guide mean within 0.1 posterior sd, stds within 10%, correlations within 0.1.

    These bounds are 4-5x the optimisation noise measured for this schedule (decaying
    ClippedAdam, 4 particles); a missing N/|B| or prior term moves the stds by far more.
    """
    x, y, exact, layer = _blr(20, 4, 2.0)
    posterior, history = bnn.infer.svi(
        layer,
        x,
        y,
        likelihood=bnn.Gaussian(2.0),
        guide=guide,
        steps=1500,
        num_particles=4,
        optimizer=pyro.optim.ClippedAdam({"lr": 0.05, "lrd": 0.01 ** (1 / 1500)}),
        rng=0,
        progress=False,
    )
    draws = posterior.sample_weights(20_000, rng=1)["weight"].reshape(-1, 4)
    sd = exact.covariance.diagonal().sqrt()
    assert ((draws.mean(0) - exact.mean).abs() < 0.1 * sd).all()
    assert ((draws.std(0) / sd - 1).abs() < 0.1).all()
    exact_corr = exact.covariance / torch.outer(sd, sd)
    assert (torch.corrcoef(draws.T) - exact_corr).abs().max() < 0.1
    assert len(history.loss) == 1500


@pytest.mark.slow
def test_svi_mean_field_matches_mean_field_optimum() -> None:
    x, y, exact, layer = _blr(20, 4, 2.0)
    posterior, _ = bnn.infer.svi(
        layer,
        x,
        y,
        likelihood=bnn.Gaussian(2.0),
        guide="normal",
        steps=1500,
        num_particles=4,
        optimizer=pyro.optim.ClippedAdam({"lr": 0.05, "lrd": 0.01 ** (1 / 1500)}),
        rng=0,
        progress=False,
    )
    draws = posterior.sample_weights(20_000, rng=1)["weight"].reshape(-1, 4)
    assert ((draws.mean(0) - exact.mean).abs() < 0.1 * exact.mean_field_std).all()
    assert ((draws.std(0) / exact.mean_field_std - 1).abs() < 0.1).all()


def test_svi_leaves_the_param_store_alone_and_minibatches() -> None:
    pyro.clear_param_store()
    pyro.param("user_parameter", torch.ones(2))
    x, y, _, layer = _blr(40, 2, 1.0)
    posterior, history = bnn.infer.svi(
        layer, x, y, likelihood=bnn.Gaussian(1.0), epochs=3, batch_size=10, rng=0, progress=False
    )
    assert list(pyro.get_param_store().keys()) == ["user_parameter"]
    assert history.epoch == [0] * 4 + [1] * 4 + [2] * 4
    assert posterior.sample_functions(x[:5], 6, rng=0).shape == (6, 5, 1)
    assert posterior.to_sample_set(8, rng=0).num_samples == 8
    pyro.clear_param_store()


@pytest.mark.parametrize("method", ["sgld", "sghmc"])
def test_sgmcmc_matches_the_exact_stationary_law_of_its_discretisation(method: str) -> None:
    """Full-batch SG-MCMC on a Gaussian target has a known Gaussian stationary law.

    Its mean is the posterior mean and its covariance solves a discrete Lyapunov equation
    (tests/oracles.py); both are checked within 5 batch-means MCSE. That covariance is within
    a few percent of the exact posterior's for these steps, and equals it as ε → 0.
    """
    x, y, exact, layer = _blr(20, 4, 2.0)
    if method == "sgld":
        samples, _ = bnn.infer.sgld(
            layer,
            x,
            y,
            likelihood=bnn.Gaussian(2.0),
            lr=0.02,
            steps=12_000,
            burn_in=1000,
            thin=1,
            rng=0,
            progress=False,
        )
        target = sgld_stationary_covariance(exact, 0.02)
    else:
        samples, _ = bnn.infer.sghmc(
            layer,
            x,
            y,
            likelihood=bnn.Gaussian(2.0),
            lr=0.005,
            friction=0.1,
            steps=12_000,
            burn_in=1000,
            thin=1,
            rng=0,
            progress=False,
        )
        target = sghmc_stationary_covariance(exact, 0.005, 0.1)
    w = samples.flat()["weight"].reshape(-1, 4)
    assert ((w.mean(0) - exact.mean).abs() < 5 * batch_means_mcse(w)).all()
    squares = (w - exact.mean) ** 2
    assert ((squares.mean(0) - target.diagonal()).abs() < 5 * batch_means_mcse(squares)).all()
    assert ((target.diagonal() / exact.covariance.diagonal() - 1).abs() < 0.1).all()


def test_sgmcmc_minibatch_cyclical_and_reproducible() -> None:
    x, y, exact, layer = _blr(40, 2, 1.0)
    options = dict(
        likelihood=bnn.Gaussian(1.0),
        lr=0.01,
        steps=800,
        thin=5,
        batch_size=10,
        num_chains=2,
        schedule="cyclical",
        cycles=4,
        rng=3,
        progress=False,
    )
    first, history = bnn.infer.sghmc(layer, x, y, **options)
    second, _ = bnn.infer.sghmc(layer, x, y, **options)
    assert torch.equal(first.samples["weight"], second.samples["weight"])
    assert first.num_chains == 2 and first.num_draws == 80  # half of each 200-step cycle, every 5th
    assert len(history.potential[0]) == 800
    # Cyclical mini-batch SGHMC is biased (exploration stages, gradient noise): this checks
    # only that the draws sit in the posterior bulk, within 3 exact posterior sds of the mean.
    sd = exact.covariance.diagonal().sqrt()
    assert ((first.flat()["weight"].mean(0).flatten() - exact.mean).abs() < 3 * sd).all()


def test_toy_bnn_predict_on_sample_set_equals_per_draw_loop() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(1, 8), nn.Tanh(), nn.Linear(8, 1))
    x = torch.linspace(-1, 1, 20).unsqueeze(-1)
    y = torch.sin(3 * x)
    samples, _ = bnn.infer.nuts(
        net,
        x,
        y,
        likelihood=bnn.Gaussian(0.1),
        num_chains=2,
        warmup=30,
        draws=20,
        max_tree_depth=5,
        rng=0,
        progress=False,
    )
    grid = torch.linspace(-2, 2, 9).unsqueeze(-1)
    prediction = bnn.predict_with_uncertainty(
        samples, grid, num_samples=1000, likelihood=bnn.Gaussian(0.1)
    )
    flat = samples.flat()
    reference = torch.stack(
        [functional_call(net, {k: v[s] for k, v in flat.items()}, (grid,)) for s in range(40)]
    )
    torch.testing.assert_close(prediction.samples, reference)


@pytest.mark.slow
def test_nuts_toy_bnn_predictive_std_grows_away_from_data() -> None:
    """1-50-1 tanh BNN by NUTS (the issue's toy problem, shortened)."""
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(100, 1, generator=generator) * 2 - 1
    y = torch.sin(3 * x) + 0.1 * torch.randn(100, 1, generator=generator)
    with bnn.RNG(0).stream("init"):
        net = nn.Sequential(nn.Linear(1, 50), nn.Tanh(), nn.Linear(50, 1))
    samples, _ = bnn.infer.nuts(
        net,
        x,
        y,
        likelihood=bnn.Gaussian(0.1),
        num_chains=2,
        warmup=150,
        draws=100,
        rng=0,
        progress=False,
    )
    inside = bnn.predict_with_uncertainty(
        samples, torch.linspace(-0.8, 0.8, 20).unsqueeze(-1), num_samples=200
    )
    outside = bnn.predict_with_uncertainty(samples, torch.tensor([[-3.0], [3.0]]), num_samples=200)
    assert float(outside.std.min()) > 3 * float(inside.std.max())


def test_sample_set_save_load_thin_select(tmp_path: Path) -> None:
    net = nn.Linear(2, 1)
    samples = bnn.SampleSet(
        net,
        {"weight": torch.randn(3, 10, 1, 2), "bias": torch.randn(3, 10, 1)},
        sample_stats={"diverging": torch.zeros(3, 10, dtype=torch.bool)},
    )
    samples.save(tmp_path / "s.pt")
    loaded = bnn.SampleSet.load(tmp_path / "s.pt", net)
    assert torch.equal(loaded.samples["weight"], samples.samples["weight"])
    assert torch.equal(loaded.sample_stats["diverging"], samples.sample_stats["diverging"])
    assert samples.thin(3).num_draws == 4
    assert samples.select(chains=[0, 2], draws=slice(5, None)).samples["bias"].shape == (2, 5, 1)
    x = torch.randn(4, 2)
    assert bnn.predict_with_uncertainty(samples, x, num_samples=7, rng=0).samples.shape == (7, 4, 1)
    assert bnn.predict_with_uncertainty(samples, x, num_samples=100).samples.shape == (30, 4, 1)


def test_sample_set_file_without_format_is_rejected(tmp_path: Path) -> None:
    torch.save({"weight": torch.zeros(1)}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="not a bnn SampleSet"):
        bnn.SampleSet.load(tmp_path / "bad.pt", nn.Linear(2, 1))


@pytest.mark.parametrize(
    "samples, match",
    [
        ({"nope": torch.zeros(1, 1, 1)}, "not a parameter"),
        ({"weight": torch.zeros(1, 1, 3, 3)}, "parameter shape"),
        ({"weight": torch.zeros(1, 2)}, "parameter shape"),
        ({"weight": torch.full((1, 1, 1, 2), float("nan"))}, "NaN"),
        ({}, "non-empty"),
    ],
)
def test_sample_set_rejects_bad_samples(samples: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        bnn.SampleSet(nn.Linear(2, 1), samples)


@pytest.mark.parametrize(
    "kwargs, data, error, match",
    [
        (
            {},
            (torch.randn(5, 2), torch.tensor([[1.0], [float("nan")], [0.0], [0.0], [0.0]])),
            ValueError,
            "NaN",
        ),
        ({"num_chains": 0}, None, ValueError, "num_chains"),
        ({"warmup": -1}, None, ValueError, "warmup"),
        ({}, (torch.randn(5, 2), torch.randn(4, 1)), ValueError, "same number of rows"),
        (
            {"likelihood": bnn.Gaussian(1.0, learn_std=True)},
            None,
            ValueError,
            "fixed observation noise",
        ),
        ({"target_accept": 1.5}, None, ValueError, "target_accept"),
    ],
)
def test_nuts_bad_input(kwargs: dict, data, error, match) -> None:  # type: ignore[no-untyped-def]
    x, y = data if data is not None else (torch.randn(5, 2), torch.randn(5, 1))
    options = {"likelihood": bnn.Gaussian(1.0), "progress": False, **kwargs}
    with pytest.raises(error, match=match):
        bnn.infer.nuts(nn.Linear(2, 1), x, y, **options)


def test_divergences_are_reported() -> None:
    x, y, _, layer = _blr(20, 2, 0.01)  # a very narrow posterior
    samples, history = bnn.infer.hmc(
        layer,
        x,
        y,
        likelihood=bnn.Gaussian(0.01),
        num_chains=1,
        warmup=0,
        draws=20,
        step_size=1.0,
        trajectory_length=5.0,
        rng=0,
        progress=False,
    )
    assert history.divergences[0] > 0
    assert int(samples.sample_stats["diverging"].sum()) == history.divergences[0]


def test_bayesianized_model_samples_its_weights_with_its_priors() -> None:
    net = bnn.bayesianize(
        nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 1)),
        prior=bnn.nn.priors.Normal(0.0, 0.5),
    )
    log_joint = bnn.infer._log_joint.LogJoint(net, bnn.Gaussian(1.0))
    assert set(log_joint.priors) == {
        "0.module.weight",
        "0.module.bias",
        "2.module.weight",
        "2.module.bias",
    }
    assert all(p.std == 0.5 for p in log_joint.priors.values())  # type: ignore[attr-defined]
    x, y = torch.randn(10, 2), torch.randn(10, 1)
    samples, _ = bnn.infer.nuts(
        net,
        x,
        y,
        likelihood=bnn.Gaussian(1.0),
        num_chains=1,
        warmup=10,
        draws=5,
        rng=0,
        progress=False,
    )
    assert bnn.predict_with_uncertainty(samples, x).samples.shape == (5, 10, 1)
    assert math.isfinite(float(samples.samples["0.module.weight"].sum()))


def test_lock_step_backend_rejects_pyro_only_options() -> None:
    x, y, _, layer = _blr(10, 2, 1.0)
    with pytest.raises(ValueError, match="backend='pyro'"):
        bnn.infer.nuts(layer, x, y, likelihood=bnn.Gaussian(1.0), full_mass=True, progress=False)
    with pytest.raises(ValueError, match="backend must be"):
        bnn.infer.nuts(layer, x, y, likelihood=bnn.Gaussian(1.0), backend="stan", progress=False)
