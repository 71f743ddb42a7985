"""The UCI regression benchmark (Hernández-Lobato & Adams 2015; Gal & Ghahramani 2016).

Protocol: one hidden layer of 50 ReLU units; inputs and targets standardised with the training
split's statistics; metrics on the original target scale (RMSE, test log-likelihood as the
log-sum-exp over function samples, 95% interval coverage); mean ± standard error over splits.
Hyper-parameters are the library's defaults below — nothing is tuned on test data. The number
of epochs is chosen per split on a validation set carved from the *training* split
(``Defaults.validation_fraction``, drawn from the split's RNG): training keeps the weights of
the epoch with the best validation log-likelihood.

    bnn benchmark uci --dataset boston --method mc_dropout --splits 20 \
        --data-dir DIR --output uci-results

where ``DIR`` holds ``boston/`` in the layout of ``docs/data.md``.
"""

from __future__ import annotations

import functools
import json
import math
import time
from collections.abc import Iterable
from concurrent.futures import Executor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from bnn._io import write_text_atomically
from bnn._jobs import run_jobs
from bnn._progress import progress_bar
from bnn.apps import uci_posthoc
from bnn.apps.datasets import Standardizer, UCISplit, load_uci, num_splits
from bnn.apps.uci_setup import HIDDEN, Defaults, Prepared, validated_noise
from bnn.apps.uci_setup import network as mlp
from bnn.evaluate import metrics
from bnn.infer.ensemble import deep_ensemble
from bnn.infer.sgmcmc import StepSchedule, sghmc
from bnn.infer.vi import Validation, fit
from bnn.likelihoods import Gaussian, HeteroscedasticGaussian, RegressionPrediction
from bnn.nn.convert import bayesianize
from bnn.nn.dropout import MCDropout
from bnn.predict import predict_with_uncertainty
from bnn.random.rng import RNG

__all__ = [
    "METHODS",
    "PUBLISHED",
    "Defaults",
    "SplitResult",
    "SummaryRow",
    "format_table",
    "run_uci",
    "summarise",
    "write_report",
]

METHODS = ("mc_dropout", "ensemble", "vi", "sghmc", "laplace", "swag", "gp")

# Gal & Ghahramani (2016), corrected arXiv v6, Table 1: MC dropout (mean, standard error).
PUBLISHED = {
    "boston": {"rmse": (2.97, 0.19), "log_likelihood": (-2.46, 0.06)},
    "concrete": {"rmse": (5.23, 0.12), "log_likelihood": (-3.04, 0.02)},
    "energy": {"rmse": (1.66, 0.04), "log_likelihood": (-1.99, 0.02)},
    "yacht": {"rmse": (1.11, 0.09), "log_likelihood": (-1.55, 0.03)},
    "kin8nm": {"rmse": (0.10, 0.00), "log_likelihood": (0.95, 0.01)},
}


@dataclass(frozen=True)
class SplitResult:
    dataset: str
    method: str
    split: int
    rmse: float
    log_likelihood: float
    coverage_95: float
    seconds: float


def _train_and_predict(
    method: str, split: UCISplit, defaults: Defaults, rng: RNG
) -> RegressionPrediction:
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}.")
    train, validation = _carve_validation(split.x_train.shape[0], defaults, rng)
    x_train, y_train = split.x_train[train], split.y_train[train]
    x_scaler, y_scaler = Standardizer.fit(x_train), Standardizer.fit(y_train)
    options: dict[str, Any] = {
        "epochs": defaults.epochs,
        "batch_size": defaults.batch_size,
        "lr": defaults.lr,
    }
    if validation is not None:
        options["validation"] = Validation(
            x_scaler.transform(split.x_train[validation]),
            y_scaler.transform(split.y_train[validation]).unsqueeze(-1),
        )
    data = Prepared(
        x=x_scaler.transform(x_train),
        y=y_scaler.transform(y_train).unsqueeze(-1),
        x_test=x_scaler.transform(split.x_test),
        options=options,
    )
    predict = {
        "ensemble": _ensemble_prediction,
        "mc_dropout": _homoscedastic_prediction,
        "vi": _homoscedastic_prediction,
        "sghmc": _sghmc_prediction,
        "laplace": uci_posthoc.laplace_prediction,
        "swag": uci_posthoc.swag_prediction,
        "gp": uci_posthoc.gp_prediction,
    }[method]
    prediction = predict(method, data, defaults, rng)
    return prediction.rescale(y_scaler.mean, y_scaler.std)


