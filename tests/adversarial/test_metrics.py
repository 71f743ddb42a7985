"""Log-likelihoods, metrics, calibration and diagnostics with bad targets or the wrong kind of
prediction: an error naming the problem, never a NaN, a broadcast or a torch traceback."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import nn

import bnn
from bnn.evaluate import metrics

GENERATOR = torch.Generator().manual_seed(0)
REGRESSION = bnn.Gaussian(0.5).predict(torch.randn(4, 6, 1, generator=GENERATOR))
CLASSES = bnn.Categorical().predict(torch.randn(4, 6, 3, generator=GENERATOR))
BINARY = bnn.Bernoulli().predict(torch.randn(4, 6, 1, generator=GENERATOR))
LABELS = torch.tensor([0, 1, 2, 0, 1, 2])


def _with(value: float, where: int = 2, shape: tuple[int, ...] = (6, 1)) -> torch.Tensor:
    y = torch.zeros(shape)
    y.view(-1)[where] = value
    return y


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_regression_log_likelihood_refuses_non_finite_targets(value: float) -> None:
    with pytest.raises(ValueError, match="targets contain NaN or inf"):
        REGRESSION.log_likelihood(_with(value))


@pytest.mark.parametrize("prediction", [CLASSES, BINARY], ids=["categorical", "bernoulli"])
def test_classification_log_likelihood_refuses_a_nan_label(prediction: Any) -> None:
    with pytest.raises(ValueError, match="targets contain NaN or inf"):
        prediction.log_likelihood(_with(float("nan"), shape=(6,)))


@pytest.mark.parametrize(
    "likelihood, output, y",
    [
        (bnn.Gaussian(1.0), torch.zeros(6, 1), _with(float("nan"))),
        (bnn.Bernoulli(), torch.zeros(6, 1), _with(float("nan"))),
        (bnn.HeteroscedasticGaussian(), torch.zeros(6, 2), _with(float("inf"))),
    ],
    ids=["gaussian", "bernoulli", "heteroscedastic"],
)
def test_likelihood_log_prob_refuses_non_finite_targets(
    likelihood: bnn.Gaussian, output: torch.Tensor, y: torch.Tensor
) -> None:
    with pytest.raises(ValueError, match="NaN or inf"):
        likelihood.log_prob(output, y)


REGRESSION_METRICS: dict[str, Callable[..., float]] = {
    "rmse": metrics.rmse,
    "nll": metrics.nll,
    "crps": metrics.crps,
    "gaussian_nll": metrics.gaussian_nll,
    "interval_coverage": metrics.interval_coverage,
}


@pytest.mark.parametrize("name", sorted(REGRESSION_METRICS))
def test_regression_metrics_refuse_misaligned_nan_and_empty_targets(name: str) -> None:
    metric = REGRESSION_METRICS[name]
    with pytest.raises(ValueError, match=r"targets have shape \(6, 2\).*reshape y"):
        metric(REGRESSION, torch.zeros(6, 2))
    with pytest.raises(ValueError, match="NaN or inf"):
        metric(REGRESSION, _with(float("nan")))
    assert metric(REGRESSION, torch.zeros(6)) == metric(REGRESSION, torch.zeros(6, 1))  # [N] ok


@pytest.mark.parametrize("name", ["rmse", "crps", "gaussian_nll", "interval_coverage"])
def test_regression_metrics_refuse_a_class_prediction(name: str) -> None:
    with pytest.raises(TypeError, match="scores regression predictions.*ClassificationPrediction"):
        REGRESSION_METRICS[name](CLASSES, LABELS)


CLASS_METRICS: dict[str, Callable[..., float]] = {
    "accuracy": metrics.accuracy,
    "brier_score": metrics.brier_score,
    "expected_calibration_error": metrics.expected_calibration_error,
    "nll": metrics.nll,
}


@pytest.mark.parametrize("name", sorted(CLASS_METRICS))
@pytest.mark.parametrize(
    "y, fragment",
    [
        (torch.eye(3)[LABELS], "looks one-hot.*y.argmax"),
        (torch.tensor([0, 1, 3, 0, 1, 2]), r"class labels must lie in \[0, 2\]"),
        (torch.tensor([0, 1, -1, 0, 1, 2]), r"class labels must lie in \[0, 2\]"),
        (torch.tensor([0.0, 1.0, 0.5, 0.0, 1.0, 2.0]), "whole numbers"),
        (LABELS[:4], r"targets have shape \(4,\)"),
    ],
    ids=["one-hot", "label-too-large", "negative-label", "fractional-label", "too-few"],
)
def test_class_metrics_refuse_bad_labels(name: str, y: torch.Tensor, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        CLASS_METRICS[name](CLASSES, y)


@pytest.mark.parametrize("name", ["accuracy", "brier_score", "expected_calibration_error"])
def test_class_metrics_refuse_a_regression_prediction(name: str) -> None:
    with pytest.raises(TypeError, match="scores class predictions.*RegressionPrediction"):
        CLASS_METRICS[name](REGRESSION, torch.zeros(6, 1))


def test_class_metrics_give_the_right_numbers_on_a_known_case() -> None:
    certain = bnn.Categorical().predict(100.0 * torch.eye(3)[LABELS].unsqueeze(0))
    assert metrics.accuracy(certain, LABELS) == 1.0
    assert metrics.brier_score(certain, LABELS) == pytest.approx(0.0, abs=1e-12)
    assert metrics.accuracy(certain, (LABELS + 1) % 3) == 0.0


@pytest.mark.parametrize(
    "prediction, y, error, fragment",
    [
        (REGRESSION, _with(float("nan")), ValueError, "NaN or inf"),
        (REGRESSION, torch.zeros(6, 2), ValueError, r"targets have shape \(6, 2\)"),
        (CLASSES, torch.eye(3)[LABELS], ValueError, "looks one-hot"),
        (CLASSES, torch.full((6,), 3), ValueError, "must lie in"),
    ],
    ids=["nan", "misaligned", "one-hot", "label-out-of-range"],
)
def test_calibration_refuses_bad_targets(
    prediction: Any, y: torch.Tensor, error: type[Exception], fragment: str
) -> None:
    with pytest.raises(error, match=fragment):
        bnn.calibration(prediction, y)


@pytest.mark.parametrize("level", [0.0, 1.0, 1.5, float("nan")])
def test_interval_levels_outside_zero_one_are_refused(level: float) -> None:
    with pytest.raises(ValueError, match=r"level must be in \(0, 1\)"):
        metrics.interval_coverage(REGRESSION, torch.zeros(6, 1), level)


@pytest.mark.parametrize("entry", [bnn.to_arviz, bnn.summary])
def test_diagnostics_refuse_what_is_not_a_posterior(entry: Callable[[object], object]) -> None:
    with pytest.raises(TypeError, match="expected a model with Bayesian layers.*got str"):
        entry("samples.pt")


def test_to_arviz_of_a_plain_network_says_what_it_needs() -> None:
    with pytest.raises(TypeError, match="no Bayesian layers.*Use bnn.bayesianize"):
        bnn.to_arviz(nn.Linear(2, 1))
