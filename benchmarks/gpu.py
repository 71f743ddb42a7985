"""Device benchmarks: training and prediction ratios and lock-step NUTS as chains grow.

    python benchmarks/gpu.py [--device cuda|cpu] [--quick] [--output DIR]

Written for a CUDA machine (``benchmarks/gpu.sh`` runs it with the device tests); ``--device cpu
--quick`` is the dry run CI executes so that the script keeps working without a GPU. Every
figure is a ratio to a baseline measured in the same process on the same device; times are
wall-clock with the device synchronised before and after each timed call.

1. Training step (forward + backward + KL + Adam), MLP 784→400→400→10 at batch 128 and 1024:
   each Bayesian-layer estimator ÷ the plain network's step.
2. ``predict_with_uncertainty`` with S samples on N inputs ÷ S plain forward passes (the FLOP
   floor) for Bayesian layers, MC dropout and a ``SampleSet``; peak device memory.
3. Lock-step NUTS (``bnn.infer.nuts``) on the toy BNN (1→50→1 tanh, noise 0.1, 200 points):
   wall time, minimum bulk ESS of the predictive mean at 20 test points, and ESS/s as the
   number of chains grows.

Writes ``gpu.json`` and ``gpu.md`` (a markdown table per section, the device named) to
``--output``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

import bnn


def mlp(dropout: float = 0.0) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Linear(784, 400), nn.ReLU()]
    if dropout:
        layers.append(nn.Dropout(dropout))
    layers += [nn.Linear(400, 400), nn.ReLU()]
    if dropout:
        layers.append(nn.Dropout(dropout))
    layers.append(nn.Linear(400, 10))
    return nn.Sequential(*layers)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def seconds(fn: Callable[[], Any], device: torch.device, repeats: int, warmup: int = 2) -> float:
    """Median wall time of ``fn`` over ``repeats`` calls, the device synchronised around each."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


# ----------------------------------------------------------------------------- training
def training(device: torch.device, batch: int, repeats: int) -> dict[str, float]:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 784, generator=generator).to(device)
    y = torch.randint(0, 10, (batch,), generator=generator).to(device)
    likelihood = bnn.Categorical()

    def step_fn(model: nn.Module, with_kl: bool) -> Callable[[], None]:
        adam = torch.optim.Adam(model.parameters(), lr=1e-3)

        def step() -> None:
            for _ in range(20):
                loss = -likelihood.log_prob(model(x), y).mean()
                if with_kl:
                    loss = loss + bnn.nn.kl_divergence(model) / 60_000
                adam.zero_grad()
                loss.backward()
                adam.step()

        return step

    steps = {"plain": step_fn(mlp().to(device), False)}
    for estimator in ("reparam", "local_reparam", "flipout"):
        model = bnn.bayesianize(mlp(), estimator=estimator, init="random", rng=0).to(device)
        steps[estimator] = step_fn(model, True)
    rounds = [
        {name: seconds(step, device, 1) for name, step in steps.items()} for _ in range(repeats)
    ]
    plain = statistics.median(r["plain"] for r in rounds)
    result = {"plain_ms_per_step": 1e3 * plain / 20}
    for name in ("reparam", "local_reparam", "flipout"):
        result[name] = statistics.median(r[name] / r["plain"] for r in rounds)
    return result


# ----------------------------------------------------------------------------- prediction
def peak_memory_mb(device: torch.device, fn: Callable[[], Any]) -> float:
    if device.type != "cuda":
        return float("nan")
    synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    fn()
    synchronize(device)
    return (torch.cuda.max_memory_allocated(device) - base) / 2**20


def prediction(device: torch.device, inputs: int, samples: int, repeats: int) -> dict[str, float]:
    x = torch.randn(inputs, 784, generator=torch.Generator().manual_seed(0)).to(device)
    net = mlp().to(device).eval()

    def floor() -> None:
        with torch.no_grad():
            for _ in range(samples):
                net(x)

    draws = {
        name: p.detach() + 0.01 * torch.randn(1, samples, *p.shape, device=device)
        for name, p in net.named_parameters()
    }
    models: dict[str, Any] = {
        "bayesian": bnn.bayesianize(mlp(), init="random", rng=0).to(device),
        "mc_dropout": bnn.MCDropout(mlp(0.1)).to(device).eval(),
        "sample_set": bnn.SampleSet(net, draws),
    }
    floor_seconds = seconds(floor, device, repeats)
    result = {"floor_ms": 1e3 * floor_seconds, "floor_peak_mb": peak_memory_mb(device, floor)}
    for name, model in models.items():

        def run(model: Any = model) -> None:
            bnn.predict_with_uncertainty(model, x, num_samples=samples, rng=0)

        result[name] = seconds(run, device, repeats) / floor_seconds
        result[f"{name}_peak_mb"] = peak_memory_mb(device, run)
    return result


# ----------------------------------------------------------------------------- NUTS
def toy_data(device: torch.device, n: int = 200) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(n, 1, generator=generator) * 2 - 1
    y = torch.sin(3 * x) + 0.1 * torch.randn(n, 1, generator=generator)
    return x.to(device), y.to(device)


