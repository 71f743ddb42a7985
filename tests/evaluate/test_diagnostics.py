"""Diagnostics on ArviZ: conversion of every posterior kind, R-hat, calibration, LOO, plots."""

from __future__ import annotations

import math
import warnings

import matplotlib
import numpy as np
import pytest
import torch
from torch import nn

import bnn
from bnn.evaluate.diagnostics import arviz_major_version, arviz_module

matplotlib.use("Agg")


def _group(data, name):  # type: ignore[no-untyped-def]
    group = data[name]
    return group.to_dataset() if hasattr(group, "to_dataset") else group


def _regression_data(n: int = 30) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(n, 1, generator=generator) * 2 - 1
    return x, torch.sin(3 * x) + 0.1 * torch.randn(n, 1, generator=generator)


def _sample_set() -> tuple[bnn.SampleSet, nn.Module]:
    net = nn.Linear(1, 1)
    x, y = _regression_data()
    samples, _ = bnn.infer.nuts(
        net,
        (x, y),
        likelihood=bnn.Gaussian(0.5),
        num_chains=2,
        warmup=50,
        draws=60,
        rng=0,
        progress=False,
    )
    return samples, net


def test_sample_set_round_trip_has_every_group_with_chain_draw_dims() -> None:
    samples, _ = _sample_set()
    x, y = _regression_data()
    data = bnn.to_arviz(samples, x=x, observed=y, likelihood=bnn.Gaussian(0.5))
    posterior = _group(data, "posterior")
    assert posterior["weight"].shape == (2, 60, 1, 1)
    assert posterior["f"].shape == (2, 60, 30, 1)
    assert _group(data, "posterior_predictive")["y"].shape == (2, 60, 30, 1)
    assert _group(data, "log_likelihood")["y"].shape == (2, 60, 30, 1)  # y's own dims
    assert _group(data, "observed_data")["y"].shape == (30, 1)
    stats = _group(data, "sample_stats")
    assert {"diverging", "step_size", "tree_depth", "acceptance_rate", "n_steps"} <= set(
        stats.data_vars
    )
    assert posterior.sizes["chain"] == 2 and posterior.sizes["draw"] == 60


@pytest.mark.parametrize("kind", ["vi", "mc_dropout", "svi"])
def test_non_mcmc_posteriors_convert_as_one_chain(kind: str) -> None:
    x, y = _regression_data()
    posterior: object
    if kind == "vi":
        posterior = bnn.bayesianize(nn.Sequential(nn.Linear(1, 8), nn.Tanh(), nn.Linear(8, 1)))
    elif kind == "mc_dropout":
        posterior = bnn.MCDropout(
            nn.Sequential(nn.Linear(1, 8), nn.ReLU(), nn.Dropout(0.2), nn.Linear(8, 1))
        ).eval()
    else:
        posterior, _ = bnn.infer.svi(
            nn.Linear(1, 1), (x, y), likelihood=bnn.Gaussian(0.5), steps=5, rng=0, progress=False
        )
    data = bnn.to_arviz(
        posterior, x=x, observed=y, likelihood=bnn.Gaussian(0.5), num_samples=40, rng=0
    )
    post = _group(data, "posterior")
    assert post.sizes["chain"] == 1 and post.sizes["draw"] == 40
    assert post["f"].shape == (1, 40, 30, 1)
    assert _group(data, "log_likelihood")["y"].shape == (1, 40, 30, 1)
    if kind != "mc_dropout":
        assert len(post.data_vars) > 1  # parameters as well as f
    summary = bnn.summary(data, warn=False)
    assert not summary.is_mcmc
    assert all(math.isnan(row["r_hat"]) for row in summary.rows.values())


def test_loo_runs_on_a_converted_small_model() -> None:
    samples, _ = _sample_set()
    x, y = _regression_data()
    data = bnn.to_arviz(samples, x=x, observed=y, likelihood=bnn.Gaussian(0.5))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = bnn.evaluate.diagnostics.loo(data)
    elpd = float(result["elpd_loo"] if arviz_major_version() < 1 else result.elpd)
    assert math.isfinite(elpd)


