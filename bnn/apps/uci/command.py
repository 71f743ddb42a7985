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
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from bnn._jobs import run_jobs
from bnn._progress import progress_bar
from bnn.apps.datasets import Standardizer, UCISplit, duplicated_inputs, load_uci, num_splits
from bnn.apps.uci.common import Defaults, Fitted, Prepared
from bnn.apps.uci.journal import Journal
from bnn.apps.uci.methods import FIT, fit_method
from bnn.apps.uci.report import SplitResult
from bnn.apps.uci.tune import Tuning, check_tunable, tuned_defaults
from bnn.evaluate import metrics
from bnn.evaluate.recalibrate import (
    ConformalRegressionPrediction,
    conformalize,
    cv_plus,
    isotonic_recalibrate,
    jackknife_plus_after_bootstrap,
)
from bnn.infer.training.fit import Validation
from bnn.likelihoods import RegressionPrediction
from bnn.posterior.model import as_posterior
from bnn.predict import predict_with_uncertainty
from bnn.random.rng import RNG

__all__ = ["METHODS", "RECALIBRATIONS", "Defaults", "run_uci"]

METHODS = tuple(FIT)
RECALIBRATIONS = ("conformal", "cvplus", "jab", "isotonic")
CV_FOLDS = 10
"""Folds of ``recalibrate="cvplus"`` (Barber et al. 2021 use 10)."""
RESAMPLES, RESAMPLE_FRACTION = 20, 0.6
"""``recalibrate="jab"``: models per split, each on this fraction of the training split drawn
without replacement (a point is out of about 8 bags; the method's own validation carve never
holds a copy of a training row)."""


def _prepare(split: UCISplit, defaults: Defaults, rng: RNG) -> tuple[Prepared, Standardizer]:
    """The split standardised with its training part's statistics, and the target scaler."""
    data, _, y_scaler = _prepare_with_scalers(split, defaults, rng)
    return data, y_scaler


