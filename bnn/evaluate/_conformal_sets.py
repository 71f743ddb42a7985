"""Conformal prediction sets for classifiers: APS (Romano et al. 2020), RAPS (Angelopoulos et
al. 2021) and their class-conditional (Mondrian) versions.

A class's score ranks the classes by predicted probability and adds up, in that order, each
class's probability plus, from rank ``k_reg + 1`` on, a penalty ``λ`` (RAPS; ``λ = 0`` is
APS): the score of class ``y`` at rank ``o`` is

    ``E(x, y) = Σ_{j<o} p_(j) + λ (o − k_reg)⁺ + u · p(y)``

with ``u ~ U(0, 1)``; the calibration scores are always randomized. The set is
``{y : E(x, y) ≤ q̂}`` (randomized: exact coverage), or every class whose score *before* its
own probability and penalty step is below ``q̂`` (conservative: never empty, coverage
``≥ level`` since ``E(x, y) ≤ q̂`` implies it; like MAPIE's ``include_last_label=True`` it
includes the class that crosses the threshold, but against randomized calibration scores, so
the sets can differ from MAPIE's in that last class). The penalty keeps
classes far down the ranking out of the sets of an over-confident model with a long tail of
small probabilities. Class-conditional sets use one threshold per class, from the
calibration points of that class, so coverage holds within every class (Vovk 2012), not only
on average.

RAPS's ``k_reg`` by default comes from a held-out fifth of the calibration set (the level
quantile of the true labels' ranks there, as in the paper); the sets are calibrated on the
rest, so the guarantee is intact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from bnn.evaluate._conformal_scores import conformal_rank, fewest_points
from bnn.likelihoods import ClassificationPrediction, class_indices
from bnn.random.rng import RNG

__all__ = [
    "ClassificationCalibration",
    "ConformalClassificationPrediction",
    "SetScore",
    "calibrate_classification",
]

TUNING_SHARE = 0.2  # of the calibration set, for RAPS's k_reg when not given


@dataclass(frozen=True)
class SetScore:
    """The score of every class: APS (``penalty = 0``) or RAPS (``penalty = λ > 0``)."""

    penalty: float = 0.0
    k_reg: int = 0

    def parts(self, probs: Tensor) -> tuple[Tensor, Tensor]:
        """Per class ``[N, K]``: the score accumulated before the class (probabilities and
        penalties of the classes ranked above it), and the class's own penalty step."""
        order = torch.argsort(probs, dim=-1, descending=True, stable=True)
        ranks = torch.arange(1, probs.shape[-1] + 1, device=probs.device)
        step = self.penalty * (ranks > self.k_reg).to(probs.dtype)  # per rank position
        ranked = probs.gather(-1, order) + step
        before = torch.empty_like(probs).scatter_(-1, order, ranked.cumsum(-1) - ranked)
        own_step = torch.empty_like(probs).scatter_(-1, order, step.expand_as(probs))
        return before, own_step

    def scores(self, probs: Tensor, uniform: Tensor | None) -> Tensor:
        """``E(x, y)`` of every class ``[N, K]`` (``uniform``: ``u`` per input ``[N]``)."""
        before, own_step = self.parts(probs)
        own = probs if uniform is None else uniform.unsqueeze(-1) * probs
        return before + own_step + own


@dataclass(frozen=True)
class ClassificationCalibration:
    """The calibration labels' scores (level-free), and how sets are built from them.

    Attributes:
        scores: score of each calibration point's label ``[n]``.
        randomized: randomized sets (exact coverage) or not (never empty).
        score: APS or RAPS.
        labels: the calibration labels ``[n]`` for class-conditional thresholds, else ``None``.
        num_classes: ``K``.
    """

    scores: Tensor
    randomized: bool
    score: SetScore = SetScore()
    labels: Tensor | None = None
    num_classes: int = 0

    def threshold(self, level: float) -> Tensor:
        """``q̂``: a scalar, or one per class ``[K]`` (class-conditional)."""
        if self.labels is None:
            return torch.kthvalue(self.scores, conformal_rank(len(self.scores), level)).values
        thresholds = []
        for label in range(self.num_classes):
            own = self.scores[self.labels == label]
            if len(own) < fewest_points(level):
                raise ValueError(
                    f"class {label} has {len(own)} calibration points; class-conditional sets "
                    f"at level {level} need at least {fewest_points(level)} per class. Pass more "
                    "calibration data, a lower level, or class_conditional=False."
                )
            thresholds.append(torch.kthvalue(own, conformal_rank(len(own), level)).values)
        return torch.stack(thresholds)

    def membership(self, probs: Tensor, uniform: Tensor | None, level: float) -> Tensor:
        """Boolean set membership ``[N, K]`` at ``level``."""
        q = self.threshold(level)
        if uniform is not None:
            return self.score.scores(probs, uniform) <= q
        before, _ = self.score.parts(probs)
        return before < q


