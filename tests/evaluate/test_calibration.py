"""Calibration reports against exact predictives: coverage, PIT, ECE, flags."""

from __future__ import annotations

import math

import matplotlib
import pytest
import torch

import bnn
from bnn.likelihoods import ClassificationPrediction, RegressionPrediction

matplotlib.use("Agg")


@pytest.mark.parametrize("level", [0.5, 0.8, 0.95])
def test_exact_gaussian_predictive_is_calibrated_and_overconfident_one_is_flagged(
    level: float,
) -> None:
    generator = torch.Generator().manual_seed(2)
    n = 4000
    mean = torch.randn(n, generator=generator, dtype=torch.float64)
    std = 0.5 + torch.rand(n, generator=generator, dtype=torch.float64)
    y = mean + std * torch.randn(n, generator=generator, dtype=torch.float64)
    exact = RegressionPrediction(samples=mean[None], loc=mean[None], scale=std[None])
    report = bnn.evaluate.calibration(exact, y, levels=(level,))
    assert abs(report.coverage[level] - level) < 5 * math.sqrt(level * (1 - level) / n)
    assert not report.flags
    overconfident = RegressionPrediction(samples=mean[None], loc=mean[None], scale=std[None] / 2)
    flagged = bnn.evaluate.calibration(overconfident, y, levels=(level,))
    assert any(flag.startswith("over-confident") for flag in flagged.flags)
    # PIT values of an exact predictive are uniform: mean 1/2, sd sqrt(1/12) / sqrt(n).
    assert abs(float(report.pit.mean()) - 0.5) < 5 * math.sqrt(1 / 12 / n)


def _classifier(p_true: torch.Tensor) -> ClassificationPrediction:
    probs = torch.stack([p_true, 1 - p_true], -1).unsqueeze(0)
    return ClassificationPrediction(samples=probs.log(), class_probs=probs)


def test_ece_of_calibrated_and_overconfident_classifiers() -> None:
    generator = torch.Generator().manual_seed(3)
    n = 20_000
    p_true = 0.5 + 0.5 * torch.rand(n, generator=generator, dtype=torch.float64)
    labels = (torch.rand(n, generator=generator, dtype=torch.float64) > p_true).long()
    calibrated = bnn.evaluate.calibration(_classifier(p_true), labels)
    assert calibrated.scores["ece"] < 0.015 and not calibrated.flags
    overconfident = bnn.evaluate.calibration(_classifier(p_true + 0.9 * (1 - p_true)), labels)
    assert overconfident.scores["ece"] > 0.1
    assert overconfident.flags and overconfident.flags[0].startswith("over-confident")
