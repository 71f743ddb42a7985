"""Picklable experiments for the executor tests (worker processes import them by name)."""

from __future__ import annotations

import os

import torch
from torch import nn

import bnn


def train_briefly(rng: bnn.RNG) -> dict[str, float]:
    """A few seeded SGD steps of a dropout MLP: weight init, data order and dropout all random."""
    with rng.stream("data"):
        x = torch.randn(64, 3)
        y = x.sum(-1, keepdim=True)
    with rng.stream("init"):
        net = nn.Sequential(nn.Linear(3, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 1))
    optimizer = torch.optim.SGD(net.parameters(), lr=0.05)
    with rng.stream("dropout"):
        for _ in range(20):
            optimizer.zero_grad()
            loss = ((net(x) - y) ** 2).mean()
            loss.backward()
            optimizer.step()
    return {"loss": loss.item(), "threads": float(torch.get_num_threads())}


def fail_on_seed_three(rng: bnn.RNG) -> dict[str, float]:
    if _seed_of(rng) == 3:
        raise RuntimeError("this seed's run broke")
    return {"value": 1.0}


def die_on_seed_one(rng: bnn.RNG) -> dict[str, float]:
    if _seed_of(rng) == 1:
        os._exit(1)  # the worker process is lost
    return {"value": 1.0}


def _seed_of(rng: bnn.RNG) -> int:
    """The sweep seed a child was spawned with (its spawn path ends with 0, seed, 0)."""
    return rng._path[-2]


def noisy_quadratic(params: dict[str, float], rng: bnn.RNG) -> float:
    """``(x − 0.3)² + N(0, 0.05²)``: the optimum 0.3, seed noise of std 0.05 (picklable)."""
    noise = torch.randn((), generator=rng.torch_generator("noise"), dtype=torch.float64)
    return (params["x"] - 0.3) ** 2 + 0.05 * float(noise)


def small_member() -> nn.Module:
    """An ensemble member factory that worker processes can import."""
    return nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 1))
