"""Split conformal prediction around any posterior (the conformal half of ``recalibrate``).

Split conformal prediction (Vovk et al. 2005; Lei et al. 2018) turns any predictive into
intervals or sets with the finite-sample guarantee

    ``1 − α ≤ P(y_{n+1} ∈ C(x_{n+1})) ≤ 1 − α + 1/(n + 1)``

for exchangeable calibration and test data (the upper bound when scores have no ties). A
**score** ``E(x, y)`` measures how badly ``y`` fits the prediction at ``x``; with the ``k``-th
smallest of the ``n`` calibration scores, ``k = ⌈(n + 1)(1 − α)⌉``, as threshold ``q̂``,
``C(x) = {y : E(x, y) ≤ q̂}``. It needs ``k ≤ n``, i.e. ``n ≥ 1/α − 1``.

========================= ========================================= ==========================
method                    score ``E(x, y)``                         ``C(x)``
========================= ========================================= ==========================
``"absolute"``            ``|y − mean(x)|``                         ``mean ± q̂``
``"normalized"``          ``|y − mean(x)| / std(x)``                ``mean ± q̂ · std``
``"cqr"`` (Romano 2019)   ``max(q_lo(x) − y, y − q_hi(x))``         ``[q_lo − q̂, q_hi + q̂]``
``"aps"`` (Romano 2020)   mass of the classes ranked above ``y``    classes ranked by
                          plus ``u · p(y)``, ``u ~ U(0, 1)``        probability while that
                          (``randomized=False``: plus ``p(y)``)     mass stays ≤ ``q̂``
========================= ========================================= ==========================

``q_lo``/``q_hi`` are the predictive's own ``α/2`` and ``1 − α/2`` quantiles (the mixture's,
``RegressionPrediction.quantile``). Multi-output regression is calibrated per output element
(each element gets its own ``q̂``, the guarantee holds per element).

The guarantee assumes one fixed score function. A posterior that draws fresh function samples
for every prediction makes the scores themselves slightly random; the guarantee then holds for
the averaged predictive only up to its Monte Carlo error (use enough ``num_samples``, or a
posterior with a fixed set of draws: an ensemble, a `SampleSet`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from bnn.evaluate._conformal_scores import (
    ClassificationCalibration,
    RegressionCalibration,
    aps_parts,
    aps_scores,
    calibrate_classification,
    calibrate_regression,
    conformal_rank,
)
from bnn.likelihoods import (
    ClassificationPrediction,
    Likelihood,
    Prediction,
    RegressionPrediction,
    same_observation_model,
)
from bnn.posterior.model import as_posterior
from bnn.posterior.protocol import CarriesLikelihood, Posterior, check_batch
from bnn.posterior.wrapper import PosteriorWrapper
from bnn.predict import predict_with_uncertainty
from bnn.random.default import RNGLike, resolve_rng
from bnn.random.rng import RNG

__all__ = [
    "METHODS",
    "ConformalClassificationPrediction",
    "ConformalPosterior",
    "ConformalRegressionPrediction",
    "conformalize",
    "inner_prediction",
]

METHODS = ("auto", "absolute", "normalized", "cqr", "aps")
_REGRESSION = ("absolute", "normalized", "cqr")


def inner_prediction(
    posterior: Posterior,
    x: Tensor,
    likelihood: Likelihood | None,
    num_samples: int,
    rng: RNGLike,
    memory_budget: int | None,
) -> Prediction:
    """The wrapped posterior's prediction; its own likelihood wins over ``likelihood``."""
    return predict_with_uncertainty(
        posterior,
        x,
        num_samples=num_samples,
        likelihood=calibration_likelihood(posterior, likelihood),
        rng=rng,
        memory_budget=memory_budget,
    )


def calibration_likelihood(
    posterior: Posterior, likelihood: Likelihood | None
) -> Likelihood | None:
    """The observation model a conformal predictor's scores come from: the posterior's own if
    it carries one, else ``likelihood`` (``None``: noise-free regression)."""
    carried = posterior.predictive_likelihood if isinstance(posterior, CarriesLikelihood) else None
    return carried if carried is not None else likelihood


