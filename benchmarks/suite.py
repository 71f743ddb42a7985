"""Benchmark suite: costs of bnn relative to plain PyTorch and to Pyro, measured in one run.

    python benchmarks/suite.py [--inputs 10000] [--samples 100] [--repeats 3] [--output DIR]

Model: MLP 784→400→400→10 (ReLU). Every figure is a ratio to a baseline measured in the same
process (machines are noisy), median of ``--repeats`` runs. Peak memory is the growth of the
process's resident set above its size before the case (peak reset with Linux's
``clear_refs``), measured in a fresh process per prediction case.

1. Training step (forward + backward + KL + Adam step), batch 128: each estimator ÷ plain
   ``nn.Linear``; Pyro SVI (``PyroModule`` + ``AutoNormal``) ÷ plain; bayesian-torch's
   reparameterisation and flipout layers ÷ plain where ``bayesian_torch.layers`` imports
   (``pip install --no-deps bayesian-torch``). Also without the optimizer step (forward +
   backward + KL only), and at batch 512.
   ``fit-small``: VI throughput on a UCI-sized problem (N = 1,000, d = 8, 50 units, batch 32):
   ``bnn.fit`` of each estimator ÷ ``bnn.fit`` of the plain network.
2. ``predict_with_uncertainty`` with S samples on N inputs ÷ S deterministic forward passes
   (the FLOP floor), for a Bayesian model, MC dropout and a ``SampleSet``; and
   ``pyro.infer.Predictive`` on the Pyro model, and bayesian-torch's models in a loop.
3. Small batch (32 inputs, S samples): bnn ÷ a Python loop over samples, and ÷ Pyro Predictive;
   also the per-input marginal predictive (``joint=False``, local reparameterisation) ÷ the
   loop.
4. Growth of prediction time with the number of samples and the batch size.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

import bnn

TARGETS = {
    "train_reparam": 2.0,
    "train_local_reparam": 2.5,
    "train_flipout": 2.5,
    "fit_small_reparam": 2.0,
    "fit_small_local_reparam": 2.0,
    "fit_small_flipout": 2.0,
    "predict_bayesian": 1.15,
    "predict_mc_dropout": 1.15,
    "predict_sample_set": 1.15,
}


def mlp(dropout: float = 0.0) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Linear(784, 400), nn.ReLU()]
    if dropout:
        layers.append(nn.Dropout(dropout))
    layers += [nn.Linear(400, 400), nn.ReLU()]
    if dropout:
        layers.append(nn.Dropout(dropout))
    layers.append(nn.Linear(400, 10))
    return nn.Sequential(*layers)


def bayesian_torch_available() -> bool:
    """Whether bayesian-torch's layers import (``pip install --no-deps bayesian-torch``).

    bayesian-torch 0.5.0 declares torchvision, tensorboard and scikit-learn as requirements;
    its ``bayesian_torch.layers`` needs none of them, so it is installed without dependencies
    for this comparison (it is not a dependency of bnn).
    """
    try:
        import bayesian_torch.layers  # noqa: F401
    except ImportError:
        return False
    return True


class BayesianTorchMLP(nn.Module):
    """The benchmark MLP from bayesian-torch layers; ``forward`` returns ``(logits, kl)``."""

    def __init__(self, estimator: str) -> None:
        super().__init__()
        from bayesian_torch.layers import LinearFlipout, LinearReparameterization

        layer = LinearFlipout if estimator == "flipout" else LinearReparameterization
        self.layers = nn.ModuleList([layer(784, 400), layer(400, 400), layer(400, 10)])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        kl = torch.zeros(())
        for index, layer in enumerate(self.layers):
            x, layer_kl = layer(x)
            kl = kl + layer_kl
            if index < len(self.layers) - 1:
                x = torch.relu(x)
        return x, kl


def median_seconds(fn: Callable[[], Any], repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


# ----------------------------------------------------------------------------- training
def training_ratios(repeats: int, batch: int = 128, optimizer: bool = True) -> dict[str, float]:
    """Each estimator's step ÷ the plain step; ``optimizer=False``: forward + backward + KL only."""
    torch.manual_seed(0)
    x, y = torch.randn(batch, 784), torch.randint(0, 10, (batch,))
    likelihood = bnn.Categorical()
    suffix = ("" if batch == 128 else f"_batch{batch}") + ("" if optimizer else "_no_optimizer")

    def step_fn(model: nn.Module, with_kl: bool) -> Callable[[], None]:
        adam = torch.optim.Adam(model.parameters(), lr=1e-3)

        def step() -> None:
            for _ in range(20):
                if isinstance(model, BayesianTorchMLP):
                    logits, kl = model(x)
                    loss = -likelihood.log_prob(logits, y).mean() + kl / 60_000
                else:
                    loss = -likelihood.log_prob(model(x), y).mean()
                if with_kl:
                    loss = loss + bnn.nn.kl_divergence(model) / 60_000
                adam.zero_grad()
                loss.backward()
                if optimizer:
                    adam.step()

        return step

    # Interleaved rounds (plain, then each estimator) and the median of per-round ratios: the
    # machine's speed drifts by tens of percent between minutes, not within one round.
    steps = {"plain": step_fn(mlp(), False)}
    for estimator in ("reparam", "local_reparam", "flipout"):
        model = bnn.bayesianize(mlp(), estimator=estimator, init="random", rng=0)
        steps[estimator] = step_fn(model, True)
    if bayesian_torch_available():
        for estimator in ("reparam", "flipout"):
            steps[f"bayesian_torch_{estimator}"] = step_fn(BayesianTorchMLP(estimator), False)
    rounds = [
        {name: median_seconds(step, repeats=1) for name, step in steps.items()}
        for _ in range(repeats)
    ]
    plain = statistics.median(r["plain"] for r in rounds)
    result = {f"train_plain_seconds_per_20_steps{suffix}": plain}
    for name in steps.keys() - {"plain"}:
        ratios = [r[name] / r["plain"] for r in rounds]
        result[f"train_{name}{suffix}"] = statistics.median(ratios)
    if batch == 128 and optimizer:
        result["train_pyro_svi_autonormal"] = pyro_svi_seconds(x, y, repeats) / plain
    return result


