"""Pyro SVI with autoguides against the closed-form posterior; the param store stays clean."""

from __future__ import annotations

import pyro
import pyro.optim
import pytest
import torch
from torch import nn

import bnn
import bnn.infer
from tests.oracles import (
    linear_gaussian_posterior,
    linear_regression_data,
)


def _blr(n: int, d: int, noise: float, seed: int = 0):  # type: ignore[no-untyped-def]
    x, y, _ = linear_regression_data(n, d, noise, seed=seed)
    return (
        x,
        y.unsqueeze(-1),
        linear_gaussian_posterior(x, y, noise, 1.0),
        nn.Linear(d, 1, bias=False).double(),
    )


@pytest.mark.parametrize("guide", ["mvn", pytest.param("lowrank", marks=pytest.mark.slow)])
def test_svi_full_rank_guides_match_closed_form_mean_and_covariance(guide: str) -> None:
    """Guide mean within 0.1 posterior sd, stds within 10%, correlations within 0.1.

    These bounds are 4-5x the optimisation noise measured for this schedule (decaying
    ClippedAdam, 4 particles); a missing N/|B| or prior term moves the stds by far more.
    """
    x, y, exact, layer = _blr(20, 4, 2.0)
    posterior, history = bnn.infer.svi(
        layer,
        (x, y),
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
        (x, y),
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
        layer, (x, y), likelihood=bnn.Gaussian(1.0), epochs=3, batch_size=10, rng=0, progress=False
    )
    assert list(pyro.get_param_store().keys()) == ["user_parameter"]
    assert history.epoch == [0] * 4 + [1] * 4 + [2] * 4
    assert posterior.sample_functions(x[:5], 6, rng=0).shape == (6, 5, 1)
    assert posterior.to_sample_set(8, rng=0).num_samples == 8
    pyro.clear_param_store()