@dataclass(frozen=True)
class ConformalRegressionPrediction(RegressionPrediction):
    """A `RegressionPrediction` whose ``interval(level)`` is the split conformal interval.

    Everything else (``mean``, ``std``, ``cdf``, ``log_likelihood``, ...) is the wrapped
    posterior's predictive; ``bnn.evaluate.metrics.interval_coverage`` measures the conformal
    intervals.

    Attributes:
        calibration: the calibration scores (set by `conformalize`).
        level: the level ``interval()`` uses by default.
    """

    calibration: RegressionCalibration | None = None
    level: float = 0.9

    def interval(self, level: float | None = None) -> tuple[Tensor, Tensor]:
        """Conformal interval ``(lower, upper)``, each ``[N, ...]``, at ``level``.

        Raises:
            ValueError: ``level`` outside (0, 1) or higher than the calibration set allows.
        """
        level = self.level if level is None else level
        assert self.calibration is not None
        q = self.calibration.threshold(level)
        mean = self.mean
        if self.calibration.method == "absolute":
            return mean - q, mean + q
        if self.calibration.method == "normalized":
            std = self.std
            return mean - q * std, mean + q * std
        lower, upper = super().interval(level)
        return lower - q, upper + q


@dataclass(frozen=True)
class ConformalClassificationPrediction(ClassificationPrediction):
    """A `ClassificationPrediction` with adaptive prediction sets (APS, Romano et al. 2020).

    Attributes:
        calibration: the calibration scores (set by `conformalize`).
        uniform: the ``u ~ U(0, 1)`` per input ``[N]`` of randomized APS (``None``: not
            randomized).
        level: the level ``prediction_set()`` uses by default.
    """

    calibration: ClassificationCalibration | None = None
    uniform: Tensor | None = None
    level: float = 0.9

    def prediction_set(self, level: float | None = None) -> Tensor:
        """Boolean membership ``[N, K]`` of each class in the conformal set at ``level``.

        Randomized: class ``y`` is in the set iff ``mass above y + u·p(y) ≤ q̂``. Not
        randomized: classes are added in order of probability until the added mass reaches
        ``q̂`` (the class that crosses it included; never empty, coverage ``≥ level``).
        For a binary classifier the classes are ``0`` and ``1``.
        """
        level = self.level if level is None else level
        assert self.calibration is not None
        q = self.calibration.threshold(level)
        probs = self.class_probs.mean(0)
        if self.uniform is not None:
            return aps_scores(probs, self.uniform) <= q
        before, _ = aps_parts(probs)
        return before < q