@dataclass(frozen=True)
class ConformalClassificationPrediction(ClassificationPrediction):
    """A `ClassificationPrediction` with conformal prediction sets (APS or RAPS, marginal or
    class-conditional).

    Attributes:
        calibration: the calibration scores (set by `conformalize`).
        uniform: the ``u ~ U(0, 1)`` per input ``[N]`` of randomized sets (``None``: not
            randomized).
        level: the level ``prediction_set()`` uses by default.
    """

    calibration: ClassificationCalibration | None = None
    uniform: Tensor | None = None
    level: float = 0.9

    def prediction_set(self, level: float | None = None) -> Tensor:
        """Boolean membership ``[N, K]`` of each class in the conformal set at ``level``.

        Randomized: class ``y`` is in the set iff ``E(x, y) ≤ q̂``. Not randomized: classes
        are added in order of probability while the score before them is below ``q̂`` (the
        class that crosses it included; never empty, coverage ``≥ level``). For a binary
        classifier the classes are ``0`` and ``1``.
        """
        assert self.calibration is not None
        level = self.level if level is None else level
        return self.calibration.membership(self.class_probs.mean(0), self.uniform, level)


def calibrate_classification(
    prediction: ClassificationPrediction,
    y_cal: Tensor,
    method: str,
    randomized: bool,
    generator: RNG,
    *,
    level: float,
    penalty: float,
    k_reg: int | str,
    class_conditional: bool,
) -> tuple[ClassificationCalibration, str]:
    """Scores of the calibration labels (``u`` from the generator ``"conformal
    calibration"``), and the method, ``"aps"`` (``"auto"``) or ``"raps"``."""
    if method not in ("auto", "aps", "raps"):
        raise ValueError(f"method {method!r} is for regression; a classifier uses 'aps' or 'raps'.")
    method = "aps" if method == "auto" else method
    probs = prediction.class_probs.mean(0)
    labels = class_indices(y_cal, probs.shape[0], probs.shape[-1]).to(probs.device)
    score = SetScore()
    if method == "raps":
        probs, labels, k = _raps_k_reg(probs, labels, k_reg, level, generator)
        score = SetScore(penalty=float(penalty), k_reg=k)
    # randomized calibration scores for both kinds of sets: the conservative sets (every
    # class whose score before its own mass is below q̂) still cover ≥ level, and are smaller
    # than with the full mass in every calibration score
    uniform = torch.rand(
        probs.shape[0],
        generator=generator.torch_generator("conformal calibration", probs.device),
        dtype=probs.dtype,
        device=probs.device,
    )
    scores = score.scores(probs, uniform).gather(-1, labels.unsqueeze(-1)).squeeze(-1)
    calibration = ClassificationCalibration(
        scores.detach(),
        randomized,
        score,
        labels if class_conditional else None,
        int(probs.shape[-1]),
    )
    return calibration, method


def _raps_k_reg(
    probs: Tensor, labels: Tensor, k_reg: int | str, level: float, generator: RNG
) -> tuple[Tensor, Tensor, int]:
    """``k_reg`` as given, or the level quantile of the true labels' ranks on a held-out
    fifth of the calibration set; returns the calibration points left for the scores."""
    if k_reg != "auto":
        assert isinstance(k_reg, int)
        return probs, labels, k_reg
    n = probs.shape[0]
    tuning = max(fewest_points(level), math.ceil(TUNING_SHARE * n))
    if n - tuning < fewest_points(level):
        raise ValueError(
            f"RAPS with k_reg='auto' holds out {tuning} of the {n} calibration points to pick "
            f"k_reg and needs {fewest_points(level)} more to calibrate at level {level}; pass more "
            "calibration data or k_reg=<int>."
        )
    permutation = torch.randperm(
        n, generator=generator.torch_generator("conformal k_reg", probs.device), device=probs.device
    )
    held_out, kept = permutation[:tuning], permutation[tuning:]
    order = torch.argsort(probs[held_out], dim=-1, descending=True, stable=True)
    ranks = (order == labels[held_out].unsqueeze(-1)).nonzero()[:, 1] + 1
    k = int(torch.kthvalue(ranks.float(), conformal_rank(tuning, level)).values)
    return probs[kept], labels[kept], k