def fit_small_ratios(repeats: int) -> dict[str, float]:
    """VI throughput on a UCI-sized problem: ``bnn.fit`` of each estimator ÷ the plain network.

    N = 1,000, d = 8, 50 ReLU units, batch 32, 5 epochs of ``bnn.fit`` (its defaults: fused
    Adam, ``threads="auto"``); the plain network is fitted by the same loop (MAP, no KL).
    """
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(1000, 8, generator=generator)
    y = x[:, :1].sin() + 0.1 * torch.randn(1000, 1, generator=generator)

    def net() -> nn.Module:
        return nn.Sequential(nn.Linear(8, 50), nn.ReLU(), nn.Linear(50, 1))

    def run(estimator: str | None) -> Callable[[], None]:
        model = net() if estimator is None else bnn.bayesianize(net(), estimator=estimator)

        def fit() -> None:
            bnn.fit(
                model,
                (x, y),
                likelihood=bnn.Gaussian(0.1),
                epochs=5,
                batch_size=32,
                rng=0,
                progress=False,
            )

        return fit

    runs = {"plain": run(None)} | {e: run(e) for e in ("reparam", "local_reparam", "flipout")}
    rounds = [
        {name: median_seconds(fn, repeats=1) for name, fn in runs.items()} for _ in range(repeats)
    ]
    plain = statistics.median(r["plain"] for r in rounds)
    result = {"fit_small_plain_seconds_per_epoch": plain / 5}
    for name in runs.keys() - {"plain"}:
        result[f"fit_small_{name}"] = statistics.median(r[name] / r["plain"] for r in rounds)
    return result