def _ensemble_prediction(
    method: str,  # noqa: ARG001 - one signature for every method
    data: Prepared,
    defaults: Defaults,
    rng: RNG,
) -> RegressionPrediction:
    """Heteroscedastic members trained with β-NLL; the mixture of their predictives."""
    inputs = data.x.shape[1]
    ensemble, _ = deep_ensemble(
        lambda: mlp(inputs, 2),
        (data.x, data.y),
        likelihood=HeteroscedasticGaussian(beta=defaults.ensemble_beta),
        num_members=defaults.ensemble_members,
        rng=rng,
        **data.options,
    )
    prediction = predict_with_uncertainty(
        ensemble,
        data.x_test,
        likelihood=HeteroscedasticGaussian(),
        num_samples=defaults.ensemble_members,
    )
    assert isinstance(prediction, RegressionPrediction)
    return prediction


def _homoscedastic_prediction(
    method: str, data: Prepared, defaults: Defaults, rng: RNG
) -> RegressionPrediction:
    """MC dropout or VI with a learned noise, re-chosen on the validation split."""
    model = _homoscedastic_model(method, data.x.shape[1], defaults, rng)
    likelihood = Gaussian(0.5, learn_std=True)
    fit(model, (data.x, data.y), likelihood=likelihood, rng=rng, progress=False, **data.options)
    likelihood = validated_noise(model, likelihood, data.options.get("validation"), defaults, rng)
    prediction = predict_with_uncertainty(
        model, data.x_test, likelihood=likelihood, num_samples=defaults.num_samples, rng=rng
    )
    assert isinstance(prediction, RegressionPrediction)
    return prediction


def _sghmc_prediction(
    method: str,  # noqa: ARG001 - one signature for every method
    data: Prepared,
    defaults: Defaults,
    rng: RNG,
) -> RegressionPrediction:
    """SGHMC from a MAP start, with the noise the MAP fit learned."""
    with rng.stream("init"):
        network = mlp(data.x.shape[1], 1)
    learned = Gaussian(0.5, learn_std=True)
    fit(network, (data.x, data.y), likelihood=learned, rng=rng, progress=False, **data.options)
    noise = Gaussian(float(learned.std.detach()))
    steps_per_epoch = math.ceil(data.x.shape[0] / defaults.batch_size)
    samples, _ = sghmc(
        network,
        (data.x, data.y),
        likelihood=noise,
        lr=1e-2 * noise.std.item() ** 2 / data.x.shape[0],
        schedule=StepSchedule(
            steps=200 * steps_per_epoch, burn_in=50 * steps_per_epoch, thin=steps_per_epoch
        ),
        batch_size=defaults.batch_size,
        rng=rng,
        progress=False,
    )
    prediction = predict_with_uncertainty(
        samples, data.x_test, likelihood=noise, num_samples=samples.num_samples
    )
    assert isinstance(prediction, RegressionPrediction)
    return prediction


def _homoscedastic_model(method: str, inputs: int, defaults: Defaults, rng: RNG) -> nn.Module:
    """MC dropout (dropout after the hidden layer) or a Bayes-by-backprop network."""
    if method == "mc_dropout":
        with rng.stream("init"):
            network = nn.Sequential(
                nn.Linear(inputs, HIDDEN),
                nn.ReLU(),
                nn.Dropout(defaults.dropout),
                nn.Linear(HIDDEN, 1),
            )
        return MCDropout(network)
    with rng.stream("init"):
        network = mlp(inputs, 1)
    return bayesianize(network, init="random", init_std=1e-3, rng=rng)


def _carve_validation(size: int, defaults: Defaults, rng: RNG) -> tuple[Tensor, Tensor | None]:
    """Indices ``(train, validation)`` of the training split; no validation for fraction 0."""
    order = torch.randperm(size, generator=rng.torch_generator("validation"))
    held_out = round(defaults.validation_fraction * size)
    if held_out == 0:
        return order.sort().values, None
    return order[held_out:].sort().values, order[:held_out].sort().values


