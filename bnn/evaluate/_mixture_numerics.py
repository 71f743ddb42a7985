"""Float64 numerics of a Gaussian mixture ``Σ_c w_c N(loc_c, scale_c²)`` for isotonic
recalibration: its CDF with exact lower tails (``erfc``), quantiles at levels as extreme as
``1e-100``, and partial moments. An over-confident model's calibration targets lie far in its
tails, where float32 (and ``0.5 (1 + erf)``) round the CDF to 0 or 1.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from bnn.likelihoods import RegressionPrediction, align_targets

__all__ = ["mixture_quantiles", "partial_moments", "pit_values"]

_GRID = 256  # points of the per-input CDF table the quantiles start from
_BRACKET = 40.0  # stds around the components bracketing every quantile (Φ(−40) ≈ 4e-350)
_NEWTON_STEPS = 6  # from the table's interpolation: quadratic convergence, far below 1e-12


def pit_values(prediction: RegressionPrediction, y: Tensor) -> Tensor:
    """The base mixture's CDF ``F(y)`` ``[N, ...]`` in float64, its lower tail through ``erfc``
    (exact down to ~1e-300, where ``0.5 (1 + erf)`` stops at ~1e-16 and float32 at ~6e-8): the
    PIT values of an over-confident model lie far in its tails, and ``R`` must resolve them."""
    loc, scale, weights = _float64_mixture(
        prediction.loc, prediction.scale, prediction.component_weights
    )
    y = align_targets(y, loc.shape[1:]).to(loc)
    noisy = scale > 0
    safe = torch.where(noisy, scale, torch.ones_like(scale))
    normal = 0.5 * torch.special.erfc((loc - y) / (safe * math.sqrt(2.0)))
    step = (y >= loc).to(loc)
    return (weights * torch.where(noisy, normal, step)).sum(0)


def _float64_mixture(loc: Tensor, scale: Tensor, weights: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    loc = loc.detach().to(torch.float64)
    return loc, scale.detach().to(loc).expand_as(loc), weights.detach().to(loc).expand_as(loc)


def mixture_quantiles(loc: Tensor, scale: Tensor, weights: Tensor, levels: Tensor) -> Tensor:
    """Quantiles ``[L, N, ...]`` (float64) of the mixture ``Σ_c w_c N(loc_c, scale_c²)`` at
    ``L`` levels.

    In float64 (a level may be ``1e-100`` or ``1 − 1e-15``: an over-confident model's
    recalibrated tails). The CDF is tabulated once per input on ``_GRID`` points over the
    ±``_BRACKET``-std bracket; each level starts from the linear interpolation of that table
    and takes ``_NEWTON_STEPS`` Newton steps kept inside its grid cell (bisection where a step
    would leave it). Noise-free mixtures (steps, no density) use
    ``RegressionPrediction.quantile``'s bisection.
    """
    loc, scale, weights = _float64_mixture(loc, scale, weights)
    if not bool((scale > 0).all()):
        base = RegressionPrediction(samples=loc, loc=loc, scale=scale, weights=weights)
        return torch.stack([base.quantile(float(level)) for level in levels])
    low = (loc - _BRACKET * scale).amin(0)
    high = (loc + _BRACKET * scale).amax(0)
    steps = torch.linspace(0, 1, _GRID, dtype=loc.dtype, device=loc.device)
    grid = low + (high - low) * steps.reshape(-1, *[1] * low.dim())  # [M, N, ...]
    table = torch.cat([_mixture_cdf(loc, scale, weights, part) for part in torch.split(grid, 16)])
    block = max(1, 2**22 // max(loc.numel(), 1))
    parts = []
    for chunk in torch.split(levels.to(loc), block):
        target = chunk.reshape(-1, *[1] * low.dim())  # [L, 1, ...]
        cell = (table.unsqueeze(0) < target.unsqueeze(1)).sum(1).clamp(1, _GRID - 1)  # [L, N]
        lower, upper = grid.gather(0, cell - 1), grid.gather(0, cell)
        f_lower, f_upper = table.gather(0, cell - 1), table.gather(0, cell)
        span = (f_upper - f_lower).clamp_min(torch.finfo(loc.dtype).tiny)
        point = lower + (target - f_lower) / span * (upper - lower)
        for _ in range(_NEWTON_STEPS):
            cdf, density = _mixture_cdf(loc, scale, weights, point, with_density=True)
            newton = point - (cdf - target) / density.clamp_min(torch.finfo(loc.dtype).tiny)
            lower = torch.where(cdf < target, point, lower)
            upper = torch.where(cdf < target, upper, point)
            inside = (newton >= lower) & (newton <= upper)
            point = torch.where(inside, newton, 0.5 * (lower + upper))
        parts.append(point)
    return torch.cat(parts)


def _mixture_cdf(
    loc: Tensor, scale: Tensor, weights: Tensor, points: Tensor, *, with_density: bool = False
) -> Any:
    """The mixture's CDF at ``points`` ``[L, N, ...]`` (all scales positive), and with
    ``with_density`` its density there."""
    z = (points.unsqueeze(1) - loc) / scale  # [L, C, N, ...]
    cdf = (weights * 0.5 * torch.special.erfc(-z / math.sqrt(2.0))).sum(1)
    if not with_density:
        return cdf
    density = (weights * torch.exp(-0.5 * z**2) / (scale * math.sqrt(2 * math.pi))).sum(1)
    return cdf, density


def partial_moments(
    loc: Tensor, scale: Tensor, weights: Tensor, point: Tensor
) -> tuple[Tensor, Tensor]:
    """``∫_{-∞}^t y dF`` and ``∫_{-∞}^t y² dF`` of the mixture at ``t = point`` ``[N, ...]``
    (float64, the lower tail through ``erfc``)."""
    loc, scale, weights = _float64_mixture(loc, scale, weights)
    point = point.to(loc)
    noisy = scale > 0
    safe = torch.where(noisy, scale, torch.ones_like(scale))
    z = (point - loc) / safe
    below = 0.5 * torch.special.erfc(-z / math.sqrt(2.0))
    density = torch.exp(-0.5 * z**2) / math.sqrt(2 * math.pi)
    step = (point >= loc).to(loc)
    first = torch.where(noisy, loc * below - scale * density, loc * step)
    second = torch.where(
        noisy, (loc**2 + scale**2) * below - scale * (loc + point) * density, loc**2 * step
    )
    return (weights * first).sum(0), (weights * second).sum(0)
