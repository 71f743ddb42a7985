"""``bnn demo``: MC dropout and Bayes by backprop on a 1-D toy problem and on UCI yacht.

Prints a table (RMSE, test log-likelihood, 95% interval coverage, training time), and writes
``metrics.json`` and ``toy_predictive.png`` into the output folder. No network access; the
yacht data ships with the package.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from bnn._io import atomic_write, write_text_atomically
from bnn.apps.datasets import Standardizer, load_uci
from bnn.evaluate import metrics
from bnn.evaluate.plots import compare_predictive
from bnn.infer.training.fit import fit
from bnn.likelihoods import Gaussian, RegressionPrediction
from bnn.nn.convert import bayesianize
from bnn.nn.dropout import MCDropout
from bnn.predict import predict_with_uncertainty
from bnn.random.rng import RNG

__all__ = [
    "DemoResult",
    "ToyRun",
    "format_table",
    "reading_notes",
    "run_demo",
    "run_toy",
    "toy_data",
]

METHODS = ("mc_dropout", "vi")
LEARNING_RATES = {"mc_dropout": 1e-2, "vi": 3e-3}


@dataclass(frozen=True)
class DemoResult:
    """One row of the demo table (metrics on the original target scale)."""

    dataset: str
    method: str
    rmse: float
    test_log_likelihood: float
    coverage_95: float
    test_points: int
    seconds: float


def _network(inputs: int, hidden: int, layers: int, dropout: float) -> nn.Sequential:
    modules: list[nn.Module] = []
    width = inputs
    for _ in range(layers):
        modules += [nn.Linear(width, hidden), nn.ReLU(), nn.Dropout(dropout)]
        width = hidden
    modules.append(nn.Linear(width, 1))
    return nn.Sequential(*modules)


def _model(method: str, inputs: int, hidden: int, layers: int, rng: RNG) -> nn.Module:
    with rng.stream("init"):
        network = _network(inputs, hidden, layers, dropout=0.05 if method == "mc_dropout" else 0.0)
    if method == "mc_dropout":
        return MCDropout(network)
    return bayesianize(network, init="random", init_std=1e-3, rng=rng)


def _train_and_predict(
    method: str,
    x_train: Tensor,
    y_train: Tensor,
    x_test: Tensor,
    *,
    hidden: int,
    layers: int,
    epochs: int,
    rng: RNG,
    dataset: str = "",
) -> tuple[RegressionPrediction, float, Standardizer, Standardizer]:
    if dataset:  # a line per step: the demo's long work is never silent
        print(f"training {method} on {dataset} ({epochs} epochs)", flush=True)
    x_scaler, y_scaler = Standardizer.fit(x_train), Standardizer.fit(y_train)
    model = _model(method, x_train.shape[1], hidden, layers, rng)
    likelihood = Gaussian(0.5, learn_std=True)
    start = time.perf_counter()
    fit(
        model,
        (x_scaler.transform(x_train), y_scaler.transform(y_train).unsqueeze(-1)),
        likelihood=likelihood,
        epochs=epochs,
        batch_size=32,
        lr=LEARNING_RATES[method],
        rng=rng,
        progress=bool(dataset),
    )
    seconds = time.perf_counter() - start
    prediction = predict_with_uncertainty(
        model, x_scaler.transform(x_test), num_samples=200, likelihood=likelihood, rng=rng
    )
    assert isinstance(prediction, RegressionPrediction)
    return prediction.rescale(y_scaler.mean, y_scaler.std), seconds, x_scaler, y_scaler


def _score(
    dataset: str, method: str, prediction: RegressionPrediction, y: Tensor, seconds: float
) -> DemoResult:
    target = y.unsqueeze(-1)
    return DemoResult(
        dataset=dataset,
        method=method,
        rmse=metrics.rmse(prediction, target),
        test_log_likelihood=-metrics.nll(prediction, target),
        coverage_95=metrics.interval_coverage(prediction, target, 0.95),
        test_points=int(y.shape[0]),
        seconds=seconds,
    )


def toy_data(rng: RNG, n: int = 160) -> tuple[Tensor, Tensor]:
    """``y = sin(3x) + 0.1 ε`` on two clusters, ``x ∈ [-1, -0.25] ∪ [0.25, 1]``."""
    generator = rng.torch_generator("toy-data")
    x = torch.rand(n, 1, generator=generator) * 0.75 + 0.25
    x = x * torch.where(torch.rand(n, 1, generator=generator) < 0.5, -1.0, 1.0)
    y = torch.sin(3 * x) + 0.1 * torch.randn(n, 1, generator=generator)
    return x, y.squeeze(-1)


@dataclass(frozen=True)
class ToyRun:
    """The toy problem's data and each method's prediction on ``[grid; test inputs]``."""

    x: Tensor
    y: Tensor
    grid: Tensor
    test_x: Tensor
    test_y: Tensor
    predictions: dict[str, tuple[RegressionPrediction, float]]  # method -> (prediction, s)

    def part(self, method: str, on_grid: bool) -> RegressionPrediction:
        """``method``'s prediction on the grid or on the test inputs."""
        prediction, _ = self.predictions[method]
        cut = slice(None, len(self.grid)) if on_grid else slice(len(self.grid), None)
        return RegressionPrediction(
            samples=prediction.samples[:, cut],
            loc=prediction.loc[:, cut],
            scale=prediction.scale[:, cut],
        )