def run_uci(
    dataset: str,
    method: str,
    *,
    splits: int | None = None,
    data_dir: str | Path | None = None,
    seed: int = 0,
    defaults: Defaults | None = None,
    executor: Executor | None = None,
    threads_per_job: int | None = None,
    progress: bool = True,
) -> list[SplitResult]:
    """Run ``method`` on the first ``splits`` splits of ``dataset`` (all when ``None``).

    Split ``i`` uses ``RNG(seed).spawn(i)``: results do not depend on which splits run, nor on
    the ``executor`` that runs them (any ``concurrent.futures.Executor``: a process pool, a
    Dask cluster; ``threads_per_job`` torch threads per split, 1 by default there).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}.")
    defaults = defaults or Defaults()
    if not 0 <= defaults.validation_fraction < 1:
        raise ValueError(
            f"validation_fraction must be in [0, 1), got {defaults.validation_fraction!r}."
        )
    available = num_splits(dataset, data_dir)
    count = available if splits is None else splits
    if not 1 <= count <= available:
        raise ValueError(f"splits must be in [1, {available}], got {splits}.")
    # every split is read (and its files checked) before the first one trains
    loaded = [load_uci(dataset, index, data_dir=data_dir) for index in range(count)]
    jobs: Iterable[tuple[int, UCISplit]] = list(enumerate(loaded))
    if executor is None:
        jobs = progress_bar(jobs, desc=f"{dataset}/{method}", disable=not progress)
    return run_jobs(
        functools.partial(_run_split, dataset, method, defaults, seed),
        jobs,
        executor=executor,
        threads_per_job=threads_per_job,
        describe=lambda index: f"{dataset} split {index}",
    )


def _run_split(
    dataset: str, method: str, defaults: Defaults, seed: int, job: tuple[int, UCISplit]
) -> SplitResult:
    """Train and score one split (a picklable job for any executor)."""
    index, split = job
    start = time.perf_counter()
    prediction = _train_and_predict(method, split, defaults, RNG(seed).spawn(index))
    seconds = time.perf_counter() - start
    y = split.y_test.unsqueeze(-1)
    return SplitResult(
        dataset=dataset,
        method=method,
        split=index,
        rmse=metrics.rmse(prediction, y),
        log_likelihood=-metrics.nll(prediction, y),
        coverage_95=metrics.interval_coverage(prediction, y, 0.95),
        seconds=seconds,
    )


def _mean_se(values: list[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, math.nan
    variance = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
    return mean, math.sqrt(variance / len(values))


@dataclass(frozen=True)
class SummaryRow:
    """Mean ± standard error over splits for one (dataset, method)."""

    dataset: str
    method: str
    splits: int
    rmse: tuple[float, float]
    log_likelihood: tuple[float, float]
    coverage_95: tuple[float, float]
    seconds: tuple[float, float]
    published_rmse: tuple[float, float] | None
    published_log_likelihood: tuple[float, float] | None

    @property
    def reaches_published(self) -> bool | None:
        """Both RMSE and log-likelihood at least as good as the published MC dropout row."""
        if self.published_rmse is None or self.published_log_likelihood is None:
            return None
        return (
            self.rmse[0] <= self.published_rmse[0]
            and self.log_likelihood[0] >= self.published_log_likelihood[0]
        )


def summarise(results: list[SplitResult]) -> list[SummaryRow]:
    """One row per (dataset, method) next to the published MC dropout numbers."""
    rows = []
    for dataset, method in dict.fromkeys((r.dataset, r.method) for r in results):
        group = [r for r in results if (r.dataset, r.method) == (dataset, method)]
        published = PUBLISHED.get(dataset, {})
        rows.append(
            SummaryRow(
                dataset=dataset,
                method=method,
                splits=len(group),
                rmse=_mean_se([r.rmse for r in group]),
                log_likelihood=_mean_se([r.log_likelihood for r in group]),
                coverage_95=_mean_se([r.coverage_95 for r in group]),
                seconds=_mean_se([r.seconds for r in group]),
                published_rmse=published.get("rmse"),
                published_log_likelihood=published.get("log_likelihood"),
            )
        )
    return rows


def _pm(value: tuple[float, float] | None) -> str:
    """``mean ± standard error``; the mean alone when one split gives no standard error."""
    if value is None:
        return "—"
    mean, error = value
    return f"{mean:.3f}" if math.isnan(error) else f"{mean:.3f} ± {error:.3f}"


def format_table(rows: list[SummaryRow]) -> str:
    """Markdown table: ours (mean ± s.e.) next to the published MC dropout row."""
    lines = [
        "| dataset | method | splits | RMSE | test log-lik | 95% coverage | s/split "
        "| published MC-dropout RMSE | published log-lik | reaches published |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        reaches = {True: "yes", False: "no", None: "—"}[row.reaches_published]
        lines.append(
            f"| {row.dataset} | {row.method} | {row.splits} | {_pm(row.rmse)} | "
            f"{_pm(row.log_likelihood)} | {_pm(row.coverage_95)} | {row.seconds[0]:.1f} | "
            f"{_pm(row.published_rmse)} | {_pm(row.published_log_likelihood)} | {reaches} |"
        )
    return "\n".join(lines)


def write_report(results: list[SplitResult], output: Path) -> str:
    """Write ``uci.json`` (per split and summary) and ``uci.md``; return the markdown table."""
    output.mkdir(parents=True, exist_ok=True)
    rows = summarise(results)
    table = format_table(rows)
    report = {"splits": [asdict(r) for r in results], "summary": [asdict(r) for r in rows]}
    write_text_atomically(output / "uci.json", json.dumps(report, indent=2))
    write_text_atomically(output / "uci.md", table + "\n")
    return table
