"""Recalibrations never silently drop what they were fitted with.

* a conformal prediction rescaled to the original target scale stays conformal;
* a recalibration applied to an already recalibrated (isotonic or conformal) posterior, which
  would rebuild its input from the mixture and lose the first map, is refused;
* every scaling wrapper carries the likelihood it was fitted with (a prediction without
  ``likelihood=`` is the calibrated one), and a likelihood other than the one a posterior
  carries is refused by every recalibration, as by ``predict_with_uncertainty``;
* isotonic recalibration resolves the far tails of an over-confident float32 model.
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

import bnn
from bnn.evaluate.recalibrate import (
    conformalize,
    isotonic_recalibrate,
    pooled_temperature_scale,
    std_scale,
    temperature_scale,
    vector_scale,
)
from bnn.likelihoods import ClassificationPrediction, RegressionPrediction
from bnn.posterior import PointEstimate
from bnn.posterior.wrapper import WithLikelihood


def _identity_regression() -> PointEstimate:
    net = nn.Linear(1, 1)
    with torch.no_grad():
        net.weight.fill_(1.0)
        net.bias.fill_(0.0)
    return PointEstimate(net)


def _regression(n: int, seed: int) -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, generator=generator)
    return x, x + torch.randn(n, 1, generator=generator)


@pytest.mark.parametrize("method", ["absolute", "normalized", "cqr"])
def test_a_rescaled_conformal_prediction_is_the_rescaled_interval(method: str) -> None:
    x, y = _regression(300, 0)
    conformal = conformalize(
        _identity_regression(), x[:200], y[:200], likelihood=bnn.Gaussian(0.5), method=method
    )
    prediction = bnn.predict_with_uncertainty(conformal, x[200:], num_samples=1)
    lower, upper = prediction.interval(0.9)
    rescaled = prediction.rescale(10.0, 2.0)
    assert type(rescaled) is type(prediction)
    scaled_lower, scaled_upper = rescaled.interval(0.9)
    torch.testing.assert_close(scaled_lower, 10 + 2 * lower, rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(scaled_upper, 10 + 2 * upper, rtol=1e-6, atol=1e-5)
    model_lower, _ = RegressionPrediction.rescale(prediction, 10.0, 2.0).interval(0.9)
    assert not torch.allclose(model_lower, scaled_lower, atol=1e-2)  # the calibration matters


@pytest.mark.parametrize("first", ["isotonic", "conformal"])
@pytest.mark.parametrize("second", ["conformalize", "isotonic_recalibrate", "std_scale"])
def test_recalibrating_a_recalibrated_posterior_is_refused(first: str, second: str) -> None:
    x, y = _regression(200, 1)
    noise = bnn.Gaussian(0.4)
    base = _identity_regression()
    recalibrated = (
        isotonic_recalibrate(base, x[:100], y[:100], likelihood=noise, num_samples=1)
        if first == "isotonic"
        else conformalize(base, x[:100], y[:100], likelihood=noise, num_samples=1)
    )
    again = {
        "conformalize": conformalize,
        "isotonic_recalibrate": isotonic_recalibrate,
        "std_scale": std_scale,
    }[second]
    with pytest.raises(TypeError, match="one recalibration per posterior"):
        again(recalibrated, x[100:], y[100:], num_samples=1)  # type: ignore[operator]


def test_std_scaled_carries_its_likelihood() -> None:
    x, y = _regression(400, 2)
    scaled = std_scale(
        _identity_regression(), x[:200], y[:200], likelihood=bnn.Gaussian(0.4), num_samples=1
    )
    assert scaled.factor > 2  # the noise std is 1, the likelihood says 0.4
    without = bnn.predict_with_uncertainty(scaled, x[200:], num_samples=1)
    again = bnn.predict_with_uncertainty(
        scaled, x[200:], num_samples=1, likelihood=bnn.Gaussian(0.4)
    )
    torch.testing.assert_close(without.std, again.std, rtol=0, atol=0)
    torch.testing.assert_close(without.std, torch.full_like(without.std, 0.4 * scaled.factor))
    with pytest.raises(ValueError, match="carries its own observation model"):
        bnn.predict_with_uncertainty(scaled, x[200:], num_samples=1, likelihood=bnn.Gaussian(1.0))


def _logits(n: int, seed: int) -> tuple[Tensor, Tensor, PointEstimate]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=generator)
    net = nn.Linear(3, 3)
    with torch.no_grad():
        net.weight.copy_(4 * torch.eye(3))
        net.bias.zero_()
    labels = torch.distributions.Categorical(logits=x).sample()  # the net is 4x too sharp
    return x, labels, PointEstimate(net)


@pytest.mark.parametrize("fit", [temperature_scale, vector_scale])
def test_logit_maps_carry_their_classification_likelihood(fit: object) -> None:
    x, labels, posterior = _logits(600, 3)
    scaled = fit(posterior, x[:400], labels[:400], num_samples=1)  # type: ignore[operator]
    without = bnn.predict_with_uncertainty(scaled, x[400:], num_samples=1)
    again = bnn.predict_with_uncertainty(
        scaled, x[400:], num_samples=1, likelihood=bnn.Categorical()
    )
    assert isinstance(without, ClassificationPrediction)
    torch.testing.assert_close(without.probs, again.probs, rtol=0, atol=0)
    with pytest.raises(ValueError, match="carries its own observation model"):
        bnn.predict_with_uncertainty(scaled, x[400:], num_samples=1, likelihood=bnn.Bernoulli())


def test_a_likelihood_other_than_the_carried_one_is_refused_by_every_recalibration() -> None:
    x, y = _regression(200, 4)
    carrying = WithLikelihood(_identity_regression(), bnn.Gaussian(0.4))
    for recalibrate in (conformalize, isotonic_recalibrate, std_scale):
        with pytest.raises(ValueError, match="calibrate without likelihood="):
            recalibrate(carrying, x, y, likelihood=bnn.Gaussian(1.0), num_samples=1)
        recalibrate(carrying, x, y, likelihood=bnn.Gaussian(0.4), num_samples=1)  # the same
    features, labels, posterior = _logits(200, 5)
    classifier = WithLikelihood(posterior, bnn.Categorical())
    for fit in (temperature_scale, vector_scale):
        with pytest.raises(ValueError, match="calibrate without likelihood="):
            fit(classifier, features, labels, likelihood=bnn.Bernoulli(), num_samples=1)


def test_isotonic_recalibration_reaches_the_far_tails_of_an_overconfident_float32_model() -> None:
    # predictive N(x, 0.25²) for y = x + N(0, 1): the 5 % / 95 % quantiles of the truth lie 6.6
    # model stds out, beyond float32's CDF (it rounds to 0 or 1 past ~5.3 stds: the intervals
    # then stopped there and covered 0.82 / 0.83). K = n knots; tolerance 4 standard deviations
    # of the coverage (calibration order statistics, sqrt(level(1 − level)/(n + 1)), and the
    # test binomial, sqrt(level(1 − level)/m)).
    n, m = 2000, 4000
    x, y = _regression(n + m, 5)
    with pytest.warns(UserWarning, match=r"quantiles above level 0\.98") as caught:
        recalibrated = isotonic_recalibrate(
            _identity_regression(),
            x[:n],
            y[:n],
            likelihood=bnn.Gaussian(0.25),
            num_samples=1,
            num_knots=n,
        )
    assert len(caught) == 1  # residuals beyond 8 model stds (1.2 %) saturate the top knots only
    prediction = bnn.predict_with_uncertainty(recalibrated, x[n:], num_samples=1)
    assert prediction.loc.dtype == torch.float32
    for level in (0.9, 0.95):
        lower, upper = prediction.interval(level)
        coverage = float(((y[n:] >= lower) & (y[n:] <= upper)).double().mean())
        sd = (level * (1 - level) * (1 / (n + 1) + 1 / m)) ** 0.5
        assert abs(coverage - level) < 4 * sd, (level, coverage, sd)


def _dropout_network(outputs: int) -> bnn.MCDropout:
    with bnn.RNG(0).stream("init"):
        network = nn.Sequential(
            nn.Linear(3, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, outputs)
        )
    return bnn.MCDropout(network)


def test_every_recalibration_takes_a_model_as_conformalize_does() -> None:
    generator = torch.Generator().manual_seed(6)
    x = torch.randn(120, 3, generator=generator)
    y = x.sum(1, keepdim=True) + torch.randn(120, 1, generator=generator)
    labels = torch.randint(0, 3, (120,), generator=generator)
    regression, classifier = _dropout_network(1), _dropout_network(3)
    noise = bnn.Gaussian(1.0)
    fitted = [
        isotonic_recalibrate(regression, x, y, likelihood=noise, num_samples=8, rng=0),
        std_scale(regression, x, y, likelihood=noise, num_samples=8, rng=0),
        temperature_scale(classifier, x, labels, num_samples=8, rng=0),
        vector_scale(classifier, x, labels, num_samples=8, rng=0),
        pooled_temperature_scale(classifier, x, labels, num_samples=8, rng=0),
    ]
    for scaled in fitted:
        assert isinstance(scaled.posterior, bnn.Posterior)
        bnn.predict_with_uncertainty(scaled, x[:5], num_samples=8, rng=1)


def test_isotonic_recalibration_refuses_a_mixture_of_point_masses() -> None:
    generator = torch.Generator().manual_seed(7)
    x = torch.randn(100, 3, generator=generator)
    y = x.sum(1, keepdim=True) + torch.randn(100, 1, generator=generator)
    with pytest.raises(ValueError, match="no observation noise"):
        isotonic_recalibrate(_dropout_network(1), x, y, num_samples=20, rng=0)


def test_targets_beyond_the_lower_float64_tail_leave_finite_moments() -> None:
    # N(0, 0.3²) predictive, targets near −12 (40 stds below: PITs of exactly 0, all tied)
    generator = torch.Generator().manual_seed(8)
    x = torch.zeros(200, 1)
    y = -12 + torch.randn(200, 1, generator=generator)
    net = nn.Linear(1, 1)
    with torch.no_grad():
        net.weight.zero_()
        net.bias.zero_()
    with pytest.warns(UserWarning, match="below level"):
        recalibrated = isotonic_recalibrate(
            PointEstimate(net), x, y, likelihood=bnn.Gaussian(0.3), num_samples=1
        )
    prediction = bnn.predict_with_uncertainty(recalibrated, x[:3], num_samples=1)
    assert bool(torch.isfinite(prediction.mean).all() and torch.isfinite(prediction.std).all())
    assert bool(torch.isfinite(recalibrated.knots.diff().reciprocal()).all())  # finite slopes


def test_scaling_a_conformal_classifier_is_refused() -> None:
    features, labels, posterior = _logits(200, 9)
    conformal = conformalize(
        posterior, features[:100], labels[:100], likelihood=bnn.Categorical(), num_samples=1
    )
    for fit in (temperature_scale, vector_scale, pooled_temperature_scale):
        with pytest.raises(TypeError, match="one recalibration per posterior"):
            fit(conformal, features[100:], labels[100:], num_samples=1)
