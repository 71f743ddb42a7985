"""HMC with a fixed trajectory length: closed-form mean, statistics, divergences."""

from __future__ import annotations

import torch

import bnn
import bnn.infer
from tests.oracles import (
    batch_means_mcse,
    blr_problem,
)


def test_hmc_runs_and_reports_stats() -> None:
    x, y, exact, layer = blr_problem(30, 2, 1.0)
    samples, history = bnn.infer.hmc(
        layer,
        (x, y),
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
    assert len(history.per_chain("seconds")) == 2
    assert set(history.sample_stats) == set(samples.sample_stats)


def test_divergences_are_reported() -> None:
    x, y, _, layer = blr_problem(20, 2, 0.01)  # a very narrow posterior
    samples, history = bnn.infer.hmc(
        layer,
        (x, y),
        likelihood=bnn.Gaussian(0.01),
        num_chains=1,
        warmup=0,
        draws=20,
        step_size=1.0,
        trajectory_length=5.0,
        rng=0,
        progress=False,
    )
    divergences = history.per_chain("divergences")
    assert divergences[0] > 0
    assert int(samples.sample_stats["diverging"].sum()) == divergences[0]
