"""Observation models: target validation, densities against torch.distributions, predictions."""

from __future__ import annotations

import math

import pytest
import torch

import bnn


def test_bernoulli_prediction_probs_are_positive_class() -> None:
    prediction = bnn.Bernoulli().predict(torch.zeros(4, 3))
    assert prediction.probs.shape == (3,)
    assert torch.allclose(prediction.probs, torch.full((3,), 0.5))


@pytest.mark.parametrize(
    "likelihood, output, y, error, match",
    [
        (bnn.Gaussian(1.0), torch.zeros(4, 2), torch.zeros(4), ValueError, "reshape y"),
        (
            bnn.Gaussian(1.0),
            torch.zeros(4, 1),
            torch.tensor([0.0, float("nan"), 0.0, 0.0]),
            ValueError,
            "NaN",
        ),
        (bnn.Categorical(), torch.zeros(4, 3), torch.zeros(4), TypeError, "integer"),
        (bnn.Categorical(), torch.zeros(4, 3), torch.tensor([0, 1, 2, 3]), ValueError, r"\[0, 2\]"),
        (bnn.Bernoulli(), torch.zeros(4), torch.tensor([0.0, 1.0, 2.0, 0.0]), ValueError, "0 or 1"),
        (bnn.HeteroscedasticGaussian(), torch.zeros(4, 3), torch.zeros(4, 1), ValueError, "2·D"),
    ],
)
def test_likelihoods_reject_bad_targets(likelihood, output, y, error, match) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(error, match=match):
        likelihood.log_prob(output, y)


def test_heteroscedastic_gaussian_splits_mean_and_std() -> None:
    likelihood = bnn.HeteroscedasticGaussian()
    output = torch.tensor([[1.0, 0.0]])
    expected = torch.distributions.Normal(
        1.0, torch.nn.functional.softplus(torch.tensor(0.0)) + 1e-6
    ).log_prob(torch.tensor(2.0))
    assert torch.allclose(likelihood.log_prob(output, torch.tensor([2.0])), expected)


@pytest.mark.parametrize("bad", [0.0, -1.0, float("inf")])
def test_gaussian_std_must_be_positive(bad: float) -> None:
    with pytest.raises((ValueError, TypeError), match="std"):
        bnn.Gaussian(bad)


def test_a_gaussian_with_one_std_per_output() -> None:
    """``Gaussian([σ_1, …, σ_D])``: the log density of independent N(f_d, σ_d²) per column,
    learnable per column, and outputs with another last dimension refused."""
    stds = torch.tensor([0.1, 0.5, 2.0])
    likelihood = bnn.Gaussian(stds.tolist(), learn_std=True)
    output = torch.randn(4, 3, generator=torch.Generator().manual_seed(0))
    y = output + torch.tensor([0.05, -0.4, 1.0])
    expected = torch.distributions.Normal(output, stds).log_prob(y).sum(-1)
    torch.testing.assert_close(likelihood.log_prob(output, y), expected)
    loss = -likelihood.log_prob(output, y).sum()
    loss.backward()
    assert likelihood.log_std.grad is not None and likelihood.log_std.grad.shape == (3,)
    prediction = bnn.Gaussian(stds.tolist()).predict(output.unsqueeze(0))
    torch.testing.assert_close(prediction.aleatoric, stds.expand(4, 3) ** 2)
    assert "std=[0.1, 0.5, 2.0]" in repr(bnn.Gaussian(stds.tolist()))
    assert torch.equal(bnn.Gaussian(0.3).log_std, torch.tensor(math.log(0.3)))  # scalar kept
    with pytest.raises(ValueError, match="last dimension must be 3"):
        likelihood.log_prob(torch.zeros(4, 1), torch.zeros(4, 1))
    with pytest.raises(ValueError, match="every std must be positive"):
        bnn.Gaussian([0.1, -1.0])
    with pytest.raises(TypeError, match="non-empty sequence"):
        bnn.Gaussian([])
    with pytest.raises(TypeError, match="non-empty sequence"):
        bnn.Gaussian([0.1, float("nan")])
