"""OOD detection metrics against closed forms (Gaussian scores) and brute-force definitions."""

from __future__ import annotations

import math

import pytest
import torch

from bnn.evaluate.ood import (
    OODReport,
    aupr,
    auroc,
    fpr_at_tpr,
    ood_detection,
    ood_table,
    uncertainty_score,
)
from bnn.likelihoods import ClassificationPrediction


def _normal_cdf(z: float) -> float:
    return 0.5 * (1.0 + math.erf(z / math.sqrt(2.0)))


def _prediction(logits: torch.Tensor) -> ClassificationPrediction:
    """A prediction from logits ``[S, N, K]``."""
    return ClassificationPrediction(samples=logits, class_probs=torch.softmax(logits, -1))


def _brute_auroc(inside: list[float], outside: list[float]) -> float:
    pairs = [(o > i) + 0.5 * (o == i) for i in inside for o in outside]
    return sum(pairs) / len(pairs)


def _brute_average_precision(inside: list[float], outside: list[float]) -> float:
    total, previous_recall = 0.0, 0.0
    for threshold in sorted(set(inside + outside), reverse=True):
        true_pos = sum(o >= threshold for o in outside)
        false_pos = sum(i >= threshold for i in inside)
        recall = true_pos / len(outside)
        total += (recall - previous_recall) * true_pos / (true_pos + false_pos)
        previous_recall = recall
    return total


def test_metrics_equal_their_definitions_with_ties() -> None:
    generator = torch.Generator().manual_seed(0)
    inside = torch.randint(0, 6, (40,), generator=generator).double()
    outside = torch.randint(2, 9, (30,), generator=generator).double()
    lists = inside.tolist(), outside.tolist()
    assert auroc(inside, outside) == pytest.approx(_brute_auroc(*lists), abs=1e-12)
    assert aupr(inside, outside) == pytest.approx(_brute_average_precision(*lists), abs=1e-12)
    # FPR at 95 % TPR: the highest threshold flagging >= 95 % of OOD, by enumeration
    for threshold in sorted(set(lists[0] + lists[1]), reverse=True):
        if sum(o >= threshold for o in lists[1]) >= 0.95 * len(lists[1]):
            expected = sum(i >= threshold for i in lists[0]) / len(lists[0])
            break
    assert fpr_at_tpr(inside, outside) == pytest.approx(expected, abs=1e-12)


def test_metrics_equal_scikit_learn() -> None:
    metrics = pytest.importorskip("sklearn.metrics")
    generator = torch.Generator().manual_seed(1)
    inside = torch.randn(500, generator=generator).round(decimals=1)
    outside = (torch.randn(300, generator=generator) + 1).round(decimals=1)
    labels = [0] * 500 + [1] * 300
    scores = torch.cat([inside, outside]).tolist()
    assert auroc(inside, outside) == pytest.approx(metrics.roc_auc_score(labels, scores), abs=1e-12)
    assert aupr(inside, outside) == pytest.approx(
        metrics.average_precision_score(labels, scores), abs=1e-12
    )


def test_gaussian_scores_match_closed_forms() -> None:
    """in ~ N(0, 1), out ~ N(1, 1): AUROC = Φ(1/√2); FPR95 = Φ(1.6449 − 1) = Φ(0.6449)."""
    n = 4000
    generator = torch.Generator().manual_seed(2)
    inside = torch.randn(n, generator=generator, dtype=torch.float64)
    outside = torch.randn(n, generator=generator, dtype=torch.float64) + 1.0
    expected = _normal_cdf(1 / math.sqrt(2))
    # Hanley & McNeil (1982) standard error of the AUROC
    q1, q2 = expected / (2 - expected), 2 * expected**2 / (1 + expected)
    se = math.sqrt(
        (expected * (1 - expected) + (n - 1) * (q1 - expected**2) + (n - 1) * (q2 - expected**2))
        / n**2
    )
    assert abs(auroc(inside, outside) - expected) < 4.5 * se
    # FPR95: binomial error of the in-distribution share, plus the error of the 5 % quantile
    # of the OOD scores (sd sqrt(0.05·0.95/n)/φ(z)) moved through φ at the threshold
    z, fpr = 1.6448536, _normal_cdf(1.6448536 - 1.0)
    density = lambda t: math.exp(-t * t / 2) / math.sqrt(2 * math.pi)  # noqa: E731
    quantile_sd = math.sqrt(0.05 * 0.95 / n) / density(z)
    sd = math.hypot(math.sqrt(fpr * (1 - fpr) / n), density(1.6448536 - 1.0) * quantile_sd)
    assert abs(fpr_at_tpr(inside, outside) - fpr) < 4.5 * sd


