"""SGLD and SGHMC against the exact stationary law of their discretisation; schedules."""

from __future__ import annotations

import pytest
import torch

import bnn
import bnn.infer
from tests.oracles import (
    batch_means_mcse,
    blr_problem,
    sghmc_stationary_covariance,
    sgld_stationary_covariance,
)


@pytest.mark.parametrize("method", ["sgld", "sghmc"])
def test_sgmcmc_matches_the_exact_stationary_law_of_its_discretisation(method: str) -> None:
    """Full-batch SG-MCMC on a Gaussian target has a known Gaussian stationary law.

    Its mean is the posterior mean and its covariance solves a discrete Lyapunov equation
    (tests/oracles.py); both are checked within 5 batch-means MCSE. That covariance is within
    a few percent of the exact posterior's for these steps, and equals it as ε → 0.
    """
    x, y, exact, layer = blr_problem(20, 4, 2.0)
    if method == "sgld":
        samples, _ = bnn.infer.sgld(
            layer,
            (x, y),
            likelihood=bnn.Gaussian(2.0),
            lr=0.02,
            schedule=bnn.infer.StepSchedule(steps=12_000, burn_in=1000, thin=1),
            rng=0,
            progress=False,
        )
        target = sgld_stationary_covariance(exact, 0.02)
    else:
        samples, _ = bnn.infer.sghmc(
            layer,
            (x, y),
            likelihood=bnn.Gaussian(2.0),
            lr=0.005,
            friction=0.1,
            schedule=bnn.infer.StepSchedule(steps=12_000, burn_in=1000, thin=1),
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
    x, y, exact, layer = blr_problem(40, 2, 1.0)
    options = dict(
        likelihood=bnn.Gaussian(1.0),
        lr=0.01,
        schedule=bnn.infer.StepSchedule(kind="cyclical", steps=800, thin=5, cycles=4),
        batch_size=10,
        num_chains=2,
        rng=3,
        progress=False,
    )
    first, history = bnn.infer.sghmc(layer, (x, y), **options)
    second, _ = bnn.infer.sghmc(layer, (x, y), **options)
    assert torch.equal(first.samples["weight"], second.samples["weight"])
    assert first.num_chains == 2 and first.num_draws == 80  # half of each 200-step cycle, every 5th
    assert len(history.chains[0].potential) == 800
    step_sizes = history.chains[0].step_size  # the cosine schedule: peak 0.01 at each cycle start
    assert step_sizes[0] == step_sizes[200] == 0.01 and min(step_sizes) < 1e-5
    # Cyclical mini-batch SGHMC is biased (exploration stages, gradient noise): this checks
    # only that the draws sit in the posterior bulk, within 3 exact posterior sds of the mean.
    sd = exact.covariance.diagonal().sqrt()
    assert ((first.flat()["weight"].mean(0).flatten() - exact.mean).abs() < 3 * sd).all()
