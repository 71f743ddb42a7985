"""Trials at once: a 12-trial seed-aware study with ``n_jobs=1`` and ``n_jobs=2`` on this
machine, its wall time and the configuration each picks.

    python benchmarks/tune_parallel.py [--trials 12] [--seeds 4] [--epochs 300] [--repeats 3]

The objective trains an MC-dropout MLP (``width`` x ``lr``, 6 configurations)
on 1-D regression and scores its validation NLL; ``n_jobs=1`` runs in this process with one
torch thread, ``n_jobs=2`` on ``tune``'s pool of two worker processes with one thread each
(pool start included in its time), and, as the peer, Optuna's own ``study.optimize(n_jobs=2)``
(threads)
on the same objective averaged over the same seeds. Prints the median time of ``--repeats``
alternating runs of each, the speed-up and whether the best configuration is the same; numbers
of an idle 2-core machine are in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time

import torch
from torch import nn

import bnn
from bnn.tune import Categorical, tune


def validation_nll(params: dict, rng: bnn.RNG, epochs: int = 300) -> float:
    """Train an MC-dropout MLP from seed ``rng``; its validation NLL."""
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(256, 1, generator=generator) * 4 - 2
    y = torch.sin(2 * x) + 0.2 * torch.randn(256, 1, generator=generator)
    with rng.stream("init"):
        net = nn.Sequential(
            nn.Linear(1, params["width"]),
            nn.ReLU(),
            nn.Dropout(params["dropout"]),
            nn.Linear(params["width"], 1),
        )
    model = bnn.MCDropout(net)
    bnn.fit(
        model,
        (x[:192], y[:192]),
        likelihood=bnn.Gaussian(0.2),
        epochs=epochs,
        batch_size=64,
        lr=params["lr"],
        rng=rng,
        threads=1,
        progress=False,
    )
    prediction = bnn.predict_with_uncertainty(
        model, x[192:], likelihood=bnn.Gaussian(0.2), num_samples=20, rng=rng
    )
    return bnn.evaluate.metrics.nll(prediction, y[192:])


SPACE = {
    "width": Categorical((16, 32, 64)),
    "dropout": Categorical((0.02,)),
    "lr": Categorical((3e-3, 3e-2)),
}


def study(n_jobs: int, trials: int, seeds: int, epochs: int) -> tuple[float, dict, int]:
    objective = functools.partial(validation_nll, epochs=epochs)  # picklable for the workers
    start = time.perf_counter()
    result = tune(
        objective, SPACE, seeds=seeds, n_trials=trials, n_jobs=n_jobs, rng=0, progress=True
    )
    reused = sum("reused_from" in t.user_attrs for t in result.study.trials)
    return time.perf_counter() - start, result.best_params, reused


def optuna_threads(trials: int, seeds: int, epochs: int) -> tuple[float, dict]:
    """The peer: Optuna's own ``study.optimize(n_jobs=2)`` (two threads in this process) on
    the same objective, averaged over the same seeds, TPE seeded, no reuse of repeats."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    parent = bnn.RNG(0)

    def objective(trial: optuna.Trial) -> float:
        params = {name: trial.suggest_categorical(name, d.choices) for name, d in SPACE.items()}
        runs = [parent.spawn(f"seed-{i}") for i in range(seeds)]
        return sum(validation_nll(params, rng, epochs) for rng in runs) / seeds

    sampler = optuna.samplers.TPESampler(seed=0, constant_liar=True)
    search = optuna.create_study(sampler=sampler)
    start = time.perf_counter()
    search.optimize(objective, n_trials=trials, n_jobs=2)
    return time.perf_counter() - start, search.best_params


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    times: dict[str, list[float]] = {"serial": [], "parallel": [], "optuna": []}
    for _ in range(args.repeats):  # alternating, so drift of the machine hits all three
        serial, serial_best, serial_reused = study(1, args.trials, args.seeds, args.epochs)
        parallel, parallel_best, parallel_reused = study(2, args.trials, args.seeds, args.epochs)
        peer, peer_best = optuna_threads(args.trials, args.seeds, args.epochs)
        for key, value in zip(times, (serial, parallel, peer), strict=True):
            times[key].append(value)
    median = {key: statistics.median(values) for key, values in times.items()}
    print(f"median of {args.repeats} runs each (all runs: {times})")
    print(f"n_jobs=1: {median['serial']:.1f} s, best {serial_best}, {serial_reused} reused")
    print(f"n_jobs=2: {median['parallel']:.1f} s, best {parallel_best}, {parallel_reused} reused")
    print(f"optuna study.optimize(n_jobs=2), threads: {median['optuna']:.1f} s, best {peer_best}")
    print(
        f"speed-up of n_jobs=2: {median['serial'] / median['parallel']:.2f}x; "
        f"same best configuration: {serial_best == parallel_best}; "
        f"against optuna's threads: {median['optuna'] / median['parallel']:.2f}x"
    )


if __name__ == "__main__":
    main()
