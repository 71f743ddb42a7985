"""Convergence summaries: R-hat, ESS, and samplers that never moved are flagged."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch import nn

import bnn


def test_rhat_is_one_for_mixed_chains_and_large_for_stuck_chains() -> None:
    generator = torch.Generator().manual_seed(0)
    net = nn.Linear(1, 1)
    mixed = bnn.SampleSet(net, {"weight": torch.randn(4, 1000, 1, 1, generator=generator)})
    mixed_summary = bnn.summary(mixed, warn=False)
    assert mixed_summary.rows["weight"]["r_hat"] < 1.01
    assert mixed_summary.rows["weight"]["ess_bulk"] > 2000
    modes = torch.tensor([-3.0, -3.0, 3.0, 3.0]).reshape(4, 1, 1, 1)
    stuck = bnn.SampleSet(net, {"weight": modes + torch.randn(4, 1000, 1, 1, generator=generator)})
    with pytest.warns(bnn.evaluate.ConvergenceWarning, match="R-hat"):
        stuck_summary = bnn.summary(stuck)
    assert stuck_summary.rows["weight"]["r_hat"] > 1.1
    assert "| weight |" in stuck_summary.to_markdown()


def test_few_effective_draws_are_flagged() -> None:
    walk = torch.cumsum(
        torch.randn(2, 500, 1, 1, generator=torch.Generator().manual_seed(1)), dim=1
    )
    with pytest.warns(bnn.evaluate.ConvergenceWarning, match="ESS"):
        bnn.summary(bnn.SampleSet(nn.Linear(1, 1), {"weight": walk}))


def test_a_sampler_that_never_moved_is_flagged_and_not_converged() -> None:
    """Every proposal rejected: constant chains, R-hat NaN, ESS = draws, acceptance 0."""
    net = nn.Linear(1, 1)
    constant = torch.zeros(4, 200, 1, 1)
    stats = {"acceptance_rate": torch.zeros(4, 200), "diverging": torch.zeros(4, 200)}
    stuck = bnn.SampleSet(net, {"weight": constant}, sample_stats=stats)
    with pytest.warns(bnn.evaluate.ConvergenceWarning, match="never moved"):
        report = bnn.summary(stuck)
    assert not report.converged
    assert any("R-hat is NaN" in p for p in report.problems)
    assert any("accepted no proposal" in p for p in report.problems)
    assert math.isnan(report.rows["weight"]["r_hat"])


def test_one_stuck_chain_among_moving_ones_is_named() -> None:
    generator = torch.Generator().manual_seed(0)
    draws = torch.randn(3, 500, 1, 1, generator=generator)
    draws[1] = 0.5  # chain 1 never moved
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bnn.evaluate.ConvergenceWarning)
        report = bnn.summary(bnn.SampleSet(nn.Linear(1, 1), {"weight": draws}))
    assert any("chain(s) [1] never moved" in p for p in report.problems)


def test_well_mixed_independent_chains_converge_without_warnings() -> None:
    generator = torch.Generator().manual_seed(2)
    draws = torch.randn(4, 1000, 1, 1, generator=generator)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        report = bnn.summary(bnn.SampleSet(nn.Linear(1, 1), {"weight": draws}))
    assert report.converged and report.problems == ()


def test_independent_draws_carry_a_note_not_a_problem() -> None:
    generator = torch.Generator().manual_seed(3)
    draws = torch.randn(1, 2000, 1, 1, generator=generator)
    samples = bnn.SampleSet(nn.Linear(1, 1), {"weight": draws}, is_mcmc=False)
    report = bnn.summary(samples, warn=False)
    assert report.converged and "R-hat does not apply" in report.notes[0]
