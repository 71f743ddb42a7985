"""Fit and predict time and peak memory of every scalable method on 10k, 100k and 500k rows.

    python benchmarks/scaling.py [--rows 10000,100000,500000] [--methods all] [--epochs 2]
                                 [--threads 1] [--output benchmarks/results/scaling]

Data: `bnn.apps.datasets.synthetic_regression` (8 features, Friedman #1 on five of them,
noise σ = 0.1, so the best possible test RMSE is 0.1 and log-likelihood 0.884); every method
trains from a ``DataLoader`` (batch 512, shuffled by a seeded generator) for ``--epochs``
passes; the test set is 10,000 further rows. Each (method, rows) pair runs in a fresh process,
so its peak resident memory (``ru_maxrss``, the interpreter and torch included) is its own.

Network: 8 → 50 → 50 → 1 (ReLU). Methods: ``map`` (Adam, learned noise), ``mc_dropout``
(p = 0.05), ``vi`` (Bayes by backprop, flipout), ``ensemble`` (5 members), ``laplace`` (the
MAP network, all-layer KFAC from the loader, prior precision and noise by the marginal
likelihood, GLM predictive), ``swag`` (from the MAP network, 10 epochs of SGD, rank 10),
``neural_linear`` (exact last layer on the MAP features, from the loader), ``svgp`` (256
inducing points, ARD RBF), ``svi`` (Pyro, mean field), ``sghmc`` (``--epochs`` of steps from
the MAP network), ``boost`` (5 stages, 20 full-batch steps each). NUTS and HMC are
full-batch samplers whose every gradient reads all ``N`` rows — not large-``N`` methods, so
not here. Peers in the same run (``PEERS``): ``torch_map``, the ``map`` fit written directly in
PyTorch, and ``gpytorch_svgp``, the ``svgp`` fit written directly in GPyTorch.

"Linear in n" means: seconds per 100,000 rows of the fit do not grow with ``n``.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import bnn
from bnn._progress import progress_bar
from bnn.apps.datasets import oracle_scores, synthetic_regression
from bnn.evaluate import metrics

METHODS = (
    "map",
    "mc_dropout",
    "vi",
    "ensemble",
    "ensemble_lockstep",
    "laplace",
    "swag",
    "neural_linear",
    "svgp",
    "svi",
    "sghmc",
    "boost",
)
PEERS = ("torch_map", "gpytorch_svgp")
"""The same fits written directly in PyTorch and GPyTorch, as a user would without bnn."""
NOISE = 0.1
BATCH = 512
TEST_ROWS = 10_000
SAMPLES = 32
SGHMC_STEP = 2e-3  # ε·N, the step on the mean gradient
SWAG_EPOCHS = 10  # SWAG collects once per epoch: 10 epochs for a rank-10 covariance


def network(dropout: float = 0.0) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Linear(8, 50), nn.ReLU()]
    if dropout:
        layers.append(nn.Dropout(dropout))
    layers += [nn.Linear(50, 50), nn.ReLU(), nn.Linear(50, 1)]
    return nn.Sequential(*layers)


def loader(x: torch.Tensor, y: torch.Tensor) -> DataLoader[Any]:
    generator = torch.Generator().manual_seed(0)
    return DataLoader(TensorDataset(x, y), batch_size=BATCH, shuffle=True, generator=generator)


def trained_map(data: DataLoader[Any], epochs: int) -> tuple[nn.Module, bnn.Gaussian]:
    with bnn.RNG(0).stream("init"):
        net = network()
    noise = bnn.Gaussian(0.5, learn_std=True)
    bnn.fit(net, data, likelihood=noise, epochs=epochs, lr=3e-3, rng=0, progress=False)
    return net, bnn.Gaussian(float(noise.std.detach()))


def fit_method(method: str, data: DataLoader[Any], epochs: int) -> tuple[Any, dict[str, Any]]:
    """The trained posterior and the options its prediction needs."""
    fits: dict[str, Callable[[DataLoader[Any], int], tuple[Any, dict[str, Any]]]] = {
        "map": _map,
        "mc_dropout": _mc_dropout,
        "vi": _vi,
        "ensemble": _ensemble,
        "ensemble_lockstep": lambda data, epochs: _ensemble(data, epochs, lockstep=True),
        "laplace": _laplace,
        "swag": _swag,
        "neural_linear": _neural_linear,
        "svgp": _svgp,
        "svi": _svi,
        "sghmc": _sghmc,
        "boost": _boost,
        "torch_map": _torch_map,
        "gpytorch_svgp": _gpytorch_svgp,
    }
    return fits[method](data, epochs)


def _map(data: DataLoader[Any], epochs: int) -> tuple[Any, dict[str, Any]]:
    with bnn.RNG(0).stream("init"):
        net = network()
    noise = bnn.Gaussian(0.5, learn_std=True)
    point, _ = bnn.fit(net, data, likelihood=noise, epochs=epochs, lr=3e-3, rng=0, progress=False)
    return point, {"likelihood": bnn.Gaussian(float(noise.std.detach()))}


def _mc_dropout(data: DataLoader[Any], epochs: int) -> tuple[Any, dict[str, Any]]:
    with bnn.RNG(0).stream("init"):
        net = bnn.MCDropout(network(dropout=0.05))
    noise = bnn.Gaussian(0.5, learn_std=True)
    bnn.fit(net, data, likelihood=noise, epochs=epochs, lr=3e-3, rng=0, progress=False)
    return net, {"likelihood": bnn.Gaussian(float(noise.std.detach())), "num_samples": SAMPLES}


def _vi(data: DataLoader[Any], epochs: int) -> tuple[Any, dict[str, Any]]:
    with bnn.RNG(0).stream("init"):
        net = bnn.bayesianize(network(), estimator="flipout", init="random", rng=0)
    noise = bnn.Gaussian(0.5, learn_std=True)
    bnn.fit(net, data, likelihood=noise, epochs=epochs, lr=3e-3, rng=0, progress=False)
    return net, {"likelihood": bnn.Gaussian(float(noise.std.detach())), "num_samples": SAMPLES}


def _ensemble(
    data: DataLoader[Any], epochs: int, lockstep: bool = False
) -> tuple[Any, dict[str, Any]]:
    """Five members, each shuffling the dataset with its own seeded generator; with
    ``lockstep`` all trained at once (one vmapped step per mini-batch, on the tensors)."""
    ensemble, _ = bnn.infer.deep_ensemble(
        network,
        data.dataset.tensors if lockstep else data.dataset,  # type: ignore[attr-defined]
        batch_size=BATCH,
        likelihood=bnn.Gaussian(0.5, learn_std=True),
        num_members=5,
        epochs=epochs,
        lr=3e-3,
        rng=0,
        progress=False,
        lockstep=lockstep,
    )
    return ensemble, {}


def _laplace(data: DataLoader[Any], epochs: int) -> tuple[Any, dict[str, Any]]:
    net, noise = trained_map(data, epochs)
    posterior, _ = bnn.infer.laplace(
        net, data, likelihood=noise, subset="all", hessian="kron", progress=False
    )
    posterior.optimize_prior_precision("marglik")
    return posterior, {}


def _swag(data: DataLoader[Any], epochs: int) -> tuple[Any, dict[str, Any]]:
    net, noise = trained_map(data, epochs)
    posterior, _ = bnn.infer.swag(
        net,
        data,
        likelihood=noise,
        epochs=SWAG_EPOCHS,
        rank=SWAG_EPOCHS,
        lr=1e-3,
        rng=0,
        progress=False,
    )
    return posterior, {"likelihood": noise, "num_samples": SAMPLES}


def _neural_linear(data: DataLoader[Any], epochs: int) -> tuple[Any, dict[str, Any]]:
    net, noise = trained_map(data, epochs)
    posterior, _ = bnn.infer.neural_linear(net[:-1], data, likelihood=noise, progress=False)
    return posterior, {"likelihood": noise}


def _svgp(data: DataLoader[Any], epochs: int) -> tuple[Any, dict[str, Any]]:
    posterior, _ = bnn.infer.gp(
        None,
        data,
        likelihood=bnn.Gaussian(0.5, learn_std=True),
        method="svgp",
        kernel="rbf",  # ARD: one lengthscale per feature
        num_inducing=256,
        epochs=epochs,
        lr=0.01,
        rng=0,
        progress=False,
    )
    return posterior, {}


def _svi(data: DataLoader[Any], epochs: int) -> tuple[Any, dict[str, Any]]:
    net, noise = trained_map(data, 1)
    posterior, _ = bnn.infer.svi(
        net, data, likelihood=noise, epochs=epochs, lr=1e-3, rng=0, progress=False
    )
    return posterior, {"likelihood": noise, "num_samples": SAMPLES}


def _sghmc(data: DataLoader[Any], epochs: int) -> tuple[Any, dict[str, Any]]:
    net, noise = trained_map(data, epochs)
    rows = len(data.dataset)  # type: ignore[arg-type]
    steps = epochs * math.ceil(rows / BATCH)
    samples, _ = bnn.infer.sghmc(
        net,
        data,
        likelihood=noise,
        lr=SGHMC_STEP / rows,  # ε·∇U with ∇U = N × the mean gradient: ε·N is SGD's step
        schedule=bnn.infer.StepSchedule(steps=steps, burn_in=steps // 2, thin=max(1, steps // 64)),
        rng=0,
        progress=False,
    )
    return samples, {"likelihood": noise}


def _boost(data: DataLoader[Any], epochs: int) -> tuple[Any, dict[str, Any]]:  # noqa: ARG001
    boosted, _ = bnn.infer.boost(
        network,
        data,
        likelihood=bnn.Gaussian(0.5, learn_std=True),
        num_stages=5,
        epochs=20,
        shrinkage=0.5,
        rng=0,
        progress=False,
    )
    return boosted, {}


class _Fixed:
    """A plain model's predictive: ``N(mean(x), std(x)²)`` from ``predict(x)``."""

    def __init__(self, predict: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]):
        self.predict_mean_std = predict

    def predict(self, x: torch.Tensor) -> bnn.likelihoods.RegressionPrediction:
        mean, std = self.predict_mean_std(x)
        return bnn.likelihoods.RegressionPrediction(mean[None], mean[None], std[None])


