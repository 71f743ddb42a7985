"""NUTS (both backends) against closed-form Bayesian linear regression; chains, priors, errors."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import bnn
import bnn.infer
from tests.oracles import (
    batch_means_mcse,
    blr_problem,
    clearly_larger,
    split_rhat,
    std_mcse,
)


@pytest.mark.parametrize(
    ("backend", "jit_compile"), [("bnn", False), ("bnn", True), ("pyro", False)]
)
def test_nuts_matches_closed_form_posterior_and_mixes(backend: str, jit_compile: bool) -> None:
    """Mean within 5 MCSE and covariance within 5 MCSE of the exact posterior (d = 5, 4 chains).

    ``jit_compile`` with the lock-step backend runs the compiled leaf (gradient + tree).
    """
    x, y, exact, layer = blr_problem(50, 5, 1.0)
    samples, history = bnn.infer.nuts(
        layer,
        (x, y),
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
    assert history.per_chain("divergences") == [0, 0, 0, 0]
    stats = samples.sample_stats
    assert set(stats) == {"step_size", "n_steps", "tree_depth", "acceptance_rate", "diverging"}
    assert 0.6 < float(stats["acceptance_rate"].mean()) <= 1.0


def test_chains_are_reproducible_distinct_and_independent_of_chain_count() -> None:
    """Also the per-draw statistics: lock-step chains stop subtrees at different times."""
    x, y, _, layer = blr_problem(20, 3, 1.0)

    def run(chains: int, seed: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        samples, _ = bnn.infer.nuts(
            layer,
            (x, y),
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


def test_compiled_chains_are_reproducible_and_seed_dependent() -> None:
    """``jit_compile=True``: the same seed gives the same bits, another seed other draws (the
    setting of the closed-form test, so its compiled graph is reused in this process)."""
    x, y, _, layer = blr_problem(50, 5, 1.0)

    def run(seed: int) -> torch.Tensor:
        samples, _ = bnn.infer.nuts(
            layer,
            (x, y),
            likelihood=bnn.Gaussian(1.0),
            num_chains=4,
            warmup=20,
            draws=10,
            jit_compile=True,
            rng=seed,
            progress=False,
        )
        return samples.samples["weight"]

    first = run(0)
    assert torch.equal(first, run(0))
    assert not torch.equal(first, run(1))


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
        (x, y),
        likelihood=bnn.Gaussian(0.1),
        num_chains=2,
        warmup=150,
        draws=100,
        rng=0,
        progress=False,
        jit_compile=True,  # one compiled call per leapfrog: ~10x faster than eager here
    )
    # Draws in chain order (2 x 100): the batch-means standard error of each std accounts for
    # autocorrelation. The smallest std outside the data must exceed the largest inside by 5 of
    # them.
    inside = samples.sample_functions(torch.linspace(-0.8, 0.8, 20).unsqueeze(-1), 200)
    outside = samples.sample_functions(torch.tensor([[-3.0], [3.0]]), 200)
    near, far = inside.squeeze(-1), outside.squeeze(-1)
    far_std, near_std = far.std(0, unbiased=False), near.std(0, unbiased=False)
    low, high = int(far_std.argmin()), int(near_std.argmax())
    assert clearly_larger(far_std[low], std_mcse(far)[low], near_std[high], std_mcse(near)[high])


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
        ({"adaptation": "0.9"}, None, TypeError, "Adaptation"),
    ],
)
def test_nuts_bad_input(kwargs: dict, data, error, match) -> None:  # type: ignore[no-untyped-def]
    x, y = data if data is not None else (torch.randn(5, 2), torch.randn(5, 1))
    options = {"likelihood": bnn.Gaussian(1.0), "progress": False, **kwargs}
    with pytest.raises(error, match=match):
        bnn.infer.nuts(nn.Linear(2, 1), (x, y), **options)


def test_bayesianized_model_samples_its_weights_with_its_priors() -> None:
    net = bnn.bayesianize(
        nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 1)),
        prior=bnn.nn.Normal(0.0, 0.5),
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
        (x, y),
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
    x, y, _, layer = blr_problem(10, 2, 1.0)
    with pytest.raises(ValueError, match="backend='pyro'"):
        bnn.infer.nuts(
            layer,
            (x, y),
            likelihood=bnn.Gaussian(1.0),
            adaptation=bnn.infer.Adaptation(full_mass=True),
            progress=False,
        )
    with pytest.raises(ValueError, match="target_accept"):
        bnn.infer.Adaptation(target_accept=1.5)
    with pytest.raises(TypeError, match=r"data must be a pair \(x, y\)"):
        bnn.infer.nuts(layer, x, likelihood=bnn.Gaussian(1.0), progress=False)
    with pytest.raises(ValueError, match="backend must be"):
        bnn.infer.nuts(layer, (x, y), likelihood=bnn.Gaussian(1.0), backend="stan", progress=False)


def test_warmup_windows_follow_stan() -> None:
    """Mass-matrix windows as Stan / NumPyro's ``build_adaptation_schedule`` (values from it)."""
    from bnn.infer.mcmc._nuts_adaptation import adaptation_windows as _windows

    assert _windows(19) == []
    assert _windows(100) == [(15, 90)]
    assert _windows(150) == [(75, 100)]
    assert _windows(500) == [(75, 100), (100, 150), (150, 250), (250, 450)]
    assert _windows(1000) == [(75, 100), (100, 150), (150, 250), (250, 450), (450, 950)]


