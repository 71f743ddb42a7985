"""How honest is the predictive uncertainty? Calibration reports for regression and classification.

A regression predictive is calibrated when its central ``p`` intervals contain a fraction ``p``
of held-out targets at every level, equivalently when the PIT values ``F(y_i)`` are uniform
(Gneiting et al. 2007). A classifier is calibrated when, among predictions made with confidence
``c``, a fraction ``c`` is correct (expected calibration error; Guo et al. 2017). Sharpness
(how narrow the predictive is) matters only subject to calibration.

Example:
    >>> report = bnn.evaluate.calibration(prediction, y_test)
    >>> report.coverage[0.95], report.flags
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import Tensor

from bnn.evaluate import metrics
from bnn.evaluate._conformal_scores import ConformalRegressionPrediction, fewest_points
from bnn.evaluate._conformal_sets import ConformalClassificationPrediction
from bnn.likelihoods import (
    ClassificationPrediction,
    Prediction,
    RegressionPrediction,
    align_targets,
)

__all__ = ["CalibrationReport", "calibration"]

DEFAULT_LEVELS = (0.5, 0.8, 0.9, 0.95)
GRID = tuple(round(0.05 * i, 2) for i in range(1, 20))
FLAG_STANDARD_ERRORS = 3.0


@dataclass(frozen=True)
class CalibrationReport:
    """Calibration and sharpness of a predictive on held-out data.

    Attributes:
        kind: ``"regression"`` or ``"classification"``.
        scores: named scalar scores (NLL, RMSE, CRPS, sharpness, calibration error, or ECE,
            accuracy, Brier, mean entropy).
        coverage: empirical coverage per nominal level (regression).
        pit: PIT values ``F(y_i)`` (regression), for a histogram.
        flags: findings, e.g. "over-confident: 95% intervals cover 71% (±1.5%)".
    """

    kind: str
    scores: dict[str, float]
    coverage: dict[float, float] = field(default_factory=dict)
    pit: Tensor | None = None
    flags: tuple[str, ...] = ()

    def to_markdown(self) -> str:
        lines = ["| score | value |", "|---|---|"]
        lines += [f"| {name} | {value:.4g} |" for name, value in self.scores.items()]
        lines += [
            f"| coverage @ {level:.0%} | {value:.3f} |" for level, value in self.coverage.items()
        ]
        lines += [f"- {flag}" for flag in self.flags] or ["- no calibration problem detected"]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.to_markdown()

    def _repr_markdown_(self) -> str:
        return self.to_markdown()


def calibration(
    prediction: Prediction,
    y: Tensor,
    *,
    levels: tuple[float, ...] = DEFAULT_LEVELS,
    num_bins: int = 15,
) -> CalibrationReport:
    """Calibration report of ``prediction`` against targets ``y``.

    Regression: coverage at ``levels``, calibration error (mean |coverage − level| over levels
    0.05…0.95), PIT values, sharpness (mean predictive std), NLL, RMSE, CRPS. A level is flagged
    when its coverage differs from nominal by more than 3 binomial standard errors.

    Classification: ECE (``num_bins`` bins), accuracy, Brier score, NLL, mean entropy; flagged
    when the ECE exceeds the calibration gap expected from sampling alone by 3 standard errors.

    A conformal prediction (`bnn.evaluate.recalibrate.conformalize`) is measured on its own
    intervals (coverage and calibration error, at the levels its calibration set allows) or
    sets (``set coverage @ level`` and ``mean set size`` beside the scores above); its PIT
    values are the wrapped predictive's.

    Example:
        >>> report = bnn.calibration(prediction, y_test)
        >>> report.coverage[0.9], report.flags

    Raises:
        ValueError: ``y`` not matching the prediction, NaN targets, levels outside (0, 1).
    """
    if not isinstance(y, Tensor):
        raise TypeError(f"y must be a torch.Tensor, got {type(y).__name__}.")
    if y.is_floating_point() and not bool(torch.isfinite(y).all()):
        raise ValueError("y contains NaN or inf.")
    for level in levels:
        if not 0.0 < level < 1.0:
            raise ValueError(f"levels must lie in (0, 1), got {level}.")
    if isinstance(prediction, RegressionPrediction):
        return _regression(prediction, y, levels)
    if isinstance(prediction, ClassificationPrediction):
        return _classification(prediction, y, num_bins)
    raise TypeError(
        f"calibration needs a Regression/ClassificationPrediction, got {type(prediction).__name__}."
    )


def _regression(
    prediction: RegressionPrediction, y: Tensor, levels: tuple[float, ...]
) -> CalibrationReport:
    y = align_targets(y, prediction.loc.shape[1:])  # the one target rule of every metric
    pit = prediction.cdf(y)
    n = pit.numel()
    coverage = {
        level: _coverage(prediction, y, pit, level)
        for level in levels
        if _has_interval(prediction, level)
    }
    grid = [level for level in GRID if _has_interval(prediction, level)]
    grid_error = sum(abs(_coverage(prediction, y, pit, level) - level) for level in grid) / len(
        grid
    )
    flags = []
    for level, observed in coverage.items():
        standard_error = math.sqrt(level * (1 - level) / n)
        if abs(observed - level) > FLAG_STANDARD_ERRORS * standard_error:
            kind = "over-confident" if observed < level else "under-confident"
            flags.append(
                f"{kind}: {level:.0%} intervals cover {observed:.1%} "
                f"(±{standard_error:.1%} expected)"
            )
    scores = {
        "nll": metrics.nll(prediction, y) if bool((prediction.scale > 0).all()) else math.nan,
        "rmse": metrics.rmse(prediction, y),
        "crps": metrics.crps(prediction, y),
        "sharpness (mean std)": float(prediction.std.mean()),
        "calibration error": grid_error,
    }
    return CalibrationReport("regression", scores, coverage, pit.detach(), tuple(flags))


def _coverage(prediction: RegressionPrediction, y: Tensor, pit: Tensor, level: float) -> float:
    """Coverage of the prediction's central intervals at ``level``: from the PIT values, or
    of a conformal prediction's own intervals (which are not its CDF's)."""
    if isinstance(prediction, ConformalRegressionPrediction):
        return metrics.interval_coverage(prediction, y, level)
    return _central_coverage(pit, level)


def _has_interval(prediction: RegressionPrediction, level: float) -> bool:
    """Whether the prediction has an interval at ``level`` (a conformal one needs enough
    calibration points)."""
    if not isinstance(prediction, ConformalRegressionPrediction):
        return True
    assert prediction.calibration is not None
    n = int(prediction.calibration.y.shape[0])
    return n >= fewest_points(level)


def _central_coverage(pit: Tensor, level: float) -> float:
    tail = (1 - level) / 2
    return float(((pit >= tail) & (pit <= 1 - tail)).to(torch.float64).mean())


def _classification(
    prediction: ClassificationPrediction, y: Tensor, num_bins: int
) -> CalibrationReport:
    ece = metrics.expected_calibration_error(prediction, y, num_bins)
    probs = prediction.class_probs.mean(0)
    confidence = probs.max(-1).values
    n = confidence.numel()
    # Expected ECE of a perfectly calibrated classifier is about sqrt(2/pi · c(1-c)/n_bin)
    # per bin; bound it by the overall Bernoulli standard error.
    sampling = math.sqrt(float((confidence * (1 - confidence)).mean()) * num_bins / max(n, 1))
    scores = {
        "ece": ece,
        "accuracy": metrics.accuracy(prediction, y),
        "brier": metrics.brier_score(prediction, y),
        "nll": -float(prediction.log_likelihood(y).mean()),
        "mean entropy": float(prediction.entropy.mean()),
        "mean confidence": float(confidence.mean()),
    }
    if isinstance(prediction, ConformalClassificationPrediction):  # its sets' coverage
        scores[f"set coverage @ {prediction.level:.0%}"] = metrics.set_coverage(prediction, y)
        scores["mean set size"] = metrics.mean_set_size(prediction)
    flags = []
    if ece > FLAG_STANDARD_ERRORS * sampling:
        kind = (
            "over-confident"
            if scores["mean confidence"] > scores["accuracy"]
            else "under-confident"
        )
        flags.append(f"{kind}: ECE {ece:.3f} (sampling noise alone ≈ {sampling:.3f})")
    return CalibrationReport("classification", scores, flags=tuple(flags))
