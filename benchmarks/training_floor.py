"""The parts of a Bayesian training step that no fusion removes, as fractions of a plain step.

    python benchmarks/training_floor.py [--threads 2] [--rounds 30] [--output DIR]

The issue's network (784→400→400→10, batch 128, Adam, categorical likelihood; 478k weights).
Each round times, one after the other: a plain training step; one Adam step over as many
*extra* parameters (a mean-field posterior has a ``loc`` and a ``ρ`` per weight, so Adam
updates twice the parameters); the ``N(0, 1)`` noise for every weight (`bnn.random.draws`,
what the reparam layers use, and ``torch.randn``). With ``benchmarks/fused_sample_kl.py``
(noise and ``Σ w·G`` of one weight, without and with softplus and the KL) this bounds what a
reparam step can cost relative to a plain one. Prints and writes medians (ms) and ratios.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

import bnn
from bnn.random.draws import standard_normal

BATCH = 128


def network() -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(784, 400), nn.ReLU(), nn.Linear(400, 400), nn.ReLU(), nn.Linear(400, 10)
    )


def plain_step(model: nn.Module) -> Callable[[], None]:
    x, y = torch.randn(BATCH, 784), torch.randint(0, 10, (BATCH,))
    likelihood = bnn.Categorical()
    adam = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step() -> None:
        loss = -likelihood.log_prob(model(x), y).mean()
        adam.zero_grad()
        loss.backward()
        adam.step()

    return step


def extra_adam_step(model: nn.Module) -> Callable[[], None]:
    extra = [torch.zeros_like(p, requires_grad=True) for p in model.parameters()]
    for p in extra:
        p.grad = torch.randn_like(p)
    adam = torch.optim.Adam(extra, lr=1e-3)
    return adam.step  # type: ignore[return-value]


def noise(model: nn.Module, draw: Callable[[torch.Size], torch.Tensor]) -> Callable[[], None]:
    shapes = [p.shape for p in model.parameters()]

    def draw_all() -> None:
        for shape in shapes:
            draw(shape)

    return draw_all


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = network()
    parts = {
        "plain_step": plain_step(model),
        "adam_on_extra_parameters": extra_adam_step(model),
        "noise_bnn_draws": noise(
            model, lambda s: standard_normal(s, dtype=torch.float32, device="cpu")
        ),
        "noise_torch_randn": noise(model, torch.randn),
    }
    for part in parts.values():  # warm-up
        for _ in range(5):
            part()
    seconds: dict[str, list[float]] = {name: [] for name in parts}
    for _ in range(args.rounds):
        for name, part in parts.items():
            start = time.perf_counter()
            part()
            seconds[name].append(time.perf_counter() - start)
    medians = {name: 1e3 * statistics.median(values) for name, values in seconds.items()}
    plain = medians["plain_step"]
    result = {
        "threads": args.threads,
        "weights": sum(p.numel() for p in model.parameters()),
        "ms": medians,
        "ratio_to_plain_step": {name: value / plain for name, value in medians.items()},
    }
    print(json.dumps(result, indent=2))
    if args.output is not None:
        args.output.mkdir(parents=True, exist_ok=True)
        (args.output / "training_floor.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