def test_extremes() -> None:
    low, high = torch.tensor([0.0, 0.1, 0.2]), torch.tensor([0.5, 0.6])
    assert auroc(low, high) == 1.0 and aupr(low, high) == 1.0 and fpr_at_tpr(low, high) == 0.0
    assert auroc(high, low) == 0.0
    assert fpr_at_tpr(high, low) == 1.0
    tied = torch.zeros(5)
    assert auroc(tied, torch.zeros(3)) == 0.5
    assert aupr(tied, torch.zeros(3)) == pytest.approx(3 / 8)  # the chance level


def test_scores_read_the_prediction() -> None:
    generator = torch.Generator().manual_seed(3)
    prediction = _prediction(torch.randn(4, 6, 3, generator=generator))
    probs = prediction.probs
    assert torch.equal(uncertainty_score(prediction, "entropy"), prediction.entropy)
    assert torch.allclose(uncertainty_score(prediction, "max_probability"), 1 - probs.max(-1)[0])
    assert torch.equal(
        uncertainty_score(prediction, "mutual_information"), prediction.mutual_information
    )
    single = _prediction(torch.randn(1, 6, 3, generator=generator))  # one deterministic net
    report = ood_detection(single, single, score="mutual_information")
    assert report.auroc == 0.5


def test_report_and_table() -> None:
    inside = _prediction(torch.tensor([[[8.0, 0.0, 0.0], [0.0, 9.0, 0.0]]]))
    outside = _prediction(torch.tensor([[[1.0, 1.0, 0.9], [0.5, 0.4, 0.5]]]))
    report = ood_detection(inside, outside)
    assert isinstance(report, OODReport)
    assert report.auroc == 1.0 and report.fpr95 == 0.0
    assert report.confidence_in > 0.99 and report.confidence_out < 0.4
    assert report.entropy_out > report.entropy_in
    table = ood_table({"map": {"mnist": report}})
    assert "| map | mnist | entropy | 1.0000 |" in table
    assert report.as_dict()["score"] == "entropy"


def test_bad_input_is_refused() -> None:
    good = torch.tensor([0.1, 0.2])
    with pytest.raises(ValueError, match="empty"):
        auroc(torch.zeros(0), good)
    with pytest.raises(ValueError, match="NaN"):
        aupr(torch.tensor([float("nan")]), good)
    with pytest.raises(TypeError, match="1-D"):
        auroc(torch.zeros(2, 2), good)
    with pytest.raises(ValueError, match="tpr"):
        fpr_at_tpr(good, good, tpr=0.0)
    prediction = _prediction(torch.zeros(1, 2, 3))
    with pytest.raises(ValueError, match="score must be one of"):
        uncertainty_score(prediction, "variance")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="classes"):
        ood_detection(prediction, _prediction(torch.zeros(1, 2, 4)))
    binary = ClassificationPrediction(
        samples=torch.zeros(1, 2), class_probs=torch.full((1, 2, 2), 0.5), binary=True
    )
    with pytest.raises(TypeError, match="multi-class"):
        ood_detection(binary, prediction)