def _torch_map(data: DataLoader[Any], epochs: int) -> tuple[Any, dict[str, Any]]:
    """``map`` in plain PyTorch: the same network, loader, Adam and Gaussian NLL."""
    torch.manual_seed(0)
    net = network()
    log_std = torch.tensor(math.log(0.5), requires_grad=True)
    optimizer = torch.optim.Adam([*net.parameters(), log_std], lr=3e-3)
    for _ in range(epochs):
        for x, y in data:
            optimizer.zero_grad()
            loss = ((y - net(x)) ** 2 / (2 * torch.exp(2 * log_std)) + log_std).mean()
            loss.backward()
            optimizer.step()

    @torch.no_grad()
    def predict(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean = net(x)
        return mean, torch.exp(log_std).expand_as(mean)

    return _Fixed(predict), {}


def _gpytorch_svgp(data: DataLoader[Any], epochs: int) -> tuple[Any, dict[str, Any]]:
    """``svgp`` in plain GPyTorch, as its SVGP tutorial writes it: natural gradients (0.1) for
    the variational distribution, Adam (0.01) for the rest, 256 inducing points from the
    first rows, ARD RBF kernel, the same loader."""
    import gpytorch

    torch.manual_seed(0)
    dataset = data.dataset
    inducing = torch.stack([dataset[i][0] for i in range(256)])

    class SVGP(gpytorch.models.ApproximateGP):  # type: ignore[misc]
        def __init__(self) -> None:
            distribution = gpytorch.variational.NaturalVariationalDistribution(256)
            strategy = gpytorch.variational.VariationalStrategy(
                self, inducing, distribution, learn_inducing_locations=True
            )
            super().__init__(strategy)
            self.mean_module = gpytorch.means.ConstantMean()
            self.covar_module = gpytorch.kernels.ScaleKernel(
                gpytorch.kernels.RBFKernel(ard_num_dims=inducing.shape[-1])
            )

        def forward(self, z: torch.Tensor) -> Any:
            return gpytorch.distributions.MultivariateNormal(
                self.mean_module(z), self.covar_module(z)
            )

    model, likelihood = SVGP(), gpytorch.likelihoods.GaussianLikelihood()
    rows = len(dataset)  # type: ignore[arg-type]
    natural = gpytorch.optim.NGD(model.variational_parameters(), num_data=rows, lr=0.1)
    adam = torch.optim.Adam([*model.hyperparameters(), *likelihood.parameters()], lr=0.01)
    objective = gpytorch.mlls.VariationalELBO(likelihood, model, num_data=rows)
    model.train()
    likelihood.train()
    for _ in range(epochs):
        for x, y in data:
            natural.zero_grad()
            adam.zero_grad()
            loss = -objective(model(x), y.squeeze(-1))
            loss.backward()
            natural.step()
            adam.step()
    model.eval()
    likelihood.eval()

    @torch.no_grad()
    def predict(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        means, stds = [], []
        for block in x.split(1024):
            observed = likelihood(model(block))
            means.append(observed.mean)
            stds.append(observed.variance.sqrt())
        return torch.cat(means)[:, None], torch.cat(stds)[:, None]

    return _Fixed(predict), {}


def worker(method: str, rows: int, epochs: int, threads: int) -> dict[str, Any]:
    """One (method, rows) measurement, in this process."""
    torch.set_num_threads(threads)
    x, y = synthetic_regression(rows + TEST_ROWS, noise_std=NOISE, rng=0)
    x_test, y_test = x[rows:].clone(), y[rows:].clone()
    data = loader(x[:rows].clone(), y[:rows].clone())
    del x, y
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    posterior, options = fit_method(method, data, epochs)
    fitted = time.perf_counter() - start
    start = time.perf_counter()
    prediction = (
        posterior.predict(x_test)
        if isinstance(posterior, _Fixed)
        else bnn.predict_with_uncertainty(posterior, x_test, rng=1, **options)
    )
    predicted = time.perf_counter() - start
    return {
        "method": method,
        "rows": rows,
        "fit_s": fitted,
        "predict_s": predicted,
        "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "baseline_mb": baseline,
        "rmse": metrics.rmse(prediction, y_test),
        "log_likelihood": -metrics.nll(prediction, y_test),
    }


def table(results: list[dict[str, Any]], row_counts: list[int]) -> str:
    """The markdown table: fit seconds per 100k rows, predict seconds, peak MB per n."""
    best_rmse, best_ll = oracle_scores(NOISE)
    head = " | ".join(f"{n:,}" for n in row_counts)
    lines = [
        f"| method | fit s per 100k rows ({head}) | fit s ({head}) | predict s "
        f"({TEST_ROWS:,} rows) | peak MB ({head}) | test RMSE / LL at {row_counts[-1]:,} |",
        "|---|---|---|---:|---|---|",
    ]
    for method in dict.fromkeys(r["method"] for r in results):
        mine = {r["rows"]: r for r in results if r["method"] == method}
        per = " / ".join(f"{mine[n]['fit_s'] / n * 1e5:.2f}" for n in row_counts if n in mine)
        fit = " / ".join(f"{mine[n]['fit_s']:.1f}" for n in row_counts if n in mine)
        peak = " / ".join(f"{mine[n]['peak_mb']:.0f}" for n in row_counts if n in mine)
        last = mine[max(mine)]
        lines.append(
            f"| {method} | {per} | {fit} | {last['predict_s']:.2f} | {peak} | "
            f"{last['rmse']:.3f} / {last['log_likelihood']:.3f} |"
        )
    lines.append(f"\nBest possible (true function and noise): RMSE {best_rmse} / LL {best_ll:.3f}.")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", default="10000,100000,500000")
    parser.add_argument("--methods", default="all")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--output", type=Path, default=None)
    parser.add_argument("--worker", nargs=2, metavar=("METHOD", "ROWS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        method, rows = args.worker
        print(json.dumps(worker(method, int(rows), args.epochs, args.threads)))
        return
    methods = [*METHODS, *PEERS] if args.methods == "all" else args.methods.split(",")
    row_counts = [int(n) for n in args.rows.split(",")]
    results = []
    runs = [(m, n) for m in methods for n in row_counts]
    for method, rows in progress_bar(runs, desc="scaling", disable=False):
        command = [sys.executable, __file__, "--worker", method, str(rows)]
        command += ["--epochs", str(args.epochs), "--threads", str(args.threads)]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode:
            raise SystemExit(f"{method} on {rows} rows failed:\n{done.stderr[-3000:]}")
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    report = table(results, row_counts)
    print(report)
    if args.output is not None:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.with_suffix(".json").write_text(json.dumps(results, indent=1))
        args.output.with_suffix(".md").write_text(report + "\n")


if __name__ == "__main__":
    main()
