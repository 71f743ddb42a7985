"""Cost of bnn.random.draws's samplers vs torch's own, measured in one run.

    python benchmarks/noise_draws.py [--threads 2] [--output DIR]

For each size: torch's sampler (``randn``; ``rand() < keep`` scaled; ``where(rand() < 0.5)``)
÷ the `bnn.random.draws` one (``standard_normal``, ``bernoulli_mask``, ``rademacher``), medians
of 21 calls. Sizes: a flipout input-sign batch (128×784), the 784×400 weight, the masks of 100
samples × 32 inputs × 800 units, and 8M (one sample's masks at 10,000 inputs).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from suite import median_seconds  # benchmarks/ is on the path when run as a script

from bnn.random.draws import bernoulli_mask, rademacher, standard_normal

SIZES = (128 * 784, 784 * 400, 100 * 32 * 800, 8_000_000)
CPU = torch.device("cpu")


def median_ms(fn: Callable[[], Any]) -> float:
    return median_seconds(fn, repeats=21, warmup=3) * 1e3


def measure(n: int) -> dict[str, float]:
    f32 = torch.float32
    pairs: dict[str, tuple[Callable[[], Any], Callable[[], Any]]] = {
        "normal": (
            lambda: torch.randn(n),
            lambda: standard_normal((n,), dtype=f32, device=CPU),
        ),
        "mask": (
            lambda: (torch.rand(n) < 0.9).to(f32) / 0.9,
            lambda: bernoulli_mask((n,), 0.9, dtype=f32, device=CPU),
        ),
        "signs": (
            lambda: torch.where(torch.rand(n) < 0.5, -1.0, 1.0),
            lambda: rademacher((n,), dtype=f32, device=CPU),
        ),
    }
    result = {}
    for name, (torch_way, bnn_way) in pairs.items():
        before, after = median_ms(torch_way), median_ms(bnn_way)
        result[f"{name}_{n}_torch_ms"] = before
        result[f"{name}_{n}_bnn_ms"] = after
        result[f"{name}_{n}_speedup"] = before / after
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--output", type=Path, default=Path("benchmark-results"))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    results: dict[str, float] = {"threads": float(torch.get_num_threads())}
    for n in SIZES:
        results |= measure(n)
        print(
            f"{n:>10,}: "
            + "  ".join(
                f"{k}: {results[f'{k}_{n}_torch_ms']:.2f} → {results[f'{k}_{n}_bnn_ms']:.2f} ms"
                for k in ("normal", "mask", "signs")
            )
        )
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "noise_draws.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
