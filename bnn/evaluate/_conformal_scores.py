"""Split conformal calibration: the scores, their threshold ``q̂`` at a level, and the
calibration of regression (absolute, normalized, CQR) and classification (APS) predictions.

See `bnn.evaluate.conformalize` for the methods and the guarantee.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from bnn.likelihoods import (
    ClassificationPrediction,
    RegressionPrediction,
    align_targets,
    class_indices,
)
from bnn.random.rng import RNG

__all__ = [
    "ClassificationCalibration",
    "RegressionCalibration",
    "aps_parts",
    "aps_scores",
    "calibrate_classification",
    "calibrate_regression",
    "calibration_targets",
    "conformal_rank",
]


def conformal_rank(n: int, level: float) -> int:
    """``k = ⌈(n + 1) · level⌉``, the rank of the threshold among ``n`` calibration scores."""
    if not isinstance(level, float | int) or not 0.0 < float(level) < 1.0:
        raise ValueError(f"level must be in (0, 1), e.g. 0.9, got {level!r}.")
    k = math.ceil(round((n + 1) * float(level), 9))
    if k > n:
        alpha = 1.0 - float(level)
        raise ValueError(
            f"a conformal set at level {level} needs at least 1/α − 1 = "
            f"{math.ceil(round(1 / alpha - 1, 9))} calibration points, got {n}; pass a larger "
            "calibration set or a lower level."
        )
    return k


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


@dataclass(frozen=True)
class ClassificationCalibration:
    """APS calibration scores (level-free)."""

    scores: Tensor
    randomized: bool

    def threshold(self, level: float) -> Tensor:
        return _threshold(self.scores, level)


def aps_parts(probs: Tensor) -> tuple[Tensor, Tensor]:
    """Per class: the mass of the classes ranked above it, and its rank order ``[N, K]``."""
    order = torch.argsort(probs, dim=-1, descending=True, stable=True)
    ranked = probs.gather(-1, order)
    before_ranked = ranked.cumsum(-1) - ranked
    before = torch.empty_like(probs).scatter_(-1, order, before_ranked)
    return before, order


def aps_scores(probs: Tensor, uniform: Tensor | None) -> Tensor:
    """APS score of every class ``[N, K]``: mass above it plus ``u·p`` (or ``p``)."""
    before, _ = aps_parts(probs)
    own = probs if uniform is None else uniform.unsqueeze(-1) * probs
    return before + own


def calibrate_classification(
    prediction: ClassificationPrediction,
    y_cal: Tensor,
    method: str,
    randomized: bool,
    generator: RNG,
) -> tuple[ClassificationCalibration, str]:
    """APS scores of the calibration labels (``u`` from the generator ``"conformal
    calibration"`` when randomized), and the method, ``"aps"``."""
    if method not in ("auto", "aps"):
        raise ValueError(f"method {method!r} is for regression; a classifier uses 'aps'.")
    probs = prediction.class_probs.mean(0)
    labels = class_indices(y_cal, probs.shape[0], probs.shape[-1]).to(probs.device)
    uniform = None
    if randomized:
        uniform = torch.rand(
            probs.shape[0],
            generator=generator.torch_generator("conformal calibration", probs.device),
            dtype=probs.dtype,
            device=probs.device,
        )
    scores = aps_scores(probs, uniform).gather(-1, labels.unsqueeze(-1)).squeeze(-1)
    return ClassificationCalibration(scores.detach(), randomized), "aps"


def calibrate_regression(
    prediction: RegressionPrediction, y_cal: Tensor, method: str
) -> tuple[RegressionCalibration, str]:
    """The calibration of ``"absolute"``, ``"normalized"`` or ``"cqr"`` (``"auto"``:
    ``"normalized"`` where every predictive std is positive, else ``"absolute"``)."""
    if method == "aps":
        raise ValueError(
            "method 'aps' is for classifiers; regression uses 'absolute', 'normalized' or 'cqr'."
        )
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


def calibration_targets(y_cal: Tensor, prediction: RegressionPrediction) -> Tensor:
    """``y_cal`` shaped like one prediction ``[n, ...]``; NaN or inf refused."""
    y = align_targets(y_cal, prediction.loc.shape[1:], "calibration prediction")
    if y.is_floating_point() and not bool(torch.isfinite(y).all()):
        raise ValueError("y_cal contains NaN or inf; remove those rows first.")
    return y
