"""Cost of the Laplace approximation and SWAG on a trained MLP, as ratios to one training epoch.

    python benchmarks/laplace_cost.py [--inputs 10000] [--threads 2] [--output FILE]

Model: MLP 784→400→400→10 (ReLU), categorical likelihood, ``--inputs`` random inputs. Every
figure is measured in this process: one epoch of plain training (Adam, batch 128) is the unit.

1. Fitting: ``bnn.infer.laplace`` with last-layer KFAC, all-layer KFAC and all-layer diagonal
   GGN (batch 256), and the marginal-likelihood optimisation of the prior precision; one SWAG
   epoch (SGD, batch 128, moments collected).
2. Prediction on ``--inputs`` inputs: the last-layer Laplace GLM (probit) predictive and 100
   sampled functions of the all-layer KFAC posterior and of SWAG, ÷ 100 plain forward passes
   (the FLOP floor of sampling).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

import bnn


def mlp() -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(784, 400), nn.ReLU(), nn.Linear(400, 400), nn.ReLU(), nn.Linear(400, 10)
    )


def seconds(fn: Callable[[], Any], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--inputs", type=int, default=10_000)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(args.inputs, 784, generator=generator)
    y = torch.randint(0, 10, (args.inputs,), generator=generator)
    with bnn.RNG(0).stream("init"):
        net = mlp()
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)

    def epoch() -> None:
        for start in range(0, args.inputs, 128):
            optimizer.zero_grad()
            nn.functional.cross_entropy(
                net(x[start : start + 128]), y[start : start + 128]
            ).backward()
            optimizer.step()

    epoch()  # warm-up and a trained-ish network
    unit = seconds(epoch, args.repeats)
    result: dict[str, Any] = {"settings": vars(args) | {"output": str(args.output)}}
    result["epoch_seconds"] = unit
    likelihood = bnn.Categorical()
    posteriors = {}
    for name, subset, hessian in (
        ("last_layer_kron", "last_layer", "kron"),
        ("all_kron", "all", "kron"),
        ("all_diag", "all", "diag"),
    ):

        def fit(subset: str = subset, hessian: str = hessian) -> Any:
            posterior, _ = bnn.infer.laplace(
                net, (x, y), likelihood=likelihood, subset=subset, hessian=hessian, progress=False
            )
            return posterior

        result[f"fit_{name}"] = seconds(fit, args.repeats) / unit
        posteriors[name] = fit()
        print(name, f"{result[f'fit_{name}']:.2f} epochs", flush=True)
    result["marglik_last_layer_kron"] = (
        seconds(lambda: posteriors["last_layer_kron"].optimize_prior_precision(), 1) / unit
    )
    swag_time = seconds(
        lambda: bnn.infer.swag(
            net,
            (x, y),
            likelihood=likelihood,
            epochs=2,
            lr=1e-3,
            rank=2,
            batch_size=128,
            rng=0,
            progress=False,
        ),
        args.repeats,
    )
    result["swag_epoch"] = swag_time / 2 / unit
    print(json.dumps(result, indent=1), flush=True)

    net.eval()

    def floor() -> None:
        with torch.no_grad():
            for _ in range(100):
                net(x)

    floor_seconds = seconds(floor, args.repeats)
    result["predict_floor_seconds"] = floor_seconds
    glm = posteriors["last_layer_kron"]
    result["predict_glm_last_layer"] = (
        seconds(lambda: bnn.predict_with_uncertainty(glm, x), args.repeats) / floor_seconds
    )
    sampled = posteriors["all_kron"]
    sampled.predictive = "samples"
    result["predict_samples_all_kron"] = (
        seconds(
            lambda: bnn.predict_with_uncertainty(sampled, x, num_samples=100, rng=0), args.repeats
        )
        / floor_seconds
    )
    swag_posterior, _ = bnn.infer.swag(
        net,
        (x, y),
        likelihood=likelihood,
        epochs=3,
        lr=1e-3,
        rank=2,
        batch_size=128,
        rng=0,
        progress=False,
    )
    result["predict_samples_swag"] = (
        seconds(
            lambda: bnn.predict_with_uncertainty(
                swag_posterior, x, likelihood=likelihood, num_samples=100, rng=0
            ),
            args.repeats,
        )
        / floor_seconds
    )
    print(json.dumps(result, indent=1))
    if args.output:
        args.output.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