def _recursive_subtree(sampler, start, step, depth, h0, inverse_mass, active):  # type: ignore[no-untyped-def]
    """The recursive build of Hoffman & Gelman / Stan (without proposals): far end, momentum
    sum, U-turn, divergence, acceptance sum, steps and log weight per chain."""
    from bnn.infer.mcmc._nuts_tree import MAX_ENERGY_ERROR, is_turning

    if depth == 0:
        new = sampler.leapfrog(start, step, inverse_mass)
        delta = sampler.energy(new, inverse_mass) - h0
        delta = torch.where(torch.isnan(delta), torch.full_like(delta, math.inf), delta)
        flags = torch.zeros_like(delta, dtype=torch.bool)
        return dict(
            near_r=new.r,
            far=new,
            r_sum=new.r,
            turning=flags,
            diverging=delta > MAX_ENERGY_ERROR,
            accept_sum=torch.exp(-delta.clamp_min(0.0)),
            steps=torch.ones_like(delta),
            log_weight=-delta,
        )
    first = _recursive_subtree(sampler, start, step, depth - 1, h0, inverse_mass, active)
    stopped = first["turning"] | first["diverging"]
    second = _recursive_subtree(
        sampler, first["far"], step, depth - 1, h0, inverse_mass, active & ~stopped
    )
    r_sum = first["r_sum"] + second["r_sum"]
    turning = (
        first["turning"]
        | second["turning"]
        | is_turning(first["near_r"], second["far"].r, r_sum, inverse_mass)
    )
    return dict(
        near_r=first["near_r"],
        far=second["far"],
        r_sum=r_sum,
        turning=torch.where(stopped, first["turning"], turning),
        diverging=first["diverging"] | (~stopped & second["diverging"]),
        accept_sum=first["accept_sum"] + torch.where(stopped, 0.0, second["accept_sum"]),
        steps=first["steps"] + torch.where(stopped, 0.0, second["steps"]),
        log_weight=torch.where(
            stopped,
            first["log_weight"],
            torch.logaddexp(first["log_weight"], second["log_weight"]),
        ),
    )