def _prepare_with_scalers(
    split: UCISplit, defaults: Defaults, rng: RNG
) -> tuple[Prepared, Standardizer, Standardizer]:
    """The prepared split, and the input and target scalers of its training part."""
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
    return data, x_scaler, y_scaler


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
    journal: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
) -> list[SplitResult]:
    """Run ``method`` on the first ``splits`` splits of ``dataset`` (all when ``None``).

    Split ``i`` uses ``RNG(seed).spawn(i)``: results do not depend on which splits run, nor on
    the ``executor`` that runs them (any ``concurrent.futures.Executor``: a process pool, a
    Dask cluster; ``threads_per_job`` torch threads per split, 1 by default there).

    ``recalibrate="conformal"`` also reports the test coverage of split conformal 90 % and
    95 % intervals (normalised residual scores, ``bnn.evaluate.conformalize``) calibrated on
    the validation split; the method's own metrics are unchanged. ``recalibrate="cvplus"``
    reports CV+ intervals instead (Barber et al. 2021, ``bnn.evaluate.recalibrate.cv_plus``):
    ``CV_FOLDS`` more models of the method per split, each trained without one fold of the
    training split, their out-of-fold residuals (over each fold model's predictive std)
    calibrating the intervals — no point spent on calibration only, and no reuse of the split
    that chose the epochs. ``recalibrate="jab"`` reports jackknife+-after-bootstrap intervals
    (Kim et al. 2020, ``jackknife_plus_after_bootstrap``): ``RESAMPLES`` models per split on
    subsamples, each point scored and each test interval centred by the mixture of the models
    that left it out — CV+ without its width from fold models that disagree.
    ``recalibrate="isotonic"`` reports the intervals of the predictive CDF recalibrated on the
    validation split (Kuleshov et al. 2018, ``bnn.evaluate.isotonic_recalibrate``), with no
    finite-sample guarantee. Widths are on the original scale.

    ``tuning`` tunes each split's hyperparameters on its validation split first
    (``bnn.apps.uci.tune``; the method is reported as ``"<method>+tune"``).

    ``journal`` saves each split's result to that file as it finishes
    (`bnn.apps.uci.journal`); with ``resume=True`` the splits already there are read back
    instead of trained again (refused if the journal was written with other settings).
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
        method == "stack" or recalibrate in ("conformal", "isotonic") or tuning is not None
    ):
        raise ValueError(
            "stacking, conformal and isotonic recalibration and tuning need the validation "
            "split; use a validation fraction above 0."
        )
    available = num_splits(dataset, data_dir)
    count = available if splits is None else splits
    if not 1 <= count <= available:
        raise ValueError(f"splits must be in [1, {available}], got {splits}.")
    header = {"dataset": dataset, "method": method, "seed": seed, "recalibrate": recalibrate}
    header |= {"defaults": asdict(defaults), "tuning": None if tuning is None else asdict(tuning)}
    # every split is read (and its files checked) before the journal opens or any split trains
    loaded = {index: load_uci(dataset, index, data_dir=data_dir) for index in range(count)}
    book = None if journal is None else Journal.open(journal, header, resume=resume)
    done = {} if book is None else {i: r for i, r in book.done.items() if i < count}
    pending = [index for index in range(count) if index not in done]
    bar = progress_bar(range(count), desc=f"{dataset}/{method} splits", disable=not progress)
    bar.update(len(done))
    results = run_jobs(
        functools.partial(_run_split, dataset, method, defaults, seed, recalibrate, tuning),
        [(index, loaded[index]) for index in pending],
        executor=executor,
        threads_per_job=threads_per_job,
        describe=lambda job: f"{dataset} split {pending[job]}",
        on_done=lambda: bar.update(1),  # as splits finish, here or on the executor's workers
        on_result=None if book is None else lambda _, result: book.record(result),
    )
    bar.close()
    return sorted([*done.values(), *results], key=lambda result: result.split)


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
    tuned, tuned_seed_std = None, None
    if tuning is not None:
        defaults, result = tuned_defaults(method, data, defaults, tuning, rng)
        tuned = dict(result.best_params)
        chosen = [row for row in result.trials if row["params"] == result.best_params]
        tuned_seed_std = float(chosen[0]["std"]) if chosen else None
    fitted = fit_method(method, data, defaults, rng)
    prediction = fitted.predict(data.x_test).rescale(y_scaler.mean, y_scaler.std)
    seconds = time.perf_counter() - start
    y = split.y_test.unsqueeze(-1)
    conformal: dict[str, Any] = {}
    if recalibrate in ("conformal", "isotonic"):
        y_standard = y_scaler.transform(split.y_test).unsqueeze(-1)
        calibrate = _conformal_coverage if recalibrate == "conformal" else _isotonic_coverage
        conformal = calibrate(fitted, data, y_standard, rng.spawn(recalibrate))
        conformal["conformal_width_90"] *= float(y_scaler.std)
        conformal["conformal_width_95"] *= float(y_scaler.std)
    if recalibrate in ("cvplus", "jab"):
        stream = "cv+" if recalibrate == "cvplus" else "jackknife+ab"
        conformal = _cross_coverage(recalibrate, method, defaults, split, rng.spawn(stream))
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
        tuned_seed_std=tuned_seed_std,
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
    prediction = conformal.predict(data.x_test.to(dtype), rng=rng.spawn("test"))
    assert isinstance(prediction, ConformalRegressionPrediction)
    return _interval_coverage("split conformal", prediction.interval, y_test.to(dtype))


def _isotonic_coverage(
    fitted: Fitted, data: Prepared, y_test: Tensor, rng: RNG
) -> dict[str, float]:
    """Test coverage of 90 % / 95 % intervals of the predictive recalibrated on the validation
    split (isotonic, Kuleshov et al. 2018), on the standardised scale."""
    validation = data.options["validation"]
    dtype = fitted.dtype or validation.x.dtype
    samples = fitted.num_samples or 100
    recalibrated = isotonic_recalibrate(
        as_posterior(fitted.posterior),
        validation.x.to(dtype),
        validation.y.to(dtype),
        likelihood=fitted.likelihood,
        num_samples=samples,
        rng=rng.spawn("calibrate"),
    )
    prediction = predict_with_uncertainty(
        recalibrated, data.x_test.to(dtype), num_samples=samples, rng=rng.spawn("test")
    )
    assert isinstance(prediction, RegressionPrediction)
    return _interval_coverage("isotonic", prediction.interval, y_test.to(dtype))


def _interval_coverage(
    name: str, interval: Callable[[float], tuple[Tensor, Tensor]], y_test: Tensor
) -> dict[str, Any]:
    """The recalibration's name, and its 90 % / 95 % intervals' test coverage and width."""
    coverage: dict[str, Any] = {"recalibration": name}
    for level in (0.9, 0.95):
        lower, upper = interval(level)
        inside = (lower <= y_test) & (y_test <= upper)
        coverage[f"conformal_coverage_{round(100 * level)}"] = float(inside.double().mean())
        coverage[f"conformal_width_{round(100 * level)}"] = float((upper - lower).mean())
    return coverage


def _cross_coverage(
    recalibrate: str, method: str, defaults: Defaults, split: UCISplit, rng: RNG
) -> dict[str, Any]:
    """Test coverage and mean width of CV+ (Barber et al. 2021) or jackknife+-after-bootstrap
    (Kim et al. 2020) 90 % / 95 % intervals on the original scale, from more models of the
    row's method, each trained like the row's own model (its validation carved from its
    training part): ``CV_FOLDS`` fold models, or ``RESAMPLES`` models on ``RESAMPLE_FRACTION``
    of the training split; no point held out; scores normalised by the predictive std, like
    split conformal's here."""
    train = functools.partial(_train_fold, method, defaults, split.x_test)
    x, y = split.x_train, split.y_train.unsqueeze(-1)
    options: dict[str, Any] = {"method": "normalized", "rng": rng, "progress": False}
    if recalibrate == "cvplus":
        name, cross = "CV+ (normalized)", cv_plus(train, x, y, folds=CV_FOLDS, **options)
    else:
        size = int(RESAMPLE_FRACTION * len(x))
        name, cross = (
            "J+aB (normalized)",
            jackknife_plus_after_bootstrap(
                train, x, y, resamplings=RESAMPLES, sample_size=size, replace=False, **options
            ),
        )
    return _interval_coverage(
        name,
        lambda level: cross.interval(split.x_test, level, rng=rng.spawn("test")),
        split.y_test.unsqueeze(-1),
    )


@dataclass(frozen=True)
class _FoldPredictor:
    """A method trained on one fold, predicting on the original scale from raw inputs."""

    fitted: Fitted
    x_scaler: Standardizer
    y_scaler: Standardizer

    def predict(self, x: Tensor) -> RegressionPrediction:
        prediction = self.fitted.predict(self.x_scaler.transform(x))
        return prediction.rescale(self.y_scaler.mean, self.y_scaler.std)


def _train_fold(
    method: str, defaults: Defaults, x_test: Tensor, x: Tensor, y: Tensor, rng: RNG
) -> _FoldPredictor:
    """One CV+ fold: the method trained on ``(x, y)`` as on a split (a picklable job)."""
    fold = UCISplit("fold", 0, x, y.squeeze(-1), x_test, torch.zeros(x_test.shape[0]))
    data, x_scaler, y_scaler = _prepare_with_scalers(fold, defaults, rng)
    return _FoldPredictor(fit_method(method, data, defaults, rng), x_scaler, y_scaler)