def min_bulk_ess(predictions: np.ndarray) -> float:
    """Minimum bulk ESS over test points; ``predictions`` is ``[chain, draw, point]``."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import arviz as az

        ess = az.ess(az.convert_to_dataset({"f": predictions}))["f"].values
    return float(np.min(ess))


def nuts_chains(
    device: torch.device,
    chains: int,
    warmup: int,
    draws: int,
    max_tree_depth: int,
    jit_compile: bool,
) -> dict[str, float]:
    x, y = toy_data(device)
    with bnn.RNG(0).stream("init"):
        net = nn.Sequential(nn.Linear(1, 50), nn.Tanh(), nn.Linear(50, 1)).to(device)
    synchronize(device)
    start = time.perf_counter()
    samples, history = bnn.infer.nuts(
        net,
        (x, y),
        likelihood=bnn.Gaussian(0.1),
        num_chains=chains,
        warmup=warmup,
        draws=draws,
        max_tree_depth=max_tree_depth,
        rng=0,
        progress=False,
        jit_compile=jit_compile,
    )
    synchronize(device)
    wall = time.perf_counter() - start
    grid = torch.linspace(-1, 1, 20, device=device).unsqueeze(-1)
    functions = bnn.predict_with_uncertainty(samples, grid, num_samples=samples.num_samples)
    predictions = functions.samples.reshape(chains, draws, -1).cpu().numpy()
    ess = min_bulk_ess(predictions)
    steps = float(samples.sample_stats["n_steps"].float().mean())
    gradient_evaluations = float(sum(history.per_chain("gradient_evaluations")))
    return {
        "chains": chains,
        "compiled": jit_compile,
        "seconds": wall,
        "min_ess": ess,
        "ess_per_second": ess / wall,
        "mean_leapfrog_steps_per_draw": steps,
        "gradient_evaluations": gradient_evaluations,
        # lock-step leapfrogs: every chain's gradient is evaluated in each step of the slowest
        "ms_per_lockstep_gradient": 1e3 * wall / (gradient_evaluations / chains),
    }


# ----------------------------------------------------------------------------- report
def markdown(result: dict[str, Any]) -> str:
    lines = [f"Device: {result['device_name']} (torch {result['torch']}).", ""]
    lines += ["| training step ÷ plain | " + " | ".join(result["training"]) + " |"]
    lines += ["|---" * (len(result["training"]) + 1) + "|"]
    for key in ("plain_ms_per_step", "reparam", "local_reparam", "flipout"):
        cells = [f"{result['training'][batch][key]:.2f}" for batch in result["training"]]
        lines.append(f"| {key} | " + " | ".join(cells) + " |")
    p = result["prediction"]
    lines += [
        "",
        f"| prediction ({p['inputs']} inputs, {p['samples']} samples) | ÷ floor | peak MB |",
    ]
    lines += ["|---|---|---|", f"| floor | {p['floor_ms']:.1f} ms | {p['floor_peak_mb']:.0f} |"]
    for name in ("bayesian", "mc_dropout", "sample_set"):
        lines.append(f"| {name} | {p[name]:.2f} | {p[f'{name}_peak_mb']:.0f} |")
    lines += [
        "",
        "| NUTS chains | compiled | seconds | min ESS | ESS/s | leapfrog steps/draw "
        "| ms per gradient of all chains |",
    ]
    lines.append("|---|---|---|---|---|---|---|")
    for row in result["nuts"]:
        lines.append(
            f"| {row['chains']} | {'yes' if row['compiled'] else 'no'} | {row['seconds']:.1f} | "
            f"{row['min_ess']:.0f} | {row['ess_per_second']:.1f} | "
            f"{row['mean_leapfrog_steps_per_draw']:.0f} | {row['ms_per_lockstep_gradient']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a dry run")
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results"))
    parser.add_argument(
        "--nuts-budget",
        type=float,
        default=240.0,
        help="seconds after which no larger chain count starts",
    )
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda needs a CUDA device; use --device cpu --quick for a dry run")
    quick = args.quick
    result: dict[str, Any] = {
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or "cpu",
        "torch": torch.__version__,
        "quick": quick,
    }
    repeats = 2 if quick else 5
    result["training"] = {
        f"batch {batch}": training(device, batch, repeats)
        for batch in ((32,) if quick else (128, 1024))
    }
    print("training", json.dumps(result["training"]), flush=True)
    inputs, samples = (256, 4) if quick else (10_000, 100)
    result["prediction"] = {"inputs": inputs, "samples": samples} | prediction(
        device, inputs, samples, repeats
    )
    print("prediction", json.dumps(result["prediction"]), flush=True)
    chain_counts = (2, 4) if quick else (4, 64, 1024)
    warmup, draws, depth = (10, 10, 4) if quick else (30, 30, 6)
    result["nuts_settings"] = {"warmup": warmup, "draws": draws, "max_tree_depth": depth}
    result["nuts"] = []
    args.output.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    # eager first, then compiled (``jit_compile``: one compiled call per leapfrog, compiled
    # afresh for each chain count, compilation included in the seconds)
    runs = [(chains, compiled) for compiled in (False, True) for chains in chain_counts]
    if quick:  # the dry run compiles once, for its smallest chain count
        runs = runs[: len(chain_counts) + 1]
    for chains, compiled in runs:
        if time.perf_counter() - started > args.nuts_budget:
            print(f"nuts: {chains} chains skipped, past --nuts-budget {args.nuts_budget} s")
            continue
        result["nuts"].append(nuts_chains(device, chains, warmup, draws, depth, compiled))
        print("nuts", json.dumps(result["nuts"][-1]), flush=True)
        (args.output / "gpu.json").write_text(json.dumps(result, indent=2))
    (args.output / "gpu.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
