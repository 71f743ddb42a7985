"""Cost of one SG-MCMC step relative to one Adam step on the same model and mini-batch.

Model: an MLP 784→400→400→10 on a mini-batch of 128 (the suite's training model) and the toy
BNN 1→50→1 on 32 of 200 points. Each SG-MCMC step is timed inside ``bnn.infer.sgld`` /
``bnn.infer.sghmc`` (from their per-run wall time), the Adam step is a plain PyTorch loop
(forward, backward, ``optimizer.step()``) on the same mini-batches; medians over repeats.

    python benchmarks/sgmcmc_step.py [--steps 200 --repeats 3 --threads 2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from torch import nn

import bnn


def models() -> dict[
    str, tuple[nn.Module, torch.Tensor, torch.Tensor, bnn.likelihoods.Likelihood, int]
]:
    generator = torch.Generator().manual_seed(0)
    x_big = torch.randn(1024, 784, generator=generator)
    y_big = torch.randint(0, 10, (1024,), generator=generator)
    mlp = nn.Sequential(
        nn.Linear(784, 400), nn.ReLU(), nn.Linear(400, 400), nn.ReLU(), nn.Linear(400, 10)
    )
    x_toy = torch.rand(200, 1, generator=generator) * 2 - 1
    y_toy = torch.sin(3 * x_toy) + 0.1 * torch.randn(200, 1, generator=generator)
    toy = nn.Sequential(nn.Linear(1, 50), nn.Tanh(), nn.Linear(50, 1))
    return {
        "mlp_784_400_400_10_batch128": (mlp, x_big, y_big, bnn.Categorical(), 128),
        "toy_bnn_1_50_1_batch32": (toy, x_toy, y_toy, bnn.Gaussian(0.1), 32),
    }


def adam_seconds_per_step(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    likelihood: bnn.likelihoods.Likelihood,
    batch: int,
    steps: int,
) -> float:
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    generator = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    for _ in range(steps):
        index = torch.randint(0, x.shape[0], (batch,), generator=generator)
        loss = -likelihood.log_prob(model(x[index]), y[index]).sum() * (x.shape[0] / batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return (time.perf_counter() - start) / steps


def sampler_seconds_per_step(
    method: str,
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    likelihood: bnn.likelihoods.Likelihood,
    batch: int,
    steps: int,
) -> float:
    sampler = bnn.infer.sgld if method == "sgld" else bnn.infer.sghmc
    _, history = sampler(
        model,
        (x, y),
        likelihood=likelihood,
        lr=1e-7,
        schedule=bnn.infer.StepSchedule(steps=steps, burn_in=0, thin=steps),
        batch_size=batch,
        rng=0,
        progress=False,
    )
    return float(history.chains[0].seconds) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results: dict[str, dict[str, float]] = {}
    for name, (model, x, y, likelihood, batch) in models().items():
        row: dict[str, float] = {}
        adam = statistics.median(
            adam_seconds_per_step(model, x, y, likelihood, batch, args.steps)
            for _ in range(args.repeats)
        )
        row["adam_ms_per_step"] = 1e3 * adam
        for method in ("sgld", "sghmc"):
            seconds = statistics.median(
                sampler_seconds_per_step(method, model, x, y, likelihood, batch, args.steps)
                for _ in range(args.repeats)
            )
            row[f"{method}_ms_per_step"] = 1e3 * seconds
            row[f"{method}_over_adam"] = seconds / adam
        results[name] = row
        print(name, {k: round(v, 3) for k, v in row.items()})
    if args.output:
        args.output.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
