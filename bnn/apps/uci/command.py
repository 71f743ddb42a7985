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
from torch import Tensor

from bnn._io import write_text_atomically
from bnn._jobs import run_jobs
from bnn._progress import progress_bar
from bnn.apps.datasets import Standardizer, UCISplit, duplicated_inputs, load_uci, num_splits
from bnn.apps.uci.common import Defaults, Fitted, Prepared
from bnn.apps.uci.methods import FIT, fit_method
from bnn.apps.uci.tune import Tuning, check_tunable, tuned_defaults
from bnn.evaluate import metrics
from bnn.evaluate.recalibrate import ConformalRegressionPrediction, conformalize
from bnn.infer.training.fit import Validation
from bnn.posterior.model import as_posterior
from bnn.random.rng import RNG

__all__ = [
    "METHODS",
    "PUBLISHED",
    "RECALIBRATIONS",
    "Defaults",
    "SplitResult",
    "SummaryRow",
    "format_table",
    "run_uci",
    "summarise",
    "write_report",
]

METHODS = tuple(FIT)
RECALIBRATIONS = ("conformal",)

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
    conformal_coverage_90: float | None = None
    conformal_coverage_95: float | None = None
    stack_weights: list[float] | None = None
    tuned: dict[str, Any] | None = None
    duplicated_test_inputs: int = 0  # test inputs equal to a training input


