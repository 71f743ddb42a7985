"""PerSampleLikelihood: each function sample read with its own observation model."""

from __future__ import annotations

import pytest
import torch

import bnn
from bnn.likelihoods import PerSampleLikelihood


def test_mixture_of_per_sample_gaussians_has_the_law_of_total_variance() -> None:
    stds = [0.1, 0.2, 0.4]
    combined = PerSampleLikelihood([bnn.Gaussian(s) for s in stds])
    samples = torch.tensor([[[0.0]], [[1.0]], [[3.0]]])  # [M=3, N=1, 1]
    prediction = combined.predict(samples)
    expected_mean = samples.mean()
    expected_variance = (samples**2).mean() - expected_mean**2 + torch.tensor(stds).pow(2).mean()
    torch.testing.assert_close(prediction.mean, expected_mean.reshape(1, 1))
    torch.testing.assert_close(prediction.variance, expected_variance.reshape(1, 1))


def test_per_sample_likelihood_needs_one_sample_per_part_and_does_not_train() -> None:
    combined = PerSampleLikelihood([bnn.Gaussian(0.1), bnn.Gaussian(0.2)])
    with pytest.raises(ValueError, match="num_samples >= 2"):
        combined.predict(torch.zeros(1, 4, 1))
    with pytest.raises(TypeError, match="train each member"):
        combined.log_prob(torch.zeros(4, 1), torch.zeros(4, 1))
    with pytest.raises(ValueError, match="non-empty"):
        PerSampleLikelihood([])
