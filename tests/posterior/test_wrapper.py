"""`WithLikelihood`: a posterior with an attached observation model."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import bnn
from bnn.posterior import WithLikelihood


def _dropout_model() -> nn.Module:
    torch.manual_seed(0)
    network = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 1))
    return bnn.nn.MCDropout(network)


def test_predictions_equal_passing_the_likelihood() -> None:
    model, x = _dropout_model(), torch.randn(7, 2)
    wrapped = WithLikelihood(model, bnn.Gaussian(0.3))
    expected = bnn.predict_with_uncertainty(model, x, likelihood=bnn.Gaussian(0.3), rng=3)
    got = bnn.predict_with_uncertainty(wrapped, x, rng=3)
    assert torch.equal(got.mean, expected.mean) and torch.equal(got.std, expected.std)
    assert wrapped.predictive_likelihood.std == pytest.approx(0.3)


def test_members_with_different_likelihoods_stack_without_likelihood_argument() -> None:
    """Each member is scored with its own attached likelihood."""
    model, x = _dropout_model(), torch.randn(40, 2)
    y = torch.randn(40, 1)
    members = [WithLikelihood(model, bnn.Gaussian(0.1)), WithLikelihood(model, bnn.Gaussian(3.0))]
    _, history = bnn.infer.stack(members, x, y, num_samples=50, rng=0)
    for k, noise in enumerate((0.1, 3.0)):
        with torch.no_grad():
            samples = members[k].sample_functions(x, 50, rng=bnn.RNG(0).spawn(k))
        expected = bnn.Gaussian(noise).predict(samples).log_likelihood(y).double().mean()
        assert history.extras["member_log_scores"][k] == pytest.approx(float(expected), rel=1e-6)
        assert samples.shape == (50, 40, 1)


def test_bad_arguments_are_named() -> None:
    with pytest.raises(TypeError, match="likelihood must be a bnn Likelihood"):
        WithLikelihood(_dropout_model(), "gaussian")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="expected a model with Bayesian layers"):
        WithLikelihood(object(), bnn.Gaussian(0.1))
