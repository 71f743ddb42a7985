"""What `bnn.fit` adds to a plain PyTorch training loop on a small network (the UCI regime).

    python benchmarks/fit_overhead.py [--threads 1] [--rounds 5] [--epochs 20] [--output DIR]

The UCI benchmark's networks and data sizes (concrete: 834 training rows, 8 features, one hidden
layer of 50 ReLU, batch 32, Adam 3e-3, validation every epoch with the best weights kept) are
where a step's fixed costs show: a step's arithmetic is a few microseconds, so every
per-step Python call, generator swap and batch assembly is measured against it. Two models:

- ``ensemble member``: 2 outputs (mean, raw variance), β-NLL with β = 0.5, no dropout;
- ``mc dropout``: dropout 0.05 after the hidden layer, Gaussian noise with a learned std.

The plain loop is what a user writes in PyTorch for the same run: ``torch.randperm`` shuffling,
``x[index]`` batches, ``torch.optim.Adam``, the same loss, one validation pass per epoch and a
copy of the best weights. Rounds alternate the two loops; medians per optimiser step and the
ratio ``bnn ÷ plain`` are printed and written to ``fit_overhead.json``.

A third case trains an ensemble of 5 such members: the plain loop five times, then
``bnn.infer.deep_ensemble`` one member after another and with ``lockstep=True`` (one vmapped
step for all members); per member step, ratios to the plain loop.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn

import bnn
from bnn.infer.training._fit_options import Validation
from bnn.likelihoods import Gaussian, HeteroscedasticGaussian, Likelihood

ROWS, FEATURES, HIDDEN, BATCH, LR = 834, 8, 50, 32, 3e-3
VALIDATION_ROWS = 93


def data(seed: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(ROWS + VALIDATION_ROWS, FEATURES, generator=generator)
    y = x[:, :1].sin() + 0.3 * torch.randn(ROWS + VALIDATION_ROWS, 1, generator=generator)
    return x[:ROWS], y[:ROWS], x[ROWS:], y[ROWS:]


def member_network() -> nn.Module:
    return nn.Sequential(nn.Linear(FEATURES, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, 2))


def dropout_network() -> nn.Module:
    return nn.Sequential(
        nn.Linear(FEATURES, HIDDEN), nn.ReLU(), nn.Dropout(0.05), nn.Linear(HIDDEN, 1)
    )


def beta_nll(output: Tensor, y: Tensor, beta: float) -> Tensor:
    """β-NLL of a mean and a softplus variance, per example ``[B]``."""
    mean, raw = output[:, :1], output[:, 1:]
    variance = nn.functional.softplus(raw) + 1e-6
    nll = 0.5 * ((y - mean) ** 2 / variance + variance.log() + math.log(2 * math.pi))
    return (nll * variance.detach() ** beta).squeeze(-1)


def gaussian_nll(output: Tensor, y: Tensor, log_std: Tensor) -> Tensor:
    return (0.5 * ((y - output) / log_std.exp()) ** 2 + log_std).squeeze(-1)


def plain_fit(
    network: nn.Module,
    loss: Callable[[Tensor, Tensor], Tensor],
    extra: list[Tensor],
    split: tuple[Tensor, Tensor, Tensor, Tensor],
    epochs: int,
) -> None:
    """The loop a PyTorch user writes: shuffle, step, validate, keep the best weights."""
    x, y, x_val, y_val = split
    optimizer = torch.optim.Adam([*network.parameters(), *extra], lr=LR)
    generator = torch.Generator().manual_seed(0)
    best, best_state = math.inf, None
    for _ in range(epochs):
        network.train()
        for index in torch.randperm(ROWS, generator=generator).split(BATCH):
            value = loss(network(x[index]), y[index]).mean()
            optimizer.zero_grad()
            value.backward()
            optimizer.step()
        network.eval()
        with torch.no_grad():
            val_loss = float(loss(network(x_val), y_val).mean())
        if val_loss < best:
            best = val_loss
            best_state = {name: t.clone() for name, t in network.state_dict().items()}
    assert best_state is not None
    network.load_state_dict(best_state)


def bnn_fit(
    network: nn.Module,
    likelihood: Likelihood,
    split: tuple[Tensor, Tensor, Tensor, Tensor],
    epochs: int,
) -> None:
    x, y, x_val, y_val = split
    bnn.fit(
        network,
        (x, y),
        likelihood=likelihood,
        epochs=epochs,
        batch_size=BATCH,
        lr=LR,
        validation=Validation(x_val, y_val),
        rng=0,
        threads=None,
        progress=False,
    )


def timed(run: Callable[[], None]) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def measure(rounds: int, epochs: int) -> dict[str, dict[str, float]]:
    split = data(0)
    steps = epochs * math.ceil(ROWS / BATCH)
    cases: dict[str, tuple[Callable[[], None], Callable[[], None]]] = {
        "ensemble member": (
            lambda: plain_fit(
                member_network(), lambda o, t: beta_nll(o, t, 0.5), [], split, epochs
            ),
            lambda: bnn_fit(member_network(), HeteroscedasticGaussian(beta=0.5), split, epochs),
        ),
        "mc dropout": (
            lambda: _plain_dropout(split, epochs),
            lambda: bnn_fit(
                bnn.MCDropout(dropout_network()), Gaussian(0.5, learn_std=True), split, epochs
            ),
        ),
    }
    results = {}
    for name, (plain, ours) in cases.items():
        plain(), ours()  # warm-up: imports, allocator, first-call paths
        plain_ms, bnn_ms = [], []
        for _ in range(rounds):
            plain_ms.append(1e3 * timed(plain) / steps)
            bnn_ms.append(1e3 * timed(ours) / steps)
        results[name] = {
            "plain_ms_per_step": statistics.median(plain_ms),
            "bnn_ms_per_step": statistics.median(bnn_ms),
            "ratio": statistics.median(bnn_ms) / statistics.median(plain_ms),
        }
        print(
            f"{name:16s} plain {results[name]['plain_ms_per_step']:.3f} ms/step   "
            f"bnn.fit {results[name]['bnn_ms_per_step']:.3f} ms/step   "
            f"ratio {results[name]['ratio']:.2f}",
            flush=True,
        )
    return results


def measure_ensemble(rounds: int, epochs: int, members: int = 5) -> dict[str, float]:
    """Five members: plain loops one after another, bnn sequentially, bnn in lock-step."""
    split = data(0)
    x, y, x_val, y_val = split
    member_steps = members * epochs * math.ceil(ROWS / BATCH)

    def plain() -> None:
        for _ in range(members):
            plain_fit(member_network(), lambda o, t: beta_nll(o, t, 0.5), [], split, epochs)

    def ours(lockstep: bool) -> None:
        bnn.infer.deep_ensemble(
            member_network,
            (x, y),
            likelihood=HeteroscedasticGaussian(beta=0.5),
            num_members=members,
            epochs=epochs,
            batch_size=BATCH,
            lr=LR,
            validation=Validation(x_val, y_val),
            rng=0,
            progress=False,
            lockstep=lockstep,
        )

    runs = {"plain": plain, "sequential": lambda: ours(False), "lockstep": lambda: ours(True)}
    for run in runs.values():
        run()  # warm-up
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            times[name].append(1e3 * timed(run) / member_steps)
    medians = {name: statistics.median(values) for name, values in times.items()}
    result = {f"{name}_ms_per_member_step": value for name, value in medians.items()}
    result |= {f"{name}_ratio": medians[name] / medians["plain"] for name in runs}
    print(
        f"ensemble of {members}  plain {medians['plain']:.3f}   bnn one after another "
        f"{medians['sequential']:.3f} ({result['sequential_ratio']:.2f}x)   bnn lockstep "
        f"{medians['lockstep']:.3f} ({result['lockstep_ratio']:.2f}x) ms per member step",
        flush=True,
    )
    return result


def _plain_dropout(split: tuple[Tensor, Tensor, Tensor, Tensor], epochs: int) -> None:
    log_std = torch.zeros((), requires_grad=True)
    plain_fit(dropout_network(), lambda o, t: gaussian_nll(o, t, log_std), [log_std], split, epochs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--output", type=Path, default=Path("benchmark-results"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"{torch.get_num_threads()} thread(s), {args.rounds} rounds of {args.epochs} epochs")
    results: dict[str, dict[str, float]] = measure(args.rounds, args.epochs)
    results["ensemble of 5"] = measure_ensemble(args.rounds, args.epochs)
    args.output.mkdir(parents=True, exist_ok=True)
    record = {"threads": args.threads, "epochs": args.epochs, "rounds": args.rounds, **results}
    (args.output / "fit_overhead.json").write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
