"""Every way of reading a conformal posterior gives the same calibrated answer, whatever
likelihood was or was not passed where: ``predict_with_uncertainty`` with and without
``likelihood=``, ``.predict``, ``.interval`` / ``.prediction_set``, ``metrics``,
``bnn.calibration`` and the coverage plot, ``to_arviz``. A likelihood other than the
calibration's is refused, and ``conformalize`` takes a model as its docstring says."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

import bnn
from bnn.evaluate import metrics
from bnn.evaluate.recalibrate import ConformalPosterior, conformalize

REGRESSION_DOORS = ("predict_with_uncertainty", "with its likelihood again", "predict")


def _data(n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    x = torch.rand(n, 1, generator=generator) * 4 - 2
    return x, torch.sin(2 * x) + 0.3 * torch.randn(n, 1, generator=generator)


@pytest.fixture(scope="module")
def dropout_model() -> bnn.MCDropout:
    generator = torch.Generator().manual_seed(0)
    x, y = _data(200, generator)
    with bnn.RNG(0).stream("init"):
        net = nn.Sequential(nn.Linear(1, 32), nn.Tanh(), nn.Dropout(0.1), nn.Linear(32, 1))
    model = bnn.MCDropout(net)
    bnn.fit(model, (x, y), likelihood=bnn.Gaussian(0.05), epochs=60, lr=1e-2, rng=0)
    return model


def _regression_door(conformal: ConformalPosterior, door: str, x: Tensor) -> bnn.Prediction:
    if door == "predict_with_uncertainty":
        return bnn.predict_with_uncertainty(conformal, x, num_samples=50, rng=1)
    if door == "with its likelihood again":  # an equal, separately built likelihood
        again = bnn.Gaussian(0.05)
        return bnn.predict_with_uncertainty(conformal, x, num_samples=50, likelihood=again, rng=1)
    return conformal.predict(x, num_samples=50, rng=1)


@pytest.mark.parametrize("method", ["normalized", "cqr", "absolute"])
def test_every_regression_door_gives_the_conformal_interval(
    dropout_model: bnn.MCDropout, method: str
) -> None:
    generator = torch.Generator().manual_seed(1)
    x_cal, y_cal = _data(300, generator)
    x_test, y_test = _data(400, generator)
    conformal = conformalize(  # the model itself, not a posterior: accepted
        dropout_model, x_cal, y_cal, likelihood=bnn.Gaussian(0.05), method=method, rng=0
    )
    expected = conformal.interval(x_test, num_samples=50, rng=1)
    for door in REGRESSION_DOORS:
        prediction = _regression_door(conformal, door, x_test)
        torch.testing.assert_close(prediction.interval(), expected, rtol=0, atol=0, msg=door)
        inside = ((y_test >= expected[0]) & (y_test <= expected[1])).double().mean()
        assert metrics.interval_coverage(prediction, y_test, 0.9) == float(inside), door
        assert bnn.calibration(prediction, y_test).coverage[0.9] == float(inside), door


def test_the_noise_is_not_silently_dropped(dropout_model: bnn.MCDropout) -> None:
    """Calibrated with a noise level, predicted without repeating it: the same intervals as
    with it (a noise-free predictive gave normalised intervals covering 0.29 instead of 0.9)."""
    generator = torch.Generator().manual_seed(2)
    x_cal, y_cal = _data(300, generator)
    x_test, _ = _data(100, generator)
    conformal = conformalize(
        dropout_model, x_cal, y_cal, likelihood=bnn.Gaussian(0.05), method="normalized", rng=0
    )
    prediction = bnn.predict_with_uncertainty(conformal, x_test, num_samples=50, rng=1)
    noisy = bnn.predict_with_uncertainty(
        dropout_model, x_test, num_samples=50, likelihood=bnn.Gaussian(0.05), rng=1
    )
    torch.testing.assert_close(prediction.std, noisy.std)


def test_a_heteroscedastic_head_needs_no_likelihood_at_prediction() -> None:
    generator = torch.Generator().manual_seed(3)
    x_cal, y_cal = _data(200, generator)
    with bnn.RNG(0).stream("init"):
        head = bnn.posterior.PointEstimate(nn.Linear(1, 2))
    likelihood = bnn.HeteroscedasticGaussian()
    conformal = conformalize(head, x_cal, y_cal, likelihood=likelihood, rng=0)
    without = bnn.predict_with_uncertainty(conformal, x_cal[:20], rng=1).interval()
    torch.testing.assert_close(without, conformal.interval(x_cal[:20], rng=1))


def test_another_likelihood_is_refused_with_what_to_do(dropout_model: bnn.MCDropout) -> None:
    generator = torch.Generator().manual_seed(4)
    x_cal, y_cal = _data(100, generator)
    conformal = conformalize(dropout_model, x_cal, y_cal, likelihood=bnn.Gaussian(0.05), rng=0)
    with pytest.raises(ValueError, match="predict without likelihood="):
        bnn.predict_with_uncertainty(conformal, x_cal, likelihood=bnn.Gaussian(0.5))
    noise_free = conformalize(dropout_model, x_cal, y_cal, method="absolute", rng=0)
    with pytest.raises(ValueError, match="lose the coverage guarantee"):
        bnn.predict_with_uncertainty(noise_free, x_cal, likelihood=bnn.Gaussian(0.05))


def test_to_arviz_uses_the_calibration_likelihood(dropout_model: bnn.MCDropout) -> None:
    pytest.importorskip("arviz")
    generator = torch.Generator().manual_seed(5)
    x_cal, y_cal = _data(100, generator)
    conformal = conformalize(dropout_model, x_cal, y_cal, likelihood=bnn.Gaussian(0.05), rng=0)
    options = {"x": x_cal[:10], "observed": y_cal[:10], "num_samples": 20, "rng": 1}
    carried = bnn.to_arviz(conformal, **options)
    passed = bnn.to_arviz(conformal, likelihood=bnn.Gaussian(0.05), **options)
    assert carried.log_likelihood["y"].values.tolist() == passed.log_likelihood["y"].values.tolist()


def test_every_classification_door_gives_the_same_sets() -> None:
    generator = torch.Generator().manual_seed(6)
    x = torch.randn(600, 2, generator=generator)
    y = (x[:, 0] + 0.5 * torch.randn(600, generator=generator) > 0).long()
    with bnn.RNG(0).stream("init"):
        classifier = bnn.posterior.PointEstimate(nn.Linear(2, 2))
    conformal = conformalize(
        classifier, x[:300], y[:300], likelihood=bnn.Categorical(), method="aps", rng=0
    )
    expected = conformal.prediction_set(x[300:], rng=1)
    doors = {
        "predict_with_uncertainty": bnn.predict_with_uncertainty(conformal, x[300:], rng=1),
        "with its likelihood again": bnn.predict_with_uncertainty(
            conformal, x[300:], likelihood=bnn.Categorical(), rng=1
        ),
        "predict": conformal.predict(x[300:], rng=1),
    }
    covered = float(expected[torch.arange(300), y[300:]].double().mean())
    for door, prediction in doors.items():
        assert torch.equal(prediction.prediction_set(), expected), door
        assert metrics.set_coverage(prediction, y[300:]) == covered, door
        report = bnn.calibration(prediction, y[300:])
        assert report.scores["set coverage @ 90%"] == covered, door
        assert report.scores["mean set size"] == metrics.mean_set_size(prediction), door


def test_set_metrics_refuse_a_prediction_without_sets() -> None:
    prediction = bnn.Categorical().predict(torch.zeros(1, 3, 2))
    with pytest.raises(TypeError, match="conformalize the posterior"):
        metrics.set_coverage(prediction, torch.zeros(3, dtype=torch.long))


def test_conformalize_refuses_what_is_not_a_model_before_any_work() -> None:
    with pytest.raises(TypeError, match="Posterior|model"):
        conformalize("a network", torch.zeros(10, 1), torch.zeros(10, 1))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="likelihood must be a bnn Likelihood"):
        conformalize(
            bnn.posterior.PointEstimate(nn.Linear(1, 1)),
            torch.zeros(10, 1),
            torch.zeros(10, 1),
            likelihood="gaussian",  # type: ignore[arg-type]
        )
