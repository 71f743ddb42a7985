"""Closed-form answers that inference is tested against."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class LinearGaussianPosterior:
    """Exact posterior of ``y = X w + ε``, ``ε ~ N(0, noise²)``, prior ``w ~ N(0, prior_std² I)``.

    ``precision = I / prior_std² + XᵀX / noise²`` and ``mean = precision⁻¹ Xᵀy / noise²``
    (Bishop 2006, §3.3). The mean-field Gaussian VI optimum has the same mean and marginal
    stds ``1 / sqrt(diag(precision))`` (Bishop 2006, §10.1.2).
    """

    mean: Tensor
    covariance: Tensor
    precision: Tensor

    @property
    def mean_field_std(self) -> Tensor:
        return self.precision.diagonal().rsqrt()


def linear_gaussian_posterior(
    x: Tensor, y: Tensor, noise: float, prior_std: float
) -> LinearGaussianPosterior:
    d = x.shape[1]
    precision = torch.eye(d, dtype=x.dtype) / prior_std**2 + x.T @ x / noise**2
    covariance = torch.linalg.inv(precision)
    mean = covariance @ (x.T @ y) / noise**2
    return LinearGaussianPosterior(mean=mean, covariance=covariance, precision=precision)


def linear_regression_data(
    n: int, d: int, noise: float, seed: int
) -> tuple[Tensor, Tensor, Tensor]:
    """Inputs ``[n, d]``, targets ``[n]`` and the true weights ``[d]`` (float64)."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=generator, dtype=torch.float64)
    w = torch.randn(d, generator=generator, dtype=torch.float64)
    y = x @ w + noise * torch.randn(n, generator=generator, dtype=torch.float64)
    return x, y, w