def pyro_model_and_guide() -> tuple[Any, Any]:
    import pyro
    import pyro.distributions as dist
    from pyro.infer.autoguide import AutoNormal
    from pyro.nn import PyroSample
    from pyro.nn.module import to_pyro_module_

    model = mlp()
    to_pyro_module_(model)
    for name in ("0", "2", "4"):
        layer = getattr(model, name)
        layer.weight = PyroSample(dist.Normal(0.0, 1.0).expand(layer.weight.shape).to_event(2))
        layer.bias = PyroSample(dist.Normal(0.0, 1.0).expand(layer.bias.shape).to_event(1))

    def pyro_model(x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        logits = model(x)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("obs", dist.Categorical(logits=logits), obs=y)
        return logits

    return pyro_model, AutoNormal(pyro_model)


def pyro_svi_seconds(x: torch.Tensor, y: torch.Tensor, repeats: int) -> float:
    import pyro
    from pyro.infer import SVI, Trace_ELBO

    pyro.clear_param_store()
    model, guide = pyro_model_and_guide()
    svi = SVI(model, guide, pyro.optim.Adam({"lr": 1e-3}), Trace_ELBO())

    def steps() -> None:
        for _ in range(20):
            svi.step(x, y)

    return median_seconds(steps, repeats)


# ----------------------------------------------------------------------------- prediction
def _prediction_case(
    case: str, inputs: int, samples: int, repeats: int, threads: int
) -> tuple[float, float]:
    """Runs in a fresh process: (median seconds, peak RSS growth in MB)."""
    torch.manual_seed(0)
    torch.set_num_threads(threads)
    x = torch.randn(inputs, 784)
    base = start_peak_measurement()
    run = _runner(case, x, samples)
    seconds = median_seconds(run, repeats)
    return seconds, peak_growth_mb(base)


def _runner(case: str, x: torch.Tensor, samples: int) -> Callable[[], None]:
    """One call of the prediction ``case`` on inputs ``x`` with ``samples`` samples."""
    if case == "floor":
        net = mlp().eval()

        def run() -> None:
            with torch.no_grad():
                for _ in range(samples):
                    net(x)
    elif case == "loop_bayesian":
        net = bnn.bayesianize(mlp(), init="random", rng=0).eval()

        def run() -> None:
            with torch.no_grad():
                for _ in range(samples):
                    net(x)
    elif case == "loop_mc_dropout":
        net = mlp(0.1).train()

        def run() -> None:
            with torch.no_grad():
                for _ in range(samples):
                    net(x)
    elif case == "loop_sample_set":
        net = mlp()
        draws = [
            {n: p.detach() + 0.01 * torch.randn_like(p) for n, p in net.named_parameters()}
            for _ in range(samples)
        ]

        def run() -> None:
            with torch.no_grad():
                for draw in draws:
                    torch.func.functional_call(net, draw, (x,))
    elif case in ("marginal_bayesian", "marginal_mc_dropout"):
        if case == "marginal_mc_dropout":
            model = bnn.MCDropout(mlp(0.1)).eval()
        else:
            model = bnn.bayesianize(mlp(), init="random", rng=0)

        def run() -> None:
            bnn.predict_with_uncertainty(model, x, num_samples=samples, rng=0, joint=False)
    elif case in ("bayesian", "flipout", "mc_dropout", "sample_set"):
        if case == "mc_dropout":
            model: Any = bnn.MCDropout(mlp(0.1)).eval()
        elif case == "sample_set":
            net = mlp()
            draws = {
                n: p.detach() + 0.01 * torch.randn(1, samples, *p.shape)
                for n, p in net.named_parameters()
            }
            model = bnn.SampleSet(net, draws)
        else:
            estimator = "flipout" if case == "flipout" else "reparam"
            model = bnn.bayesianize(mlp(), estimator=estimator, init="random", rng=0)

        def run() -> None:
            bnn.predict_with_uncertainty(model, x, num_samples=samples, rng=0)
    elif case.startswith("bayesian_torch_"):  # bayesian_torch_{reparam,flipout}_loop
        bt_model = BayesianTorchMLP(case.split("_")[2]).eval()

        def run() -> None:
            with torch.no_grad():
                for _ in range(samples):
                    bt_model(x)
    elif case == "pyro_predictive":
        from pyro.infer import Predictive

        pyro_model, guide = pyro_model_and_guide()
        guide(x[:2], torch.zeros(2, dtype=torch.long))  # set up the guide on observed data
        predictive = Predictive(
            pyro_model, guide=guide, num_samples=samples, return_sites=["_RETURN"]
        )

        def run() -> None:
            with torch.no_grad():
                predictive(x)
    else:
        raise ValueError(case)
    return run


def _status_kb(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def start_peak_measurement() -> int:
    """Reset the process's peak RSS (Linux ``clear_refs``) and return the current RSS in kB.

    Falls back to the lifetime peak (``ru_maxrss``) where the reset is not available, which
    hides a prediction peak below the one left by importing the libraries.
    """
    try:
        Path("/proc/self/clear_refs").write_text("5")
        current = _status_kb("VmRSS")
        if current is not None:
            return current
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def peak_growth_mb(base_kb: int) -> float:
    """Peak RSS since :func:`start_peak_measurement`, above the RSS it saw, in MB."""
    peak = _status_kb("VmHWM")
    if peak is None:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return (peak - base_kb) / 1024


def prediction_case(case: str, inputs: int, samples: int, repeats: int) -> tuple[float, float]:
    with mp.get_context("spawn").Pool(1) as pool:
        return pool.apply(
            _prediction_case, (case, inputs, samples, repeats, torch.get_num_threads())
        )


def prediction_ratios(inputs: int, samples: int, repeats: int) -> dict[str, float]:
    floor, floor_memory = prediction_case("floor", inputs, samples, repeats)
    result = {"predict_floor_seconds": floor, "predict_floor_peak_mb": floor_memory}
    cases = ["bayesian", "flipout", "mc_dropout", "sample_set", "pyro_predictive"]
    if bayesian_torch_available():
        cases += ["bayesian_torch_reparam_loop", "bayesian_torch_flipout_loop"]
    for case in cases:
        seconds, memory = prediction_case(case, inputs, samples, repeats)
        result[f"predict_{case}"] = seconds / floor
        result[f"predict_{case}_peak_mb"] = memory
    return result


SMALL_BATCH_CASES = (
    "pyro_predictive",
    "bayesian",
    "loop_bayesian",
    "mc_dropout",
    "loop_mc_dropout",
    "sample_set",
    "loop_sample_set",
    "marginal_bayesian",
    "marginal_mc_dropout",
)


def _small_batch_rounds(samples: int, rounds: int, threads: int) -> list[dict[str, float]]:
    """Runs in a fresh process: seconds of every small-batch case, round by round."""
    torch.manual_seed(0)
    torch.set_num_threads(threads)
    x = torch.randn(32, 784)
    cases = list(SMALL_BATCH_CASES)
    if bayesian_torch_available():
        cases.append("bayesian_torch_reparam_loop")
    runners = {case: _runner(case, x, samples) for case in cases}
    for run in runners.values():
        run()  # warm-up
    return [
        {case: median_seconds(run, repeats=1, warmup=0) for case, run in runners.items()}
        for _ in range(rounds)
    ]


def small_batch_ratios(samples: int, repeats: int) -> dict[str, float]:
    """Speed-ups (higher is better) at 32 inputs: bnn vs a Python loop over samples, vs Pyro.

    All cases run in one process, interleaved round by round; each figure is the median of the
    per-round ratios (the machine's speed drifts between minutes, not within a round).
    """
    rounds = max(repeats, 21)
    with mp.get_context("spawn").Pool(1) as pool:
        timings = pool.apply(_small_batch_rounds, (samples, rounds, torch.get_num_threads()))
    result = {}
    for case in ("bayesian", "mc_dropout", "sample_set"):
        for baseline, label in ((f"loop_{case}", "loop"), ("pyro_predictive", "pyro")):
            ratios = [t[baseline] / t[case] for t in timings]
            result[f"small_batch_{case}_speedup_vs_{label}"] = statistics.median(ratios)
    for case in ("bayesian", "mc_dropout"):  # joint=False: local reparameterisation
        ratios = [t[f"loop_{case}"] / t[f"marginal_{case}"] for t in timings]
        result[f"small_batch_marginal_{case}_speedup_vs_loop"] = statistics.median(ratios)
    if "bayesian_torch_reparam_loop" in timings[0]:
        ratios = [t["bayesian_torch_reparam_loop"] / t["bayesian"] for t in timings]
        result["small_batch_bayesian_speedup_vs_bayesian_torch_loop"] = statistics.median(ratios)
    return result


def scaling(repeats: int) -> dict[str, float]:
    result = {}
    for samples in (10, 100, 1000):
        result[f"scaling_samples_{samples}_seconds"], _ = prediction_case(
            "bayesian", 256, samples, repeats
        )
    for inputs in (32, 512, 4096):
        result[f"scaling_inputs_{inputs}_seconds"], _ = prediction_case(
            "bayesian", inputs, 100, repeats
        )
    return result


def markdown(results: dict[str, float]) -> str:
    lines = ["| measurement | value | target | holds |", "|---|---|---|---|"]
    for key, value in results.items():
        target = TARGETS.get(key)
        holds = "—" if target is None else ("yes" if value <= target else "no")
        lines.append(
            f"| {key} | {value:.3f} | {'—' if target is None else f'≤ {target}'} | {holds} |"
        )
    return "\n".join(lines)


SECTIONS = ("training", "fit-small", "prediction", "small-batch", "scaling")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--inputs", type=int, default=10_000)
    parser.add_argument("--samples", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-scaling", action="store_true")
    parser.add_argument(
        "--sections",
        nargs="+",
        choices=SECTIONS,
        default=list(SECTIONS),
        help="which parts to run (default: all)",
    )
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    parser.add_argument("--output", type=Path, default=Path("benchmark-results"))
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    results: dict[str, float] = {
        "threads": float(torch.get_num_threads()),
        "inputs": float(args.inputs),
        "samples": float(args.samples),
    }
    if "training" in args.sections:
        training_rounds = max(args.repeats, 7)
        results |= training_ratios(training_rounds)
        results |= training_ratios(training_rounds, optimizer=False)
        results |= training_ratios(training_rounds, batch=512)
    if "fit-small" in args.sections:
        results |= fit_small_ratios(max(args.repeats, 7))
    if "prediction" in args.sections:
        results |= prediction_ratios(args.inputs, args.samples, args.repeats)
    if "small-batch" in args.sections:
        results |= small_batch_ratios(args.samples, args.repeats)
    if "scaling" in args.sections and not args.skip_scaling:
        results |= scaling(args.repeats)
    table = markdown(results)
    print(table)
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "suite.json").write_text(json.dumps(results, indent=2))
    (args.output / "suite.md").write_text(table + "\n")


if __name__ == "__main__":
    main()
