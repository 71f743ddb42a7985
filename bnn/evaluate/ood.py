"""Out-of-distribution detection: does the predictive's uncertainty tell foreign inputs apart?

A score ``s(x)`` (higher = more uncertain) is computed on in-distribution inputs (negatives)
and out-of-distribution inputs (positives); a detector flags ``s(x) ≥ t``. Over all thresholds:

* **AUROC** — ``P(s_out > s_in) + ½ P(s_out = s_in)`` (the Mann–Whitney statistic); 0.5 is
  chance, 1 perfect.
* **AUPR** — average precision with OOD as the positive class, ``Σ_k (R_k − R_{k−1}) P_k`` over
  the distinct thresholds (no interpolation; equal to scikit-learn's
  ``average_precision_score``). Its chance level is the OOD share of the pooled set.
* **FPR at 95 % TPR** — the share of in-distribution inputs flagged at the highest threshold
  that flags ≥ 95 % of OOD inputs (lower is better).

Scores: ``"entropy"`` (predictive entropy, total uncertainty), ``"max_probability"``
(``1 − max_k p_k``; Hendrycks & Gimpel 2017), ``"mutual_information"`` (the epistemic part;
zero for a single deterministic network, whose AUROC is then 0.5).

Example:
    >>> report = ood_detection(prediction_in, prediction_out)  # doctest: +SKIP
    >>> report.auroc, report.fpr95, report.confidence_out  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from bnn.likelihoods import ClassificationPrediction

__all__ = [
    "SCORES",
    "OODReport",
    "Score",
    "aupr",
    "auroc",
    "fpr_at_tpr",
    "ood_detection",
    "ood_table",
    "uncertainty_score",
]

Score = Literal["entropy", "max_probability", "mutual_information"]
SCORES: tuple[Score, ...] = ("entropy", "max_probability", "mutual_information")


def _classification(prediction: object, role: str) -> ClassificationPrediction:
    if not isinstance(prediction, ClassificationPrediction) or prediction.binary:
        raise TypeError(
            f"{role} must be a multi-class ClassificationPrediction (from "
            f"predict_with_uncertainty with a Categorical likelihood), got "
            f"{type(prediction).__name__}."
        )
    return prediction


def uncertainty_score(prediction: ClassificationPrediction, score: Score = "entropy") -> Tensor:
    """The per-input OOD score ``[N]`` of a classification prediction (higher = more foreign).

    Args:
        prediction: a multi-class `ClassificationPrediction`.
        score: ``"entropy"``, ``"max_probability"`` (as ``1 − max_k p_k``) or
            ``"mutual_information"``.
    """
    prediction = _classification(prediction, "prediction")
    if score == "entropy":
        return prediction.entropy
    if score == "max_probability":
        return 1.0 - prediction.probs.max(-1).values
    if score == "mutual_information":
        return prediction.mutual_information
    raise ValueError(f"score must be one of {SCORES}, got {score!r}.")


def _scores(values: object, role: str) -> Tensor:
    if not isinstance(values, Tensor) or values.ndim != 1:
        raise TypeError(f"{role} must be a 1-D tensor of scores, got {values!r:.80}.")
    if values.numel() == 0:
        raise ValueError(f"{role} is empty: OOD metrics need inputs of both kinds.")
    if not torch.isfinite(values).all():
        raise ValueError(f"{role} holds NaN or infinite scores; check the predictions.")
    return values.detach().to(torch.float64).cpu()


def _sweep(scores_in: Tensor, scores_out: Tensor) -> tuple[Tensor, Tensor]:
    """Cumulative true and false positives at each distinct threshold, highest first."""
    inside, outside = _scores(scores_in, "scores_in"), _scores(scores_out, "scores_out")
    pooled = torch.cat([inside, outside])
    is_out = torch.cat([torch.zeros_like(inside), torch.ones_like(outside)])
    order = torch.argsort(pooled, descending=True, stable=True)
    pooled, is_out = pooled[order], is_out[order]
    last_of_value = torch.ones_like(pooled, dtype=torch.bool)
    last_of_value[:-1] = pooled[1:] != pooled[:-1]
    true_positives = torch.cumsum(is_out, 0)[last_of_value]
    false_positives = torch.cumsum(1.0 - is_out, 0)[last_of_value]
    return true_positives, false_positives


def auroc(scores_in: Tensor, scores_out: Tensor) -> float:
    """Area under the ROC curve, OOD as positive: ``P(s_out > s_in) + ½ P(s_out = s_in)``.

    Args:
        scores_in: ``[N_in]`` scores of in-distribution inputs.
        scores_out: ``[N_out]`` scores of out-of-distribution inputs.
    """
    inside, outside = _scores(scores_in, "scores_in"), _scores(scores_out, "scores_out")
    ranks = _midranks(torch.cat([inside, outside]))
    rank_sum = ranks[len(inside) :].sum()
    n_in, n_out = len(inside), len(outside)
    return float((rank_sum - n_out * (n_out + 1) / 2) / (n_in * n_out))


def _midranks(values: Tensor) -> Tensor:
    """1-based ranks with ties given their average rank."""
    order = torch.argsort(values, stable=True)
    ordered = values[order]
    first = torch.ones_like(ordered, dtype=torch.bool)
    first[1:] = ordered[1:] != ordered[:-1]
    group = torch.cumsum(first.long(), 0) - 1  # tie group of each sorted value
    positions = torch.arange(1, len(values) + 1, dtype=torch.float64)
    sums = torch.zeros(int(group[-1]) + 1, dtype=torch.float64).index_add_(0, group, positions)
    counts = torch.bincount(group).to(torch.float64)
    ranks = torch.empty_like(positions)
    ranks[order] = (sums / counts)[group]
    return ranks


def aupr(scores_in: Tensor, scores_out: Tensor) -> float:
    """Average precision with OOD as the positive class, ``Σ_k (R_k − R_{k−1}) P_k``.

    Args:
        scores_in: ``[N_in]`` scores of in-distribution inputs.
        scores_out: ``[N_out]`` scores of out-of-distribution inputs.
    """
    true_positives, false_positives = _sweep(scores_in, scores_out)
    precision = true_positives / (true_positives + false_positives)
    recall = true_positives / true_positives[-1]
    steps = torch.diff(recall, prepend=torch.zeros(1, dtype=recall.dtype))
    return float((steps * precision).sum())


def fpr_at_tpr(scores_in: Tensor, scores_out: Tensor, tpr: float = 0.95) -> float:
    """False-positive rate at the highest threshold whose true-positive rate is ≥ ``tpr``.

    Args:
        scores_in: ``[N_in]`` scores of in-distribution inputs.
        scores_out: ``[N_out]`` scores of out-of-distribution inputs.
        tpr: the true-positive rate to reach, in ``(0, 1]``.
    """
    if isinstance(tpr, bool) or not isinstance(tpr, float | int) or not 0.0 < tpr <= 1.0:
        raise ValueError(f"tpr must be in (0, 1], got {tpr!r}.")
    true_positives, false_positives = _sweep(scores_in, scores_out)
    reached = true_positives / true_positives[-1] >= tpr - 1e-12
    first = int(torch.nonzero(reached)[0])
    return float(false_positives[first] / false_positives[-1])


@dataclass(frozen=True)
class OODReport:
    """How well one score separates in-distribution from OOD inputs.

    Attributes:
        score: the score used (see `uncertainty_score`).
        auroc, aupr, fpr95: the three detection metrics (``fpr95``: FPR at 95 % TPR).
        confidence_in, confidence_out: mean max-probability on in-distribution and OOD inputs
            (lower on OOD is better).
        entropy_in, entropy_out: mean predictive entropy (nats).
    """

    score: str
    auroc: float
    aupr: float
    fpr95: float
    confidence_in: float
    confidence_out: float
    entropy_in: float
    entropy_out: float

    def as_dict(self) -> dict[str, float | str]:
        return dict(self.__dict__)


def ood_detection(
    prediction_in: ClassificationPrediction,
    prediction_out: ClassificationPrediction,
    *,
    score: Score = "entropy",
) -> OODReport:
    """AUROC, AUPR, FPR95 and mean confidences of one OOD set against the in-distribution set.

    Args:
        prediction_in: the predictive on in-distribution (test) inputs, ``K`` classes.
        prediction_out: the predictive of the same posterior on OOD inputs, ``K`` classes.
        score: the uncertainty score that ranks inputs (see `uncertainty_score`).

    Returns:
        An `OODReport`.
    """
    inside = _classification(prediction_in, "prediction_in")
    outside = _classification(prediction_out, "prediction_out")
    if inside.probs.shape[-1] != outside.probs.shape[-1]:
        raise ValueError(
            f"prediction_in has {inside.probs.shape[-1]} classes and prediction_out "
            f"{outside.probs.shape[-1]}: both must come from the same posterior."
        )
    scores_in, scores_out = uncertainty_score(inside, score), uncertainty_score(outside, score)
    return OODReport(
        score=score,
        auroc=auroc(scores_in, scores_out),
        aupr=aupr(scores_in, scores_out),
        fpr95=fpr_at_tpr(scores_in, scores_out, 0.95),
        confidence_in=float(inside.probs.max(-1).values.mean()),
        confidence_out=float(outside.probs.max(-1).values.mean()),
        entropy_in=float(inside.entropy.mean()),
        entropy_out=float(outside.entropy.mean()),
    )


def ood_table(reports: Mapping[str, Mapping[str, OODReport]]) -> str:
    """A markdown table comparing posteriors: one row per (posterior, OOD set).

    Args:
        reports: ``{posterior name: {OOD set name: OODReport}}``.

    Example:
        >>> print(ood_table({"ensemble": {"mnist": report}}))  # doctest: +SKIP
    """
    lines = [
        "| posterior | OOD set | score | AUROC | AUPR | FPR95 | confidence in | confidence out |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for name, by_set in reports.items():
        for ood_name, r in by_set.items():
            lines.append(
                f"| {name} | {ood_name} | {r.score} | {r.auroc:.4f} | {r.aupr:.4f} | "
                f"{r.fpr95:.4f} | {r.confidence_in:.4f} | {r.confidence_out:.4f} |"
            )
    return "\n".join(lines)
