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
``"raps"`` (Angelopoulos  APS plus ``λ (rank(y) − k_reg)⁺``         as APS (``_conformal_sets``)
2021)
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

from typing import Literal

import torch
from torch import Tensor

from bnn.evaluate._conformal_scores import (
    ConformalRegressionPrediction,
    RegressionCalibration,
    calibrate_regression,
    check_calibration_pair,
    conformal_rank,
)
from bnn.evaluate._conformal_sets import (
    ClassificationCalibration,
    ConformalClassificationPrediction,
    calibrate_classification,
)
from bnn.likelihoods import (
    ClassificationPrediction,
    Likelihood,
    Prediction,
    RegressionPrediction,
    same_observation_model,
)
from bnn.posterior.model import as_posterior
from bnn.posterior.protocol import Posterior
from bnn.posterior.wrapper import PosteriorWrapper
from bnn.predict import observation_model, predict_with_uncertainty
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

METHODS = ("auto", "absolute", "normalized", "cqr", "aps", "raps")
_REGRESSION = ("absolute", "normalized", "cqr")


def inner_prediction(
    posterior: Posterior,
    x: Tensor,
    likelihood: Likelihood | None,
    num_samples: int,
    rng: RNGLike,
    memory_budget: int | None,
) -> Prediction:
    """The wrapped posterior's prediction, with its own likelihood if it carries one."""
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
    """The observation model a recalibration's scores come from: the posterior's own if it
    carries one (``likelihood`` may repeat it; another one is refused, as by
    ``predict_with_uncertainty``), else ``likelihood`` (``None``: noise-free regression)."""
    return observation_model(posterior, likelihood, "calibrate")


class ConformalPosterior(PosteriorWrapper):
    """A posterior whose predictions carry split conformal intervals or prediction sets.

    Made by `conformalize`. ``sample_functions`` is the wrapped posterior's;
    ``bnn.predict_with_uncertainty(conformal, x)`` returns a `ConformalRegressionPrediction`
    (``interval(level)``) or a `ConformalClassificationPrediction` (``prediction_set(level)``),
    and `interval` / `prediction_set` are shortcuts for both steps.

    It carries the observation model it was calibrated with (``predictive_likelihood``), so
    every door — ``predict_with_uncertainty`` with or without ``likelihood=``, ``predict``,
    ``interval``, ``prediction_set``, ``to_arviz`` — predicts with the calibration's scores.
    Another likelihood would change the scores and lose the guarantee: it is refused. For a
    posterior that draws fresh function samples, test scores are exchangeable with the
    calibration's at the same sample count: ``predict``, ``interval`` and ``prediction_set``
    use ``num_samples`` by default; ``predict_with_uncertainty`` uses its own default (100,
    also `conformalize`'s) unless told.

    Attributes:
        posterior: the wrapped posterior.
        method: ``"absolute"``, ``"normalized"``, ``"cqr"``, ``"aps"`` or ``"raps"``.
        level: default level of intervals and sets.
        randomized: whether the sets are randomized.
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

        Randomized sets draw their ``u`` from the generator ``"conformal"`` of ``rng``.
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
    penalty: float = 0.01,
    k_reg: int | Literal["auto"] = "auto",
    class_conditional: bool = False,
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
        method: ``"absolute"``, ``"normalized"`` or ``"cqr"`` (regression), ``"aps"`` or
            ``"raps"`` (classification, see ``bnn.evaluate._conformal_sets``); ``"auto"``:
            ``"aps"`` for a classifier, ``"normalized"`` for a regression predictive with a
            positive std, else ``"absolute"``.
        likelihood: observation model of the predictions (``None``: the posterior's own, or
            noise-free regression). The conformal posterior carries it.
        randomized: randomized sets (exact coverage; may be empty) or not (coverage
            ``≥ level``, never empty).
        penalty: RAPS's ``λ`` per class beyond rank ``k_reg`` (``method="raps"``).
        k_reg: RAPS's number of unpenalised classes; ``"auto"``: the level quantile of the
            true labels' ranks on a held-out fifth of the calibration set.
        class_conditional: one threshold per class (Mondrian): coverage ``level`` within every
            class; needs ``1/α − 1`` calibration points of each class.
        num_samples: function samples ``S`` of the calibration predictions and the default of
            later predictions.
        rng: randomness of the calibration predictions (``"predict"``), of randomized sets
            (generator ``"conformal"``) and of RAPS's held-out fifth.

    Returns:
        A `ConformalPosterior`: ``.interval(x, level)``, ``.prediction_set(x, level)``, or
        ``bnn.predict_with_uncertainty(conformal, x)``.

    Raises:
        ValueError: ``n < 1/α − 1`` (overall, or in a class for class-conditional sets),
            mismatched shapes, a method that does not fit the prediction, a zero predictive
            std for ``"normalized"``, an invalid ``penalty`` or ``k_reg``.

    Example:
        >>> conformal = conformalize(posterior, x_cal, y_cal, level=0.9,
        ...                          likelihood=bnn.Gaussian(0.1), rng=0)
        >>> lower, upper = conformal.interval(x_test, rng=1)
    """
    posterior = as_posterior(posterior)  # a model (MCDropout, Bayesian layers) or a posterior
    _check_calibration_input(x_cal, y_cal, level, method, likelihood, penalty, k_reg, num_samples)
    generator = resolve_rng(rng)
    prediction = inner_prediction(posterior, x_cal, likelihood, num_samples, generator, None)
    calibration: RegressionCalibration | ClassificationCalibration
    if isinstance(prediction, ClassificationPrediction):
        calibration, method = calibrate_classification(
            prediction,
            y_cal,
            method,
            randomized,
            generator,
            level=level,
            penalty=penalty,
            k_reg=k_reg,
            class_conditional=class_conditional,
        )
    elif isinstance(prediction, RegressionPrediction):
        if class_conditional:
            raise ValueError("class_conditional sets are for classifiers, not regression.")
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


def _check_calibration_input(
    x_cal: object,
    y_cal: object,
    level: float,
    method: str,
    likelihood: object,
    penalty: object,
    k_reg: object,
    num_samples: int,
) -> None:
    """Refuse bad arguments before the calibration prediction is made."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}.")
    if likelihood is not None and not isinstance(likelihood, Likelihood):
        raise TypeError(f"likelihood must be a bnn Likelihood, got {type(likelihood).__name__}.")
    if isinstance(penalty, bool) or not isinstance(penalty, int | float) or not penalty >= 0:
        raise ValueError(f"penalty must be a number >= 0 (0: APS), got {penalty!r}.")
    if k_reg != "auto" and (isinstance(k_reg, bool) or not isinstance(k_reg, int) or k_reg < 0):
        raise ValueError(f"k_reg must be an int >= 0 or 'auto', got {k_reg!r}.")
    check_calibration_pair(x_cal, y_cal, num_samples)
    assert isinstance(x_cal, Tensor)
    conformal_rank(x_cal.shape[0], level)  # n ≥ 1/α − 1, before any work
