"""Scores for predictive distributions: accuracy of the mean and quality of the uncertainty.

Regression metrics take a ``bnn.likelihoods.RegressionPrediction`` (a Gaussian mixture
over function samples) and targets ``y`` ``[N, ...]``; classification metrics take a
``bnn.likelihoods.ClassificationPrediction`` and class indices ``[N]`` (0/1 for binary).
Every metric returns a Python float (mean over data points).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from bnn.likelihoods import (
    ClassificationPrediction,
    RegressionPrediction,
    align_targets,
    class_indices,
)

__all__ = [
    "accuracy",
    "brier_score",
    "crps",
    "expected_calibration_error",
    "gaussian_nll",
    "interval_coverage",
    "nll",
    "rmse",
]


def _targets(y: object, reference: Tensor) -> Tensor:
    """Regression targets under the one target rule (``align_targets``), finite."""
    y = align_targets(y, reference.shape)
    if y.numel() == 0:
        raise ValueError("y is empty; pass the targets of the predicted inputs.")
    if y.is_floating_point() and not bool(torch.isfinite(y).all()):
        raise ValueError("y contains NaN or inf; remove or impute those rows first.")
    return y


def _regression(prediction: object) -> RegressionPrediction:
    if not isinstance(prediction, RegressionPrediction):
        raise TypeError(
            f"this metric scores regression predictions, got a {type(prediction).__name__}; "
            "use accuracy, nll, brier_score or expected_calibration_error for classes."
        )
    return prediction


def rmse(prediction: RegressionPrediction, y: Tensor) -> float:
    """Root mean squared error of the predictive mean."""
    prediction = _regression(prediction)
    mean = prediction.mean
    return float(((_targets(y, mean) - mean) ** 2).mean().sqrt())


def nll(prediction: RegressionPrediction | ClassificationPrediction, y: Tensor) -> float:
    """Mean negative log predictive density (UCI protocol: log-sum-exp over samples)."""
    if isinstance(prediction, RegressionPrediction):
        y = _targets(y, prediction.mean)
    return -float(prediction.log_likelihood(y).mean())


def gaussian_nll(prediction: RegressionPrediction, y: Tensor) -> float:
    """NLL of a single Gaussian with the predictive mean and total std (moment matching)."""
    prediction = _regression(prediction)
    mean, std = prediction.mean, prediction.std
    y = _targets(y, mean)
    log_density = -0.5 * ((y - mean) / std) ** 2 - torch.log(std) - 0.5 * math.log(2 * math.pi)
    return -float(log_density.mean())


def interval_coverage(prediction: RegressionPrediction, y: Tensor, level: float = 0.95) -> float:
    """Fraction of targets inside the central ``level`` predictive interval."""
    prediction = _regression(prediction)
    lower, upper = prediction.interval(level)
    y = _targets(y, lower)
    return float(((y >= lower) & (y <= upper)).to(torch.float64).mean())


def crps(prediction: RegressionPrediction, y: Tensor) -> float:
    """Continuous ranked probability score of the predictive, mean over data (lower is better).

    ``prediction.crps(y)``: closed form for Gaussian mixtures (Grimit et al. 2006), the
    prediction's own rule for recalibrated predictives (e.g. isotonic recalibration).
    """
    prediction = _regression(prediction)
    return float(prediction.crps(_targets(y, prediction.loc[0])).mean())


def _labels(prediction: ClassificationPrediction, y: Tensor) -> tuple[Tensor, Tensor]:
    if not isinstance(prediction, ClassificationPrediction):
        raise TypeError(
            f"this metric scores class predictions, got a {type(prediction).__name__}; predict "
            "with likelihood=bnn.Categorical() or bnn.Bernoulli()."
        )
    probs = prediction.class_probs.mean(0)
    return probs, class_indices(y, probs.shape[0], probs.shape[-1])


def accuracy(prediction: ClassificationPrediction, y: Tensor) -> float:
    """Fraction of correct arg-max predictions."""
    probs, y = _labels(prediction, y)
    return float((probs.argmax(-1) == y).to(torch.float64).mean())


def brier_score(prediction: ClassificationPrediction, y: Tensor) -> float:
    """Mean squared error between class probabilities and one-hot labels (summed over classes)."""
    probs, y = _labels(prediction, y)
    one_hot = torch.nn.functional.one_hot(y, probs.shape[-1]).to(probs)
    return float(((probs - one_hot) ** 2).sum(-1).mean())


def set_coverage(
    prediction: ClassificationPrediction, y: Tensor, level: float | None = None
) -> float:
    """Fraction of targets inside their conformal prediction set at ``level`` (default: the
    level the predictor was calibrated for); ``prediction`` from a `ConformalPosterior`."""
    sets = _prediction_sets(prediction, level)
    _, labels = _labels(prediction, y)
    return float(sets.gather(-1, labels.unsqueeze(-1)).to(torch.float64).mean())


def mean_set_size(prediction: ClassificationPrediction, level: float | None = None) -> float:
    """Mean number of classes in the conformal prediction sets at ``level`` (smaller is
    sharper, at the same coverage); ``prediction`` from a `ConformalPosterior`."""
    return float(_prediction_sets(prediction, level).sum(-1).to(torch.float64).mean())


def _prediction_sets(prediction: object, level: float | None) -> Tensor:
    prediction_set = getattr(prediction, "prediction_set", None)
    if not callable(prediction_set):
        raise TypeError(
            f"a {type(prediction).__name__} has no prediction sets; conformalize the posterior "
            "(bnn.evaluate.recalibrate.conformalize) and predict with the result."
        )
    sets = prediction_set(level)
    assert isinstance(sets, Tensor)
    return sets


def expected_calibration_error(
    prediction: ClassificationPrediction, y: Tensor, num_bins: int = 15
) -> float:
    """ECE: ``Σ_b |B_b|/N · |accuracy(B_b) - confidence(B_b)|`` over equal-width confidence bins.

    (Naeini et al. 2015; Guo et al. 2017.)
    """
    if isinstance(num_bins, bool) or not isinstance(num_bins, int) or num_bins < 1:
        raise ValueError(f"num_bins must be a positive int, got {num_bins!r}.")
    probs, y = _labels(prediction, y)
    confidence, predicted = probs.max(-1)
    correct = (predicted == y).to(probs.dtype)
    bins = torch.clamp((confidence * num_bins).long(), max=num_bins - 1)
    membership = torch.nn.functional.one_hot(bins, num_bins).to(probs.dtype)  # deterministic
    gap = membership.T @ (confidence - correct)
    return float(gap.abs().sum() / len(y))