@pytest.mark.parametrize(
    "call, error, match",
    [
        (
            lambda s, x, y: bnn.to_arviz(s, x=x, observed=y[:10], likelihood=bnn.Gaussian(0.5)),
            ValueError,
            "observed has shape",
        ),
        (
            lambda s, x, y: bnn.to_arviz(
                s, x=x, observed=y * float("nan"), likelihood=bnn.Gaussian(0.5)
            ),
            ValueError,
            "NaN",
        ),
        (lambda s, x, y: bnn.to_arviz(s, x=x * float("nan")), ValueError, "NaN"),
        (
            lambda s, x, y: bnn.to_arviz(
                s, x=x, prediction=bnn.Gaussian(0.5).predict(torch.zeros(7, 30, 1))
            ),
            ValueError,
            "num_samples equal",
        ),
        (
            lambda s, x, y: bnn.evaluate.calibration(
                bnn.Gaussian(0.5).predict(torch.zeros(7, 30, 1)), y[:5]
            ),
            ValueError,
            "targets",
        ),
        (
            lambda s, x, y: bnn.evaluate.plots.plot_trace(s, "nope"),
            ValueError,
            "not in the draws",
        ),
    ],
)
def test_bad_input_gives_clear_errors(call, error, match) -> None:  # type: ignore[no-untyped-def]
    samples, _ = _sample_set()
    x, y = _regression_data()
    with pytest.raises(error, match=match):
        call(samples, x, y)


def test_empty_posterior_is_rejected() -> None:
    with pytest.raises(ValueError, match="non-empty"):
        bnn.SampleSet(nn.Linear(1, 1), {})
    with pytest.raises(ValueError, match="posterior is empty"):
        bnn.to_arviz(bnn.MCDropout(nn.Sequential(nn.Linear(1, 2), nn.Dropout(0.1))))


def test_arviz_version_matches_the_python_line() -> None:
    import sys

    major = arviz_major_version()
    assert major == (1 if sys.version_info >= (3, 12) else 0) or major in (0, 1)
    assert isinstance(arviz_module().__version__, str)
    assert np.__version__


def _exports() -> dict[str, object]:
    """``to_arviz`` of each posterior kind with x, observed and a likelihood."""
    x, y = _regression_data()
    samples, _ = _sample_set()
    vi = bnn.bayesianize(nn.Sequential(nn.Linear(1, 8), nn.Tanh(), nn.Linear(8, 1)), rng=0)
    ensemble, _ = bnn.infer.deep_ensemble(
        lambda: nn.Linear(1, 1),
        (x, y),
        likelihood=bnn.Gaussian(0.5),
        num_members=30,
        rng=0,
        epochs=2,
    )
    options = {"x": x, "observed": y, "likelihood": bnn.Gaussian(0.5), "rng": 0}
    return {
        "nuts": bnn.to_arviz(samples, **options),
        "vi": bnn.to_arviz(vi, num_samples=60, **options),
        "ensemble": bnn.to_arviz(ensemble, num_samples=30, **options),  # PSIS needs >= 25 draws
    }


@pytest.mark.parametrize("kind", ["nuts", "vi", "ensemble"])
def test_every_arviz_diagnostic_accepts_the_export(kind: str) -> None:
    """The groups share y's dims, so ArviZ's LOO-PIT, PPC and k-hat plots accept them."""
    matplotlib.use("Agg")
    az = arviz_module()
    data = _exports()[kind]
    log_likelihood = _group(data, "log_likelihood")["y"]
    assert log_likelihood.dims[2:] == _group(data, "posterior_predictive")["y"].dims[2:]
    assert log_likelihood.shape[2:] == _group(data, "observed_data")["y"].shape
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ArviZ's own warnings (few draws, high k-hat)
        az.summary(data)
        loo = az.loo(data, pointwise=True)
        az.compare({"a": data, "b": data})
        few = {"obs_id": [0, 1, 2]}  # a few function values: ArviZ caps the number of panels
        az.plot_trace(data, coords=few)
        if _group(data, "posterior").sizes["chain"] > 1:  # ranks compare chains
            az.plot_rank(data, coords=few)
        az.plot_khat(loo)
        if arviz_major_version() >= 1:
            az.loo_pit(data)
            az.plot_ppc_dist(data)
            az.plot_loo_pit(data)
            az.plot_ppc_tstat(data)
        else:
            az.waic(data)
            az.plot_ppc(data)
            az.plot_loo_pit(data, y="y")
            az.plot_bpv(data)