def _prepare(split: UCISplit, defaults: Defaults, rng: RNG) -> tuple[Prepared, Standardizer]:
    """The split standardised with its training part's statistics, and the target scaler."""
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
    return data, y_scaler


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
    recalibrate: str | None = None,
    tuning: Tuning | None = None,
    progress: bool = True,
) -> list[SplitResult]:
    """Run ``method`` on the first ``splits`` splits of ``dataset`` (all when ``None``).

    Split ``i`` uses ``RNG(seed).spawn(i)``: results do not depend on which splits run, nor on
    the ``executor`` that runs them (any ``concurrent.futures.Executor``: a process pool, a
    Dask cluster; ``threads_per_job`` torch threads per split, 1 by default there).

    ``recalibrate="conformal"`` also reports the test coverage of split conformal 90 % and
    95 % intervals (normalised residual scores, ``bnn.evaluate.conformalize``) calibrated on
    the validation split; the method's own metrics are unchanged.

    ``tuning`` tunes each split's hyperparameters on its validation split first
    (``bnn.apps.uci.tune``; the method is reported as ``"<method>+tune"``).
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}.")
    if recalibrate is not None and recalibrate not in RECALIBRATIONS:
        raise ValueError(
            f"recalibrate must be one of {RECALIBRATIONS} or None, got {recalibrate!r}."
        )
    defaults = defaults or Defaults()
    if not 0 <= defaults.validation_fraction < 1:
        raise ValueError(
            f"validation_fraction must be in [0, 1), got {defaults.validation_fraction!r}."
        )
    if tuning is not None:
        check_tunable(method)
    if defaults.validation_fraction == 0 and (
        method == "stack" or recalibrate is not None or tuning is not None
    ):
        raise ValueError(
            "stacking, conformal recalibration and tuning need the validation split; use a "
            "validation fraction above 0."
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
        functools.partial(_run_split, dataset, method, defaults, seed, recalibrate, tuning),
        jobs,
        executor=executor,
        threads_per_job=threads_per_job,
        describe=lambda index: f"{dataset} split {index}",
    )


def _run_split(
    dataset: str,
    method: str,
    defaults: Defaults,
    seed: int,
    recalibrate: str | None,
    tuning: Tuning | None,
    job: tuple[int, UCISplit],
) -> SplitResult:
    """Train and score one split (a picklable job for any executor)."""
    index, split = job
    start = time.perf_counter()
    rng = RNG(seed).spawn(index)
    data, y_scaler = _prepare(split, defaults, rng)
    tuned = None
    if tuning is not None:
        defaults, result = tuned_defaults(method, data, defaults, tuning, rng)
        tuned = dict(result.best_params)
    fitted = fit_method(method, data, defaults, rng)
    prediction = fitted.predict(data.x_test).rescale(y_scaler.mean, y_scaler.std)
    seconds = time.perf_counter() - start
    y = split.y_test.unsqueeze(-1)
    conformal: dict[str, float] = {}
    if recalibrate == "conformal":
        y_standard = y_scaler.transform(split.y_test).unsqueeze(-1)
        conformal = _conformal_coverage(fitted, data, y_standard, rng.spawn("conformal"))
    return SplitResult(
        dataset=dataset,
        method=method if tuning is None else f"{method}+tune",
        split=index,
        rmse=metrics.rmse(prediction, y),
        log_likelihood=-metrics.nll(prediction, y),
        coverage_95=metrics.interval_coverage(prediction, y, 0.95),
        seconds=seconds,
        stack_weights=fitted.extras.get("stack_weights"),
        tuned=tuned,
        duplicated_test_inputs=duplicated_inputs(split.x_test, split.x_train),
        **conformal,
    )


def _conformal_coverage(
    fitted: Fitted, data: Prepared, y_test: Tensor, rng: RNG
) -> dict[str, float]:
    """Test coverage of split conformal 90 % / 95 % intervals calibrated on the validation split.

    Coverage is computed on the standardised scale (an affine map keeps it).
    """
    validation = data.options["validation"]
    dtype = fitted.dtype or validation.x.dtype
    conformal = conformalize(
        as_posterior(fitted.posterior),
        validation.x.to(dtype),
        validation.y.to(dtype),
        method="normalized",
        likelihood=fitted.likelihood,
        num_samples=fitted.num_samples or 100,
        rng=rng.spawn("calibrate"),
    )
    x_test = data.x_test.to(dtype)
    y_test = y_test.to(dtype)
    prediction = conformal.predict(x_test, rng=rng.spawn("test"))
    assert isinstance(prediction, ConformalRegressionPrediction)
    coverage = {}
    for level in (0.9, 0.95):
        lower, upper = prediction.interval(level)
        inside = (lower <= y_test) & (y_test <= upper)
        coverage[f"conformal_coverage_{round(100 * level)}"] = float(inside.double().mean())
    return coverage


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
    conformal_coverage_90: tuple[float, float] | None = None
    conformal_coverage_95: tuple[float, float] | None = None
    stack_weights: list[float] | None = None  # mean over splits

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
                conformal_coverage_90=_optional_mean_se([r.conformal_coverage_90 for r in group]),
                conformal_coverage_95=_optional_mean_se([r.conformal_coverage_95 for r in group]),
                stack_weights=_mean_weights([r.stack_weights for r in group]),
            )
        )
    return rows


def _optional_mean_se(values: list[float | None]) -> tuple[float, float] | None:
    """Mean ± standard error of a metric every split reports, else ``None``."""
    present = [v for v in values if v is not None]
    return _mean_se(present) if present and len(present) == len(values) else None


def _mean_weights(weights: list[list[float] | None]) -> list[float] | None:
    present = [w for w in weights if w is not None]
    if not present or len(present) != len(weights):
        return None
    return [sum(column) / len(present) for column in zip(*present, strict=True)]


def _pm(value: tuple[float, float] | None) -> str:
    """``mean ± standard error``; the mean alone when one split gives no standard error."""
    if value is None:
        return "—"
    mean, error = value
    return f"{mean:.3f}" if math.isnan(error) else f"{mean:.3f} ± {error:.3f}"


def format_table(rows: list[SummaryRow]) -> str:
    """Markdown table: ours (mean ± s.e.) next to the published MC dropout row.

    Conformal coverage columns appear when some row has them, stacking weights (in the order
    of ``bnn.apps.uci.methods.STACKED``) when some row is a stack.
    """
    conformal = any(row.conformal_coverage_90 is not None for row in rows)
    stacked = any(row.stack_weights is not None for row in rows)
    header = "| dataset | method | splits | RMSE | test log-lik | 95% coverage "
    if conformal:
        header += "| conformal 90% coverage | conformal 95% coverage "
    if stacked:
        header += "| stack weights "
    header += "| s/split | published MC-dropout RMSE | published log-lik | reaches published |"
    lines = [header, "|---" * (header.count("|") - 1) + "|"]
    for row in rows:
        reaches = {True: "yes", False: "no", None: "—"}[row.reaches_published]
        line = (
            f"| {row.dataset} | {row.method} | {row.splits} | {_pm(row.rmse)} | "
            f"{_pm(row.log_likelihood)} | {_pm(row.coverage_95)} "
        )
        if conformal:
            line += f"| {_pm(row.conformal_coverage_90)} | {_pm(row.conformal_coverage_95)} "
        if stacked:
            weights = row.stack_weights
            line += "| " + ("—" if weights is None else " / ".join(f"{w:.2f}" for w in weights))
            line += " "
        line += (
            f"| {row.seconds[0]:.1f} | {_pm(row.published_rmse)} | "
            f"{_pm(row.published_log_likelihood)} | {reaches} |"
        )
        lines.append(line)
    return "\n".join(lines)


def write_report(results: list[SplitResult], output: Path) -> str:
    """Write ``uci.json`` (per split and summary) and ``uci.md``; return the markdown table."""
    output.mkdir(parents=True, exist_ok=True)
    rows = summarise(results)
    table = format_table(rows)
    report = {"splits": [asdict(r) for r in results], "summary": [asdict(r) for r in rows]}
    write_text_atomically(output / "uci.json", json.dumps(report, indent=2))
    duplicates = [r.duplicated_test_inputs for r in results]
    if any(duplicates):
        table += (
            f"\n\n{sum(duplicates) / len(duplicates):.1f} test inputs per split (at most "
            f"{max(duplicates)}) equal a training input: a model that interpolates its training "
            "data scores them with a spiking density, so read the test log-likelihood with care."
        )
    write_text_atomically(output / "uci.md", table + "\n")
    return table
