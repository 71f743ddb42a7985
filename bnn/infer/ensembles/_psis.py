"""Pareto-smoothed importance-sampling leave-one-out log predictive densities (PSIS-LOO).

``bnn.infer`` may not import ArviZ (only ``bnn.evaluate.diagnostics`` does), so stacking's
``method="loo"`` uses this small, vectorised implementation of PSIS (Vehtari, Gelman & Gabry
2017, "Practical Bayesian model evaluation using leave-one-out cross-validation and WAIC";
Vehtari et al. 2024, "Pareto smoothed importance sampling"), with the generalized-Pareto fit
of Zhang & Stephens (2009) and the weak prior on the shape of Vehtari et al. — the algorithm
``arviz.loo`` runs for one chain (relative efficiency 1). ``tests/infer/ensembles/test_stacking.py``
checks it against ``arviz.loo(..., pointwise=True)``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["psis_loo"]

_PRIOR_SHAPE_STRENGTH = 10.0  # weak prior on k centred at 0.5 (Vehtari et al. 2024)
_PRIOR_STRENGTH_HALF = _PRIOR_SHAPE_STRENGTH * 0.5
_PRIOR_SCALE = 3.0


def psis_loo(log_likelihood: Tensor) -> tuple[Tensor, Tensor]:
    """PSIS-LOO log predictive density of each datum, and the Pareto shape estimates.

    Args:
        log_likelihood: ``log p(y_i | θ_s)`` ``[S, N]`` for ``S`` posterior draws.

    Returns:
        ``(elpd_loo_i [N], pareto_k [N])`` in float64. ``k̂ > 0.7`` means the estimate of
        that datum is unreliable (too few draws or a posterior far from the leave-one-out
        one); with ``S`` so small that the tail has ≤ 4 draws no smoothing is done (``k̂ = inf``).
    """
    log_lik = log_likelihood.detach().to(torch.float64).T  # [N, S]
    s = log_lik.shape[1]
    log_ratios = -log_lik
    log_ratios = log_ratios - log_ratios.amax(-1, keepdim=True)
    tail_length = math.ceil(min(s / 5.0, 3 * math.sqrt(s)))
    pareto_k = torch.full(log_lik.shape[:1], math.inf, dtype=torch.float64)
    if tail_length > 4:
        ordered, order = log_ratios.sort(-1)
        floor = math.log(torch.finfo(torch.float64).tiny)
        cutoff = ordered[:, -tail_length - 1].clamp_min(floor).unsqueeze(-1)
        tail = ordered[:, -tail_length:]
        excess = tail.exp() - cutoff.exp()
        shape, scale = _generalized_pareto_fit(excess)
        probabilities = (torch.arange(tail_length, dtype=torch.float64) + 0.5) / tail_length
        quantiles = _generalized_pareto_quantile(probabilities, shape, scale)
        smoothed = torch.log(quantiles + cutoff.exp()).clamp_max(0.0)  # ≤ the largest raw ratio
        usable = torch.isfinite(shape) & (scale > 0) & (tail > cutoff).all(-1)
        ordered = torch.where(
            usable.unsqueeze(-1), torch.cat([ordered[:, :-tail_length], smoothed], -1), ordered
        )
        log_ratios = torch.empty_like(ordered).scatter_(-1, order, ordered)
        pareto_k = shape
    log_weights = log_ratios - torch.logsumexp(log_ratios, -1, keepdim=True)
    return torch.logsumexp(log_weights + log_lik, -1), pareto_k


def _generalized_pareto_fit(excess: Tensor) -> tuple[Tensor, Tensor]:
    """Zhang & Stephens (2009) posterior-mean fit of a GPD to sorted samples ``[N, M]``."""
    n = excess.shape[1]
    grid_size = 30 + int(math.sqrt(n))
    grid = 1 - torch.sqrt(grid_size / (torch.arange(1, grid_size + 1, dtype=torch.float64) - 0.5))
    quartile = excess[:, int(n / 4 + 0.5) - 1].unsqueeze(-1)
    theta = grid / (_PRIOR_SCALE * quartile) + 1 / excess[:, -1:]  # [N, grid]
    k = torch.log1p(-theta.unsqueeze(-1) * excess.unsqueeze(1)).mean(-1)
    profile = n * (torch.log(-theta / k) - k - 1)
    theta_mean = (profile.softmax(-1) * theta).sum(-1, keepdim=True)
    shape = torch.log1p(-theta_mean * excess).mean(-1)
    scale = -shape / theta_mean.squeeze(-1)
    shape = (n * shape + _PRIOR_STRENGTH_HALF) / (n + _PRIOR_SHAPE_STRENGTH)
    return shape, scale


def _generalized_pareto_quantile(probabilities: Tensor, shape: Tensor, scale: Tensor) -> Tensor:
    """GPD quantiles ``[N, M]`` at ``probabilities`` ``[M]`` for shapes/scales ``[N]``."""
    k = shape.unsqueeze(-1)
    tiny = k.abs() < torch.finfo(torch.float64).eps
    safe_k = torch.where(tiny, torch.ones_like(k), k)
    general = torch.expm1(-safe_k * torch.log1p(-probabilities)) / safe_k
    exponential = -torch.log1p(-probabilities).expand_as(general)
    return torch.where(tiny, exponential, general) * scale.unsqueeze(-1)
