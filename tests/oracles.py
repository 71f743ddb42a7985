"""Closed-form answers that inference is tested against."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn


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


def sgld_stationary_covariance(posterior: LinearGaussianPosterior, step: float) -> Tensor:
    """Exact stationary covariance of full-batch SGLD ``w ← w - (ε/2)Λ(w - μ) + √ε ξ``.

    In the eigenbasis of ``Λ`` each coordinate is an AR(1) with coefficient ``a = 1 - ελ/2`` and
    noise variance ``ε``: stationary variance ``ε / (1 - a²)`` (→ ``1/λ`` as ``ε → 0``).
    """
    eigenvalues, basis = torch.linalg.eigh(posterior.precision)
    a = 1 - step * eigenvalues / 2
    return basis @ torch.diag(step / (1 - a**2)) @ basis.T


def sghmc_stationary_covariance(
    posterior: LinearGaussianPosterior, step: float, friction: float
) -> Tensor:
    """Exact stationary covariance of full-batch SGHMC ``v ← (1-α)v - εΛ(w-μ) + ξ``, ``w ← w + v``.

    Per eigen-direction the state ``(w, v)`` follows ``s' = M s + (1, 1)ᵀ ξ`` with
    ``M = [[1 - ελ, 1 - α], [-ελ, 1 - α]]`` and ``Var ξ = 2αε``; the discrete Lyapunov equation
    ``Σ = M Σ Mᵀ + Q`` is solved exactly by vectorisation.
    """
    eigenvalues, basis = torch.linalg.eigh(posterior.precision)
    variances = []
    for lam in eigenvalues.tolist():
        m = torch.tensor(
            [[1 - step * lam, 1 - friction], [-step * lam, 1 - friction]], dtype=torch.float64
        )
        q = 2 * friction * step * torch.ones(2, 2, dtype=torch.float64)
        sigma = torch.linalg.solve(
            torch.eye(4, dtype=torch.float64) - torch.kron(m, m), q.reshape(-1)
        )
        variances.append(sigma.reshape(2, 2)[0, 0])
    return basis @ torch.diag(torch.stack(variances)) @ basis.T


def batch_means_mcse(draws: Tensor, batches: int = 20) -> Tensor:
    """Monte Carlo standard error of the mean of autocorrelated draws ``[T, ...]`` (batch means)."""
    usable = draws.shape[0] - draws.shape[0] % batches
    means = draws[:usable].reshape(batches, -1, *draws.shape[1:]).mean(1)
    return means.std(0) / batches**0.5


def split_rhat(chains: Tensor) -> Tensor:
    """Split R-hat (Gelman et al., BDA3 §11.4) of ``[chain, draw, ...]`` draws."""
    half = chains.shape[1] // 2
    split = torch.cat([chains[:, :half], chains[:, half : 2 * half]])
    within = split.var(1).mean(0)
    between = half * split.mean(1).var(0)
    pooled = (half - 1) / half * within + between / half
    return (pooled / within).sqrt()


def std_mcse(draws: Tensor, batches: int = 20) -> Tensor:
    """Monte Carlo standard error of the sample std over dimension 0 of ``draws [S, ...]``.

    The variance is the mean of the squared deviations, whose standard error is estimated by
    batch means (valid for independent and for autocorrelated draws in draw order); the delta
    method gives ``se(s) = se(s²) / (2 s)``.
    """
    squared = (draws - draws.mean(0)) ** 2
    return batch_means_mcse(squared, batches) / (2 * draws.std(0, unbiased=False))


def bootstrap_se(
    samples: Tensor, statistic: Callable[[Tensor], Tensor], resamples: int = 400, seed: int = 0
) -> Tensor:
    """Bootstrap standard error of ``statistic(samples)`` over independent draws (dim 0).

    Efron & Tibshirani (1993): the sd of the statistic over resamples with replacement.
    """
    generator = torch.Generator().manual_seed(seed)
    count = samples.shape[0]
    values = torch.stack(
        [
            statistic(samples[torch.randint(0, count, (count,), generator=generator)])
            for _ in range(resamples)
        ]
    )
    return values.std(0)


def clearly_larger(
    high: Tensor, high_se: Tensor, low: Tensor, low_se: Tensor, k: float = 5.0
) -> bool:
    """Whether ``high`` exceeds ``low`` by more than ``k`` standard errors of their difference."""
    return bool(high - low > k * (high_se**2 + low_se**2).sqrt())


def blr_problem(
    n: int, d: int, noise: float, seed: int = 0
) -> tuple[Tensor, Tensor, LinearGaussianPosterior, nn.Linear]:
    """Bayesian linear regression for the samplers: ``x [n, d]``, ``y [n, 1]``, its exact
    posterior (prior ``N(0, I)``) and a bias-free float64 linear layer to sample."""
    x, y, _ = linear_regression_data(n, d, noise, seed=seed)
    posterior = linear_gaussian_posterior(x, y, noise, 1.0)
    return x, y.unsqueeze(-1), posterior, nn.Linear(d, 1, bias=False).double()
