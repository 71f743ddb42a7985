"""Tiny data, models and run settings shared by the adversarial suite (seconds, not minutes)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

import bnn
from bnn.infer import StepSchedule

FEATURES = 2


def data(n: int = 8, features: int = FEATURES, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Regression data ``x [n, features]``, ``y [n, 1]`` (float32)."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, features, generator=generator)
    y = x.sum(-1, keepdim=True) + 0.1 * torch.randn(n, 1, generator=generator)
    return x, y


def mlp(features: int = FEATURES, hidden: int = 3, outputs: int = 1) -> nn.Sequential:
    with bnn.RNG(0).stream("init"):
        return nn.Sequential(nn.Linear(features, hidden), nn.Tanh(), nn.Linear(hidden, outputs))


def bayesian_mlp(features: int = FEATURES) -> nn.Module:
    return bnn.bayesianize(mlp(features), init="random", rng=0)


def dropout_mlp(features: int = FEATURES, rate: float = 0.2) -> bnn.MCDropout:
    with bnn.RNG(0).stream("init"):
        net = nn.Sequential(nn.Linear(features, 3), nn.ReLU(), nn.Dropout(rate), nn.Linear(3, 1))
    return bnn.MCDropout(net)


NOISE = bnn.Gaussian(0.5)
NUTS = {"num_chains": 1, "warmup": 3, "draws": 3, "max_tree_depth": 3, "progress": False}
HMC = {"num_chains": 1, "warmup": 2, "draws": 2, "trajectory_length": 0.2, "progress": False}
SG = {"schedule": StepSchedule(steps=3, burn_in=1, thin=1), "progress": False, "lr": 1e-3}

Trainer = Callable[[nn.Module, Any], Any]

TRAINERS: dict[str, Trainer] = {
    "fit": lambda m, d: bnn.fit(m, d, likelihood=NOISE, epochs=1, batch_size=4, progress=False),
    "nuts": lambda m, d: bnn.infer.nuts(m, d, likelihood=NOISE, rng=0, **NUTS),
    "nuts-pyro": lambda m, d: bnn.infer.nuts(m, d, likelihood=NOISE, backend="pyro", rng=0, **NUTS),
    "hmc": lambda m, d: bnn.infer.hmc(m, d, likelihood=NOISE, rng=0, **HMC),
    "sgld": lambda m, d: bnn.infer.sgld(m, d, likelihood=NOISE, rng=0, **SG),
    "sghmc": lambda m, d: bnn.infer.sghmc(m, d, likelihood=NOISE, rng=0, **SG),
    "svi": lambda m, d: bnn.infer.svi(m, d, likelihood=NOISE, steps=2, rng=0, progress=False),
}
"""Every method that trains a given model on ``(x, y)`` tensors, with the smallest settings."""