class ConformalPosterior(PosteriorWrapper):
    """A posterior whose predictions carry split conformal intervals or prediction sets.

    Made by `conformalize`. ``sample_functions`` is the wrapped posterior's;
    ``bnn.predict_with_uncertainty(conformal, x)`` returns a `ConformalRegressionPrediction`
    (``interval(level)``) or a `ConformalClassificationPrediction` (``prediction_set(level)``),
    and `interval` / `prediction_set` are shortcuts for both steps.

    It carries the observation model it was calibrated with (``predictive_likelihood``), so
    every door — ``predict_with_uncertainty`` with or without ``likelihood=``, ``predict``,
    ``interval``, ``prediction_set``, ``to_arviz`` — predicts with the calibration's scores.
    Another likelihood would change the scores and lose the guarantee: it is refused.

    Attributes:
        posterior: the wrapped posterior.
        method: ``"absolute"``, ``"normalized"``, ``"cqr"`` or ``"aps"``.
        level: default level of intervals and sets.
        randomized: whether APS sets are randomized.
        num_samples: default function samples of predictions.
    """

    def __init__(
        self,
        posterior: Posterior,
        calibration: RegressionCalibration | ClassificationCalibration,
        *,
        likelihood: Likelihood | None,
        level: float,
        method: str,
        num_samples: int,
    ) -> None:
        super().__init__(posterior)
        self.calibration = calibration
        self.likelihood = calibration_likelihood(posterior, likelihood)
        self.level = level
        self.method = method
        self.randomized = isinstance(calibration, ClassificationCalibration) and (
            calibration.randomized
        )
        self.num_samples = num_samples

    @property
    def predictive_likelihood(self) -> Likelihood | None:
        """The likelihood the calibration scores were computed with."""
        return self.likelihood

    def closed_form_prediction(
        self,
        x: Tensor,
        *,
        likelihood: Likelihood | None,
        num_samples: int,
        rng: RNG,
        memory_budget: int,
    ) -> Prediction:
        """The wrapped posterior's prediction at ``x`` with the conformal calibration attached.

        Randomized APS draws its ``u`` from the generator ``"conformal"`` of ``rng``.
        """
        if not same_observation_model(likelihood, self.likelihood):
            raise ValueError(
                f"this conformal predictor was calibrated with likelihood {self.likelihood!r}; "
                f"predicting with {likelihood!r} would change its scores and lose the coverage "
                "guarantee. Predict without likelihood=, or conformalize again with the new one."
            )
        inner = inner_prediction(self.posterior, x, likelihood, num_samples, rng, memory_budget)
        calibration = self.calibration
        if isinstance(calibration, RegressionCalibration):
            if not isinstance(inner, RegressionPrediction):
                raise ValueError(
                    "this conformal predictor was calibrated for regression; predict with the "
                    f"likelihood it was calibrated with, got a {type(inner).__name__}."
                )
            if inner.loc.shape[2:] != calibration.y.shape[1:]:
                raise ValueError(
                    f"the prediction has outputs {tuple(inner.loc.shape[2:])} per input but "
                    f"the calibration targets {tuple(calibration.y.shape[1:])}."
                )
            return ConformalRegressionPrediction(
                samples=inner.samples,
                loc=inner.loc,
                scale=inner.scale,
                weights=inner.weights,
                calibration=calibration,
                level=self.level,
            )
        if not isinstance(inner, ClassificationPrediction):
            raise ValueError(
                "this conformal predictor was calibrated for classification; predict with the "
                f"likelihood it was calibrated with, got a {type(inner).__name__}."
            )
        uniform = None
        if calibration.randomized:
            generator = rng.torch_generator("conformal", x.device)
            uniform = torch.rand(
                inner.class_probs.shape[1],
                generator=generator,
                dtype=inner.class_probs.dtype,
                device=x.device,
            )
        return ConformalClassificationPrediction(
            samples=inner.samples,
            class_probs=inner.class_probs,
            binary=inner.binary,
            calibration=calibration,
            uniform=uniform,
            level=self.level,
        )

    def predict(
        self, x: Tensor, *, num_samples: int | None = None, rng: RNGLike = None
    ) -> Prediction:
        """``bnn.predict_with_uncertainty`` with the calibration likelihood and sample count."""
        return predict_with_uncertainty(
            self,
            x,
            num_samples=self.num_samples if num_samples is None else num_samples,
            rng=rng,
        )

    def interval(
        self,
        x: Tensor,
        level: float | None = None,
        *,
        num_samples: int | None = None,
        rng: RNGLike = None,
    ) -> tuple[Tensor, Tensor]:
        """Conformal interval ``(lower, upper)`` ``[N, ...]`` at ``x`` (regression)."""
        prediction = self.predict(x, num_samples=num_samples, rng=rng)
        if not isinstance(prediction, ConformalRegressionPrediction):
            raise TypeError("intervals are for regression; use prediction_set for a classifier.")
        return prediction.interval(level)

    def prediction_set(
        self,
        x: Tensor,
        level: float | None = None,
        *,
        num_samples: int | None = None,
        rng: RNGLike = None,
    ) -> Tensor:
        """Conformal prediction set ``[N, K]`` (bool) at ``x`` (classification)."""
        prediction = self.predict(x, num_samples=num_samples, rng=rng)
        if not isinstance(prediction, ConformalClassificationPrediction):
            raise TypeError("prediction sets are for classifiers; use interval for regression.")
        return prediction.prediction_set(level)