@pytest.mark.parametrize(
    ("depth", "compiled"), [(0, False), (1, False), (3, False), (5, False), (5, True)]
)
def test_leaf_by_leaf_subtree_matches_the_recursive_build(depth: int, compiled: bool) -> None:
    """The leaf-by-leaf subtree (NumPyro's iterative NUTS; eager, and compiled on packed
    tensors) makes the recursive build's decisions: the same U-turns and divergences,
    statistics, log weight and far end, for chains that turn or diverge at different leaves
    (step sizes from tiny to exploding)."""
    from bnn.infer._log_joint import LogJoint
    from bnn.infer.mcmc._nuts_tree import State
    from bnn.infer.mcmc._vectorised_nuts import _Sampler

    x, y, _, layer = blr_problem(50, 5, 1.0)
    log_joint = LogJoint(layer, bnn.Gaussian(1.0))
    chains = 8
    generators = [torch.Generator().manual_seed(c) for c in range(chains)]
    sampler = _Sampler(log_joint, x, y, generators, max_depth=6, compile_leaf=compiled)
    noise = torch.Generator().manual_seed(1)
    z = 0.3 * torch.randn(chains, 5, generator=noise, dtype=x.dtype)
    r = torch.randn(chains, 5, generator=noise, dtype=x.dtype)
    inverse_mass = torch.rand(chains, 5, generator=noise, dtype=x.dtype) + 0.5
    grad, logp = sampler.gradient(z)
    start = State(z, r, grad, logp)
    h0 = sampler.energy(start, inverse_mass)
    step = torch.tensor([0.003, -0.01, 0.03, -0.06, 0.1, -0.2, 0.35, -2.0], dtype=x.dtype)
    active = torch.tensor([True] * 7 + [False])
    expected = _recursive_subtree(sampler, start, step, depth, h0, inverse_mass, active)
    tree = sampler.build(start, step, depth, h0, inverse_mass, active)
    run = active
    assert torch.equal(tree.turning[run], expected["turning"][run])
    assert torch.equal(tree.diverging[run], expected["diverging"][run])
    assert torch.equal(tree.steps[run], expected["steps"][run])
    torch.testing.assert_close(tree.accept_sum[run], expected["accept_sum"][run])
    torch.testing.assert_close(tree.log_weight[run], expected["log_weight"][run])
    valid = run & ~expected["turning"] & ~expected["diverging"]
    torch.testing.assert_close(tree.z[valid], expected["far"].z[valid])
    torch.testing.assert_close(tree.r_sum[valid], expected["r_sum"][valid])
    if depth >= 3:  # the step sizes spread the outcomes over the chains
        assert bool(valid.any()) and bool(expected["turning"][run].any())
        assert bool(expected["diverging"][run].any())
    assert not bool(tree.running[~active].any()) and float(tree.steps[~active].sum()) == 0.0


@pytest.mark.parametrize("sampler", ["nuts-bnn", "nuts-pyro", "hmc"])
def test_random_models_are_refused_with_what_to_do(sampler: str) -> None:
    """Dropout in training mode or an MCDropout wrapper makes the log density random, which
    HMC and NUTS cannot use; in eval mode the same network samples."""
    x, y = torch.randn(12, 2), torch.randn(12, 1)
    with bnn.RNG(0).stream("init"):
        net = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Dropout(0.3), nn.Linear(8, 1))

    def run(model: nn.Module) -> None:
        options = {"likelihood": bnn.Gaussian(1.0), "warmup": 3, "rng": 0, "progress": False}
        if sampler == "hmc":
            bnn.infer.hmc(model, (x, y), num_chains=1, draws=2, trajectory_length=0.2, **options)
        else:
            backend = sampler.split("-")[1]
            bnn.infer.nuts(model, (x, y), num_chains=1, draws=2, backend=backend, **options)

    with pytest.raises(ValueError, match="deterministic model.*model.eval"):
        run(net.train())
    with pytest.raises(ValueError, match="deterministic model.*model.eval"):
        run(bnn.nn.MCDropout(net).eval())  # dropout stays on in eval mode
    run(net.eval())
