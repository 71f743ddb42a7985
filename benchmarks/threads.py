"""Intra-op threads for small models: where one thread beats all, idle and beside a busy process.

    python benchmarks/threads.py [--output DIR]

1. Crossover: the time of one Adam step (forward, backward, update) of a d→h→h→1 ReLU MLP on
   a batch of B rows, with 1 thread and with all threads, for widths h and batches B; the
   ratio (all ÷ 1) per size, idle and beside a busy neighbour — another process running a
   2-thread matrix product loop (what a second training job, a notebook kernel or a compile
   does on a shared machine). Sizes are labelled by their work per step, parameters × rows.
2. ``bnn demo --quick``-sized runs are not timed here; ``bnn demo`` itself is timed by the
   ``--demo`` flag: wall time idle and beside the busy neighbour, with the library's thread
   choice (``threads="auto"``, the default) and with all threads forced.

Every figure is a median over repeats, measured in one run on this machine.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch import nn

WIDTHS = (16, 50, 128, 256, 512, 1024)
BATCHES = (32, 128, 512)
INPUTS = 13


def busy_neighbour(stop: mp.synchronize.Event) -> None:  # type: ignore[name-defined]
    """A process keeping 2 torch threads busy with matrix products until ``stop``."""
    torch.set_num_threads(2)
    a = torch.randn(512, 512)
    while not stop.is_set():
        a = torch.tanh(a @ a) * 0.5


def step_seconds(width: int, batch: int, threads: int, steps: int = 60) -> float:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Linear(INPUTS, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(), nn.Linear(width, 1)
    )
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, y = torch.randn(batch, INPUTS), torch.randn(batch, 1)

    def step() -> None:
        optimizer.zero_grad()
        loss = (model(x) - y).pow(2).mean()
        loss.backward()
        optimizer.step()

    for _ in range(5):
        step()
    times = []
    for _ in range(3):
        start = time.perf_counter()
        for _ in range(steps):
            step()
        times.append((time.perf_counter() - start) / steps)
    return statistics.median(times)


def crossover(all_threads: int) -> list[dict[str, float]]:
    rows = []
    for width in WIDTHS:
        for batch in BATCHES:
            parameters = INPUTS * width + width + width * width + width + width + 1
            one = step_seconds(width, batch, 1)
            many = step_seconds(width, batch, all_threads)
            rows.append(
                {
                    "width": width,
                    "batch": batch,
                    "work": parameters * batch,
                    "one_thread_ms": 1e3 * one,
                    "all_threads_ms": 1e3 * many,
                    "all_over_one": many / one,
                }
            )
            print(rows[-1], flush=True)
    return rows


def with_neighbour(function, *args):  # type: ignore[no-untyped-def]
    context = mp.get_context("spawn")
    stop = context.Event()
    process = context.Process(target=busy_neighbour, args=(stop,))
    process.start()
    time.sleep(2.0)
    try:
        return function(*args)
    finally:
        stop.set()
        process.join()


def demo_seconds(threads: str) -> float:
    command = [sys.executable, "-m", "bnn.apps.cli", "demo", "--output", "/tmp/bnn-demo-bench"]
    # OMP_NUM_THREADS is a user's explicit choice, which the library's "auto" respects
    environment = {"OMP_NUM_THREADS": threads} if threads != "auto" else {}

    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, env={**os.environ, **environment})
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--output", type=Path, default=Path("benchmark-results"))
    parser.add_argument("--demo", action="store_true", help="also time bnn demo")
    parser.add_argument("--demo-only", action="store_true", help="time bnn demo, nothing else")
    args = parser.parse_args()
    all_threads = torch.get_num_threads()
    result: dict[str, object] = {"all_threads": all_threads}
    if not args.demo_only:
        result["idle"] = crossover(all_threads)
        result["busy_neighbour"] = with_neighbour(crossover, all_threads)
    if args.demo or args.demo_only:
        result["demo_idle_auto_s"] = demo_seconds("auto")
        result["demo_busy_auto_s"] = with_neighbour(demo_seconds, "auto")
        result["demo_busy_all_threads_s"] = with_neighbour(demo_seconds, str(all_threads))
    args.output.mkdir(parents=True, exist_ok=True)
    name = "threads-demo.json" if args.demo_only else "threads.json"
    (args.output / name).write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if not isinstance(v, list)}, indent=2))


if __name__ == "__main__":
    main()
