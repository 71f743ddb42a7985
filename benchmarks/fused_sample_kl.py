"""What fusing a Bayesian weight's sample and KL would save per training step, measured.

    python benchmarks/fused_sample_kl.py [--threads 2] [--rounds 40] [--output DIR]

One ``N(0, 1)`` prior weight tensor of the 784→400 layer (``loc``, ``ρ``; noise from
`bnn.random.draws`), forward and backward of ``Σ w·G + KL/60,000`` (``G`` stands in for the
gradient that reaches the weights from the network), three ways, alternated round by round:

* ``eager``: what a reparam layer does today (``_NormalKL`` for softplus and the KL in one
  autograd function, then ``addcmul`` for the sample);
* ``compiled``: the same arithmetic as one ``torch.compile``d function of ``(loc, ρ, ε)``
  (Inductor fuses the forward and the backward each into one loop over the weights);
* ``floor``: the noise draw and ``Σ w·G`` without gradients to ``loc`` and ``ρ``.

Prints and writes the medians (ms) and the compile time; the difference eager − compiled is
what a fused per-parameter kernel would save per step for this tensor.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from bnn.nn.priors import _NormalKL
from bnn.random.draws import standard_normal

SHAPE = (400, 784)
DATASET_SIZE = 60_000


def sample_and_kl(loc: Tensor, rho: Tensor, noise: Tensor) -> tuple[Tensor, Tensor]:
    """``w = loc + softplus(ρ)·ε`` and ``KL(N(loc, softplus(ρ)²) ‖ N(0, 1))`` summed."""
    scale = F.softplus(rho)
    kl = 0.5 * ((scale * scale).sum() + (loc * loc).sum() - loc.numel()) - torch.log(scale).sum()
    return loc + scale * noise, kl


def steps(loc: Tensor, rho: Tensor, target: Tensor) -> dict[str, Callable[[], None]]:
    compiled = torch.compile(sample_and_kl, dynamic=False)

    def noise() -> Tensor:
        return standard_normal(SHAPE, dtype=torch.float32, device="cpu")

    def eager() -> None:
        kl, scale = _NormalKL.apply(loc, rho, 0.0, 1.0)  # type: ignore[no-untyped-call]
        weight = torch.addcmul(loc, scale, noise())
        ((weight * target).sum() + kl / DATASET_SIZE).backward()  # type: ignore[no-untyped-call]

    def fused() -> None:
        weight, kl = compiled(loc, rho, noise())
        ((weight * target).sum() + kl / DATASET_SIZE).backward()  # type: ignore[no-untyped-call]

    def floor() -> None:
        weight = loc.detach() + 0.0 * noise()
        (weight * target).sum()

    return {"eager": eager, "compiled": fused, "floor": floor}


def milliseconds(fn: Callable[[], None], loc: Tensor, rho: Tensor, calls: int = 5) -> float:
    times = []
    for _ in range(calls):
        loc.grad = rho.grad = None
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    generator = torch.Generator().manual_seed(0)
    loc = (0.05 * torch.randn(SHAPE, generator=generator)).requires_grad_()
    rho = torch.full(SHAPE, -5.0, requires_grad=True)
    target = torch.randn(SHAPE, generator=generator)
    cases = steps(loc, rho, target)
    start = time.perf_counter()
    cases["compiled"]()
    compile_seconds = time.perf_counter() - start
    for fn in cases.values():  # warm-up
        milliseconds(fn, loc, rho)
    rounds = [
        {name: milliseconds(fn, loc, rho) for name, fn in cases.items()} for _ in range(args.rounds)
    ]
    result: dict[str, float] = {
        name: statistics.median(r[name] for r in rounds) for name in cases
    } | {"compile_seconds": compile_seconds, "threads": args.threads}
    result["saved_ms"] = result["eager"] - result["compiled"]
    print(json.dumps(result, indent=2))
    if args.output is not None:
        args.output.mkdir(parents=True, exist_ok=True)
        (args.output / "fused_sample_kl.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
