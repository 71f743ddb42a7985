"""NUTS on the toy BNN (1→50→1 tanh, noise 0.1, 200 points): bnn.infer.nuts vs plain Pyro.

Same settings, same process. Plain Pyro gets the model as a ``PyroModule`` with ``PyroSample``
priors (the documented Pyro way) and runs its NUTS kernel chain after chain; ``bnn`` gets the
``nn.Module`` and runs its lock-step backend (all chains, one vmapped gradient per leapfrog),
once eager and once with ``jit_compile=True`` (``torch.compile`` of that gradient; the
compilation time is included). Reported: wall time, seconds per (chain-)gradient, effective
sample size (min over the predictive mean at 20 test points, arviz bulk ESS) per second, and
the ratios to Pyro.

    python benchmarks/nuts_toy_bnn.py [--warmup 100 --draws 100 --chains 4 --jit --threads 2]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro.infer import MCMC, NUTS
from pyro.nn import PyroModule, PyroSample
from torch import nn

import bnn

GRID = torch.linspace(-1, 1, 20).unsqueeze(-1)  # test points for the predictive ESS


def data(n: int = 200) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(n, 1, generator=generator) * 2 - 1
    y = torch.sin(3 * x) + 0.1 * torch.randn(n, 1, generator=generator)
    return x, y


def network() -> nn.Sequential:
    return nn.Sequential(nn.Linear(1, 50), nn.Tanh(), nn.Linear(50, 1))


class PyroBNN(PyroModule):
    def __init__(self) -> None:
        super().__init__()
        self.hidden = PyroModule[nn.Linear](1, 50)
        self.hidden.weight = PyroSample(dist.Normal(0.0, 1.0).expand([50, 1]).to_event(2))
        self.hidden.bias = PyroSample(dist.Normal(0.0, 1.0).expand([50]).to_event(1))
        self.out = PyroModule[nn.Linear](50, 1)
        self.out.weight = PyroSample(dist.Normal(0.0, 1.0).expand([1, 50]).to_event(2))
        self.out.bias = PyroSample(dist.Normal(0.0, 1.0).expand([1]).to_event(1))

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        mean = self.out(torch.tanh(self.hidden(x))).squeeze(-1)
        with pyro.plate("data", x.shape[0]):
            pyro.sample("obs", dist.Normal(mean, 0.1), obs=None if y is None else y.squeeze(-1))
        return mean


def min_ess(predictions: np.ndarray) -> float:
    """Minimum bulk ESS over test points; predictions [chain, draw, points]."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import arviz as az

        ess = az.ess(az.convert_to_dataset({"f": predictions}))["f"].values
    return float(np.min(ess))


class GradientCounter:
    """Counts Pyro's gradient evaluations (``pyro.ops.integrator.potential_grad`` calls)."""

    def __init__(self) -> None:
        import pyro.ops.integrator as integrator

        self.integrator = integrator
        self.original = integrator.potential_grad
        self.calls = 0

    def __enter__(self) -> GradientCounter:
        def counted(potential_fn, z):  # type: ignore[no-untyped-def]
            self.calls += 1
            return self.original(potential_fn, z)

        self.integrator.potential_grad = counted
        return self

    def __exit__(self, *exc: object) -> None:
        self.integrator.potential_grad = self.original


def rates(seconds: float, ess: float, gradients: int) -> dict[str, float]:
    """Wall time, ESS, ESS per second and cost per gradient of one sampler run."""
    return {
        "seconds": seconds,
        "min_ess": ess,
        "ess_per_second": ess / seconds,
        "gradient_evaluations": gradients,
        "ms_per_gradient": 1e3 * seconds / gradients,
    }


def run_pyro(x: torch.Tensor, y: torch.Tensor, args: argparse.Namespace) -> dict[str, float]:
    pyro.clear_param_store()
    model = PyroBNN()
    start = time.perf_counter()
    chains = []
    gradients = 0
    for chain in range(args.chains):
        pyro.set_rng_seed(chain)
        mcmc = MCMC(
            NUTS(
                model,
                jit_compile=args.jit,
                ignore_jit_warnings=True,
                max_tree_depth=args.max_tree_depth,
            ),
            num_samples=args.draws,
            warmup_steps=args.warmup,
            disable_progbar=True,
        )
        with GradientCounter() as counter:
            mcmc.run(x, y)
        gradients += counter.calls
        chains.append(mcmc.get_samples())
    seconds = time.perf_counter() - start
    grid = GRID
    predictions = []
    for samples in chains:
        predictive = pyro.infer.Predictive(model, samples, return_sites=["_RETURN"])
        predictions.append(predictive(grid)["_RETURN"].detach().numpy())
    return rates(seconds, min_ess(np.stack(predictions)), gradients)


def run_bnn(
    x: torch.Tensor, y: torch.Tensor, args: argparse.Namespace, compiled: bool
) -> dict[str, float]:
    with bnn.RNG(0).stream("init"):
        net = network()
    start = time.perf_counter()
    samples, history = bnn.infer.nuts(
        net,
        (x, y),
        likelihood=bnn.Gaussian(0.1),
        num_chains=args.chains,
        warmup=args.warmup,
        draws=args.draws,
        max_tree_depth=args.max_tree_depth,
        jit_compile=compiled,
        rng=0,
        progress=False,
    )
    seconds = time.perf_counter() - start
    grid = GRID
    functions = bnn.predict_with_uncertainty(samples, grid, num_samples=samples.num_samples).samples
    predictions = functions.reshape(args.chains, args.draws, -1).numpy()
    result = rates(seconds, min_ess(predictions), sum(history.per_chain("gradient_evaluations")))
    result["mean_leapfrog_steps_per_draw"] = float(samples.sample_stats["n_steps"].float().mean())
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--draws", type=int, default=100)
    parser.add_argument("--chains", type=int, default=2)
    parser.add_argument("--max-tree-depth", type=int, default=10)
    parser.add_argument("--jit", action="store_true", help="Pyro with jit_compile=True")
    parser.add_argument("--skip-pyro", action="store_true")
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    x, y = data()
    result: dict[str, object] = {"settings": vars(args) | {"output": str(args.output)}}
    result["bnn"] = run_bnn(x, y, args, compiled=False)
    print("bnn (eager)   ", result["bnn"])
    result["bnn_compiled"] = run_bnn(x, y, args, compiled=True)
    print("bnn (compiled)", result["bnn_compiled"])
    if not args.skip_pyro:
        result["pyro"] = run_pyro(x, y, args)
        print("pyro          ", result["pyro"])
        pyro_ess = result["pyro"]["ess_per_second"]  # type: ignore[index]
        for key in ("bnn", "bnn_compiled"):
            ratio = result[key]["ess_per_second"] / pyro_ess  # type: ignore[index]
            time_ratio = result["pyro"]["seconds"] / result[key]["seconds"]  # type: ignore[index]
            result[f"ratio_ess_per_second_{key}"] = ratio
            result[f"ratio_wall_time_{key}"] = time_ratio
            print(
                f"{key}: ESS/s ratio to pyro {ratio:.2f} (target >= 5); "
                f"wall-time ratio pyro/{key} {time_ratio:.2f}"
            )
    if args.output:
        args.output.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
