"""Split conformal calibration: the threshold ``q̂`` at a level, and the calibration of
regression predictions (absolute, normalized, CQR); classification sets are in
``_conformal_sets``.

See `bnn.evaluate.conformalize` for the methods and the guarantee.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from bnn.likelihoods import (
    RegressionPrediction,
    align_targets,
)
from bnn.posterior.protocol import check_batch

__all__ = [
    "ConformalRegressionPrediction",
    "RegressionCalibration",
    "calibrate_regression",
    "calibration_targets",
    "check_calibration_pair",
    "check_described_by_mixture",
    "conformal_rank",
    "fewest_points",
]


def conformal_rank(n: int, level: float) -> int:
    """``k = ⌈(n + 1) · level⌉``, the rank of the threshold among ``n`` calibration scores."""
    if n < fewest_points(level):
        raise ValueError(
            f"a conformal set at level {level} needs at least 1/α − 1 = {fewest_points(level)} "
            f"calibration points, got {n}; pass a larger calibration set or a lower level."
        )
    return math.ceil(round((n + 1) * float(level), 9))


def fewest_points(level: float) -> int:
    """``⌈1/α − 1⌉``, the fewest calibration points a conformal set at ``level`` needs (with
    fewer, ``⌈(n + 1) · level⌉ > n``: no score is large enough)."""
    if not isinstance(level, float | int) or not 0.0 < float(level) < 1.0:
        raise ValueError(f"level must be in (0, 1), e.g. 0.9, got {level!r}.")
    return math.ceil(round(1 / (1 - float(level)) - 1, 9))


def _threshold(scores: Tensor, level: float) -> Tensor:
    """The ``k``-th smallest score along dim 0 (per output element): ``q̂`` ``[...]``."""
    k = conformal_rank(scores.shape[0], level)
    return torch.kthvalue(scores, k, dim=0).values


@dataclass(frozen=True)
class RegressionCalibration:
    """Calibration scores of a regression method (recomputed per level for CQR)."""

    method: str
    prediction: RegressionPrediction
    y: Tensor

    def threshold(self, level: float) -> Tensor:
        mean = self.prediction.mean
        if self.method == "absolute":
            scores = (self.y - mean).abs()
        elif self.method == "normalized":
            scores = (self.y - mean).abs() / self.prediction.std
        else:
            lower, upper = self.prediction.interval(level)
            scores = torch.maximum(lower - self.y, self.y - upper)
        return _threshold(scores, level)

    def rescale(self, shift: Tensor | float, scale: Tensor | float) -> RegressionCalibration:
        """The calibration of ``shift + scale · y``: predictions and targets mapped alike, so
        absolute and CQR scores scale by ``scale`` and normalised ones stay."""
        factor = torch.as_tensor(scale, dtype=self.y.dtype, device=self.y.device)
        return RegressionCalibration(
            self.method, self.prediction.rescale(shift, scale), self.y * factor + shift
        )


def calibrate_regression(
    prediction: RegressionPrediction, y_cal: Tensor, method: str
) -> tuple[RegressionCalibration, str]:
    """The calibration of ``"absolute"``, ``"normalized"`` or ``"cqr"`` (``"auto"``:
    ``"normalized"`` where every predictive std is positive, else ``"absolute"``)."""
    if method in ("aps", "raps"):
        raise ValueError(
            f"method {method!r} is for classifiers; regression uses 'absolute', 'normalized' or "
            "'cqr'."
        )
    check_described_by_mixture(prediction, "conformalize")
    std = prediction.std
    if method == "auto":
        method = "normalized" if bool((std > 0).all()) else "absolute"
    if method == "normalized" and not bool((std > 0).all()):
        raise ValueError(
            "method 'normalized' divides by the predictive std, which is 0 for some "
            "inputs; use method='absolute' or a likelihood with noise."
        )
    y = calibration_targets(y_cal, prediction)
    return RegressionCalibration(method, prediction, y.to(prediction.loc)), method


def check_calibration_pair(x: object, y: object, num_samples: object) -> None:
    """A calibration batch ``x`` ``[n, ...]`` and its targets ``y`` ``[n, ...]``."""
    check_batch(x, num_samples)
    assert isinstance(x, Tensor)
    if not isinstance(y, Tensor):
        raise TypeError(f"y_cal must be a torch.Tensor, got {type(y).__name__}.")
    if y.dim() == 0 or y.shape[0] != x.shape[0]:
        raise ValueError(
            f"x_cal has {x.shape[0]} rows but y_cal has shape {tuple(y.shape)}; pass the "
            "targets of the same inputs."
        )


def check_described_by_mixture(prediction: RegressionPrediction, what: str) -> None:
    """Refuse a recalibrated prediction (isotonic, conformal) as the input of a recalibration
    that rebuilds its input from the mixture: its intervals would silently be the base's."""
    if not prediction.described_by_mixture:
        raise TypeError(
            f"{what} rebuilds its input predictive from its mixture, which would drop this "
            f"{type(prediction).__name__}'s recalibration; apply {what} to the posterior that "
            "was recalibrated instead (one recalibration per posterior)."
        )


def calibration_targets(y_cal: Tensor, prediction: RegressionPrediction) -> Tensor:
    """``y_cal`` shaped like one prediction ``[n, ...]``; NaN or inf refused."""
    y = align_targets(y_cal, prediction.loc.shape[1:], "calibration prediction")
    if y.is_floating_point() and not bool(torch.isfinite(y).all()):
        raise ValueError("y_cal contains NaN or inf; remove those rows first.")
    return y


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
    described_by_mixture: ClassVar[bool] = False  # its intervals are the calibration's

    def rescale(self, shift: Tensor | float, scale: Tensor | float) -> RegressionPrediction:
        """The prediction of ``shift + scale · y`` (e.g. back to the original target scale),
        still conformal: its calibration is mapped the same way, so the interval of the
        rescaled prediction is the rescaled interval."""
        base = super().rescale(shift, scale)
        if self.calibration is None:
            return base
        return ConformalRegressionPrediction(
            samples=base.samples,
            loc=base.loc,
            scale=base.scale,
            weights=base.weights,
            calibration=self.calibration.rescale(shift, scale),
            level=self.level,
        )

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