def conformalize(
    posterior: Posterior,
    x_cal: Tensor,
    y_cal: Tensor,
    *,
    level: float = 0.9,
    method: str = "auto",
    likelihood: Likelihood | None = None,
    randomized: bool = True,
    num_samples: int = 100,
    rng: RNGLike = None,
) -> ConformalPosterior:
    """Calibrate split conformal intervals (regression) or sets (classification).

    Args:
        posterior: any `bnn.Posterior` (or a model ``predict_with_uncertainty`` accepts).
        x_cal: calibration inputs ``[n, ...]``, exchangeable with the test data and not used
            in training.
        y_cal: calibration targets ``[n, ...]`` (class indices ``[n]`` for a classifier).
        level: default coverage ``1 − α`` (intervals at other levels come from the same
            scores); needs ``n ≥ 1/α − 1``.
        method: ``"absolute"``, ``"normalized"`` or ``"cqr"`` (regression), ``"aps"``
            (classification); ``"auto"``: ``"aps"`` for a classifier, ``"normalized"`` for a
            regression predictive with a positive std, else ``"absolute"``.
        likelihood: observation model of the predictions (``None``: the posterior's own, or
            noise-free regression).
        randomized: randomized APS (exact coverage; may give empty sets) or not (coverage
            ``≥ level``, never empty).
        num_samples: function samples ``S`` of the calibration predictions and the default of
            later predictions.
        rng: randomness of the calibration predictions (``"predict"``) and of randomized APS
            (generator ``"conformal"``).

    Returns:
        A `ConformalPosterior`: ``.interval(x, level)``, ``.prediction_set(x, level)``, or
        ``bnn.predict_with_uncertainty(conformal, x)``.

    Raises:
        ValueError: ``n < 1/α − 1``, mismatched shapes, a method that does not fit the
            prediction, a zero predictive std for ``"normalized"``.

    Example:
        >>> conformal = conformalize(posterior, x_cal, y_cal, level=0.9,
        ...                          likelihood=bnn.Gaussian(0.1), rng=0)
        >>> lower, upper = conformal.interval(x_test, rng=1)
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}.")
    posterior = as_posterior(posterior)  # a model (MCDropout, Bayesian layers) or a posterior
    if likelihood is not None and not isinstance(likelihood, Likelihood):
        raise TypeError(f"likelihood must be a bnn Likelihood, got {type(likelihood).__name__}.")
    check_batch(x_cal, num_samples)
    assert isinstance(x_cal, Tensor)
    if not isinstance(y_cal, Tensor):
        raise TypeError(f"y_cal must be a torch.Tensor, got {type(y_cal).__name__}.")
    if y_cal.dim() == 0 or y_cal.shape[0] != x_cal.shape[0]:
        raise ValueError(
            f"x_cal has {x_cal.shape[0]} rows but y_cal has shape {tuple(y_cal.shape)}; pass "
            "the targets of the same inputs."
        )
    conformal_rank(x_cal.shape[0], level)  # n ≥ 1/α − 1, before any work
    generator = resolve_rng(rng)
    prediction = inner_prediction(posterior, x_cal, likelihood, num_samples, generator, None)
    calibration: RegressionCalibration | ClassificationCalibration
    if isinstance(prediction, ClassificationPrediction):
        calibration, method = calibrate_classification(
            prediction, y_cal, method, randomized, generator
        )
    elif isinstance(prediction, RegressionPrediction):
        calibration, method = calibrate_regression(prediction, y_cal, method)
    else:
        raise TypeError(f"cannot conformalize a {type(prediction).__name__}.")
    calibration.threshold(level)  # fail now, not at the first prediction
    return ConformalPosterior(
        posterior,
        calibration,
        likelihood=likelihood,
        level=float(level),
        method=method,
        num_samples=num_samples,
    )
