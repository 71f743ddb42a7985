"""Vector and Platt scaling recover the per-class scale and bias that generated the labels,
within five standard errors of the maximum-likelihood estimate (from the observed Fisher
information of the calibration NLL), and predictions go through the fitted map."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

import bnn
from bnn.evaluate.recalibrate import VectorScaled, vector_scale
from tests.evaluate.test_recalibrate import Fixed

IDENTITY = Fixed(lambda x: x.unsqueeze(0))  # the "model" outputs its input as logits


def _labels(logits: Tensor, scale: Tensor, bias: Tensor, seed: int) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.multinomial((logits * scale + bias).softmax(-1), 1, generator=g).squeeze(-1)


def _standard_errors(logits: Tensor, labels: Tensor, parameters: Tensor) -> Tensor:
    """Square roots of the diagonal of the inverse observed information of the total NLL,
    with the bias's free direction (a constant on every class) removed by centring."""
    k = logits.shape[-1]

    def total_nll(theta: Tensor) -> Tensor:
        scale, bias = theta[:k], theta[k:] - theta[k:].mean()
        return -(logits * scale + bias).log_softmax(-1).gather(-1, labels[:, None]).sum()

    information = torch.autograd.functional.hessian(total_nll, parameters)
    return torch.linalg.pinv(information).diagonal().sqrt()


def test_vector_scaling_recovers_the_scale_and_bias_of_the_labels() -> None:
    true_scale = torch.tensor([0.5, 1.0, 1.5, 0.8], dtype=torch.float64)
    true_bias = torch.tensor([0.4, -0.2, 0.0, -0.2], dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    logits = 2 * torch.randn(20_000, 4, generator=g, dtype=torch.float64)
    labels = _labels(logits, true_scale, true_bias, 1)
    scaled = vector_scale(IDENTITY, logits, labels, likelihood=bnn.Categorical(), rng=0)
    fitted = torch.cat([scaled.scale, scaled.bias])
    errors = _standard_errors(logits, labels, fitted)
    truth = torch.cat([true_scale, true_bias - true_bias.mean()])
    print(f"fitted {fitted.tolist()}, standard errors {errors.tolist()}")
    assert bool(((fitted - truth).abs() <= 5 * errors).all())
    assert scaled.nll_after < scaled.nll_before
    assert abs(float(scaled.bias.sum())) < 1e-9  # reported centred


def test_platt_scaling_of_a_bernoulli_logit() -> None:
    g = torch.Generator().manual_seed(2)
    logit = 2 * torch.randn(20_000, generator=g, dtype=torch.float64)
    labels = torch.bernoulli(torch.sigmoid(0.6 * logit - 0.3), generator=g)
    scaled = vector_scale(
        Fixed(lambda x: x.unsqueeze(0)), logit, labels, likelihood=bnn.Bernoulli(), rng=0
    )
    fitted = torch.cat([scaled.scale, scaled.bias])

    def total_nll(theta: Tensor) -> Tensor:
        return torch.nn.functional.binary_cross_entropy_with_logits(
            theta[0] * logit + theta[1], labels, reduction="sum"
        )

    errors = (
        torch.linalg.inv(torch.autograd.functional.hessian(total_nll, fitted)).diagonal().sqrt()
    )
    truth = torch.tensor([0.6, -0.3], dtype=torch.float64)
    assert bool(((fitted - truth).abs() <= 5 * errors).all())


def test_predictions_go_through_the_fitted_map() -> None:
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(500, 3, generator=g, dtype=torch.float64)
    labels = _labels(logits, torch.tensor([2.0, 1.0, 0.5]).double(), torch.zeros(3).double(), 4)
    scaled = vector_scale(IDENTITY, logits, labels, likelihood=bnn.Categorical(), rng=0)
    prediction = bnn.predict_with_uncertainty(scaled, logits[:10], likelihood=bnn.Categorical())
    expected = (logits[:10] * scaled.scale + scaled.bias).softmax(-1)
    torch.testing.assert_close(prediction.probs, expected)


def test_bad_input_is_refused() -> None:
    x = torch.randn(20, 3, dtype=torch.float64)
    with pytest.raises(TypeError, match="for regression use std_scale"):
        vector_scale(IDENTITY, x, x, likelihood=bnn.Gaussian(0.1))
    with pytest.raises(ValueError, match="vectors of one length"):
        VectorScaled(IDENTITY, torch.ones(3), torch.zeros(2))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="rows"):
        vector_scale(IDENTITY, x, torch.zeros(5, dtype=torch.long))