def run_toy(rng: RNG, *, quick: bool = False) -> ToyRun:
    """Train every demo method on the 1-D toy problem and predict on a grid and test points."""
    toy_x, toy_y = toy_data(rng)
    grid = torch.linspace(-2, 2, 200).unsqueeze(-1)
    test_x, test_y = toy_data(rng.spawn("toy-test"), n=100)
    predictions = {}
    for method in METHODS:
        prediction, seconds, _, _ = _train_and_predict(
            method,
            toy_x,
            toy_y,
            torch.cat([grid, test_x]),
            hidden=50,
            layers=2,
            epochs=60 if quick else 400,
            rng=rng.spawn(f"toy-{method}"),
            dataset="toy-1d",
        )
        predictions[method] = (prediction, seconds)
    return ToyRun(toy_x, toy_y, grid, test_x, test_y, predictions)


def run_demo(output: Path, *, seed: int = 0, quick: bool = False) -> list[DemoResult]:
    """Run the demo, write ``metrics.json`` and ``toy_predictive.png`` into ``output``."""
    output.mkdir(parents=True, exist_ok=True)
    rng = RNG(seed)
    toy = run_toy(rng, quick=quick)
    results = [
        _score("toy-1d", method, toy.part(method, on_grid=False), toy.test_y, seconds)
        for method, (_, seconds) in toy.predictions.items()
    ]
    split = load_uci("yacht", 0)
    for method in METHODS:
        prediction, seconds, _, _ = _train_and_predict(
            method,
            split.x_train,
            split.y_train,
            split.x_test,
            hidden=50,
            layers=1,
            epochs=40 if quick else 400,
            rng=rng.spawn(f"yacht-{method}"),
            dataset="yacht (split 0)",
        )
        results.append(_score("yacht (split 0)", method, prediction, split.y_test, seconds))
    scores = [{k: v for k, v in asdict(r).items() if k != "seconds"} for r in results]
    timings = {f"{r.dataset}/{r.method}": r.seconds for r in results}
    write_text_atomically(
        output / "metrics.json",
        json.dumps(
            {
                "seed": seed,
                "quick": quick,
                "results": scores,  # the same bits for the same seed, on every run
                "training_seconds": timings,  # wall-clock: varies from run to run
            },
            indent=2,
        ),
    )
    grid_predictions = {method: toy.part(method, on_grid=True) for method in METHODS}
    _plot(output / "toy_predictive.png", toy.x, toy.y, toy.grid, grid_predictions)
    return results


def format_table(results: list[DemoResult]) -> str:
    """Markdown table of the demo results."""
    lines = [
        "| dataset | method | RMSE | test log-lik | 95% coverage | train time (s) |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r.dataset} | {r.method} | {r.rmse:.3f} | {r.test_log_likelihood:.3f} | "
            f"{r.coverage_95:.2f} | {r.seconds:.1f} |"
        )
    return "\n".join(lines)


def reading_notes(results: list[DemoResult]) -> list[str]:
    """What the table shows, in words: miscalibrated rows, and what MC dropout cannot do.

    A row's 95% intervals are flagged when the number of test points they cover is in a
    binomial tail of probability < 0.001 under calibration: too few covered is over-confident,
    too many (intervals too wide) under-confident.
    """
    notes = []
    for r in results:
        covered = round(r.coverage_95 * r.test_points)
        counts = range(r.test_points + 1)
        below = sum(_binomial(r.test_points, k) for k in counts if k <= covered)
        above = sum(_binomial(r.test_points, k) for k in counts if k >= covered)
        verdict = "over" if below < 1e-3 else "under" if above < 1e-3 else None
        if verdict is not None:
            notes.append(
                f"{r.dataset} / {r.method}: {verdict}-confident (95% intervals cover "
                f"{covered} of {r.test_points} test points); a noise level chosen on "
                "validation data, longer training or an ensemble helps."
            )
    notes.append(
        "MC dropout with ReLU extrapolates as straight lines with a band of nearly fixed width "
        "(toy_predictive.png): its uncertainty hardly grows away from the data. Bayes by "
        "backprop, deep ensembles (bnn.infer.deep_ensemble) and NUTS (bnn.infer.nuts) widen "
        "it there."
    )
    return notes


def _binomial(trials: int, successes: int, probability: float = 0.95) -> float:
    failures = trials - successes
    return math.comb(trials, successes) * probability**successes * (1 - probability) ** failures


def _plot(
    path: Path, x: Tensor, y: Tensor, grid: Tensor, predictions: dict[str, RegressionPrediction]
) -> None:
    """Write the toy predictive figure, or say which extra it needs."""
    try:
        figure = compare_predictive(
            predictions, grid, x_train=x, y_train=y, truth=torch.sin(3 * grid), ylim=(-3, 3)
        )
    except ImportError as error:
        print(f"{path.name} not written: {error}")
        return
    with atomic_write(path) as handle:
        figure.savefig(handle, format="png", dpi=120)
