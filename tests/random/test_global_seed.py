"""Every entry point that takes ``rng`` follows it alone: the caller's global seeds don't matter.

Each case fits (or wraps) a small network with a dropout layer — the forward passes draw —
under two different global torch / NumPy / Python seeds with the same ``rng``, and compares
the predictions bit for bit.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import numpy as np
import pytest
import torch
from torch import nn

import bnn
from bnn.posterior import ModelPosterior

_generator = torch.Generator().manual_seed(0)
X = torch.rand(64, 2, generator=_generator) * 2 - 1
Y = X.sum(-1, keepdim=True) + 0.1 * torch.randn(64, 1, generator=_generator)


def _net(dropout: float = 0.2, seed: int = 0) -> nn.Module:
    with bnn.RNG(seed).stream("init"):
        return nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Dropout(dropout), nn.Linear(16, 1))


def _small() -> nn.Module:  # a factory: members draw their initialisation from rng
    return nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Dropout(0.2), nn.Linear(8, 1))


def _gaussian() -> bnn.Gaussian:
    return bnn.Gaussian(0.1)


def _fitted(bayesian: bool = False, validation: bool = False) -> nn.Module:
    model = bnn.bayesianize(_net(), init="random", rng=0) if bayesian else _net()
    rows = 48 if validation else 64
    bnn.fit(
        model,
        (X[:rows], Y[:rows]),
        likelihood=_gaussian(),
        epochs=3,
        batch_size=16,
        validation=bnn.infer.Validation(X[48:], Y[48:], patience=1) if validation else None,
        rng=0,
        progress=False,
    )
    return model if bayesian else bnn.MCDropout(model)


QUIET = {"rng": 0, "progress": False}
CASES: dict[str, Callable[[], object]] = {
    "fit": lambda: _fitted(),
    "fit_bayesian_layers": lambda: _fitted(bayesian=True),
    "fit_with_validation": lambda: _fitted(validation=True),
    "deep_ensemble": lambda: bnn.infer.deep_ensemble(
        _small,
        (X, Y),
        likelihood=_gaussian(),
        num_members=2,
        bagging=True,
        epochs=2,
        batch_size=16,
        **QUIET,
    )[0],
    "swag": lambda: bnn.infer.swag(
        _net(), (X, Y), likelihood=_gaussian(), epochs=3, lr=0.01, rank=2, batch_size=16, **QUIET
    )[0],
    "laplace": lambda: bnn.infer.laplace(
        _net(), (X, Y), likelihood=_gaussian(), subset="all", hessian="diag", **QUIET
    )[0],
    "marglik_training": lambda: bnn.infer.marglik_training(
        _net(),
        (X, Y),
        likelihood=_gaussian(),
        epochs=4,
        every=2,
        burn_in=1,
        hyper_steps=3,
        batch_size=16,
        **QUIET,
    )[0],
    "nuts": lambda: bnn.infer.nuts(
        _net(0.0),
        (X, Y),
        likelihood=_gaussian(),
        num_chains=2,
        warmup=5,
        draws=5,
        max_tree_depth=3,
        **QUIET,
    )[0],
    "svi": lambda: bnn.infer.svi(_net(), (X, Y), likelihood=_gaussian(), steps=5, **QUIET)[0],
    "sgld": lambda: bnn.infer.sgld(
        _net(),
        (X, Y),
        likelihood=_gaussian(),
        batch_size=16,
        schedule=bnn.infer.StepSchedule(steps=40, burn_in=20, thin=5),
        **QUIET,
    )[0],
    "neural_linear": lambda: bnn.infer.neural_linear(
        _net(), (X, Y), likelihood=_gaussian(), **QUIET
    )[0],
    "boost": lambda: bnn.infer.boost(
        _small,
        (X, Y),
        likelihood=_gaussian(),
        num_stages=2,
        epochs=3,
        noise_epochs=3,
        subsample=0.5,
        **QUIET,
    )[0],
    "stack": lambda: bnn.infer.stack(
        [ModelPosterior(bnn.MCDropout(_net(seed=0))), ModelPosterior(bnn.MCDropout(_net(seed=1)))],
        X[:32],
        Y[:32],
        likelihood=_gaussian(),
        num_samples=8,
        **QUIET,
    )[0],
    "conformalize": lambda: bnn.evaluate.conformalize(
        ModelPosterior(bnn.MCDropout(_net())), X[:32], Y[:32], likelihood=_gaussian(), rng=0
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_rng_alone_fixes_the_result(case: str) -> None:
    predictions = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        np.random.seed(seed)
        random.seed(seed)
        posterior = CASES[case]()
        prediction = bnn.predict_with_uncertainty(posterior, X[:8], num_samples=4, rng=1)
        predictions.append(prediction.samples)
    assert torch.equal(predictions[0], predictions[1])
