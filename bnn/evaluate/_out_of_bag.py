"""Out-of-bag predictives: each calibration point's prediction from the models that did not
train on it — one fold model for CV+, the equal-weight mixture of several for
jackknife+-after-bootstrap.

A mixture of Gaussian-like predictives with means ``μ_k`` and stds ``σ_k`` has mean
``μ̃ = mean_k μ_k`` and variance ``mean_k (σ_k² + (μ_k − μ̃)²)``; both are summed over the
point's own models only (``torch.where``, so a diverged model in its bag cannot leak in), in
two passes (no ``E[μ²] − E[μ]²`` cancellation), in model order (the same bits in any chunk),
and in chunks of points that bound memory.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["draw_bags", "out_of_bag_at_own_points", "out_of_bag_predictive"]

_CHUNK_ELEMENTS = 2**22
"""Elements of the ``[points, K, N·...]`` block one chunk of `out_of_bag_predictive` holds."""


def out_of_bag_predictive(
    means: Tensor, stds: Tensor | None, out_of_bag: Tensor
) -> tuple[Tensor, Tensor | None]:
    """Each point's predictive at ``N`` inputs from the models that did not see it.

    Args:
        means: the ``K`` models' predictive means ``[K, N, ...]``.
        stds: their predictive stds ``[K, N, ...]`` (``None``: means only).
        out_of_bag: ``[n, K]`` (bool): the models each of ``n`` points was out of (at least
            one per point).

    Returns:
        ``(mean, std)``, each ``[n, N, ...]`` (``std`` ``None`` without ``stds``): the one
        model's own prediction where a point is out of one model (CV+, bit for bit), else
        the mixture of its models.

    Example:
        >>> mean, std = out_of_bag_predictive(means, stds, out_of_bag)  # [n, N, ...] each
    """
    counts = out_of_bag.sum(1)
    if bool((counts == 1).all()):
        chosen = out_of_bag.to(torch.long).argmax(1)
        return means[chosen], None if stds is None else stds[chosen]
    models, shape = means.shape[0], means.shape[1:]
    flat_means = means.reshape(models, -1)
    flat_stds = None if stds is None else stds.reshape(models, -1)
    chunk = max(1, _CHUNK_ELEMENTS // max(1, flat_means.numel()))
    centres, spreads = [], []
    for rows in torch.split(out_of_bag, chunk):
        centre, spread = _mixture(
            flat_means.expand(len(rows), *flat_means.shape),
            None if flat_stds is None else flat_stds.expand(len(rows), *flat_stds.shape),
            rows,
        )
        centres.append(centre)
        spreads.append(spread)
    mean = torch.cat(centres).reshape(-1, *shape)
    if stds is None:
        return mean, None
    return mean, torch.cat([s for s in spreads if s is not None]).reshape(-1, *shape)


def out_of_bag_at_own_points(
    means: Tensor, stds: Tensor | None, out_of_bag: Tensor
) -> tuple[Tensor, Tensor | None]:
    """Point ``i``'s out-of-bag predictive at its own input: ``[n, ...]`` each, from the
    models' predictives ``[K, n, ...]`` at the ``n`` points (``O(nK)``)."""
    n, shape = means.shape[1], means.shape[2:]
    per_point = means.movedim(0, 1).reshape(n, means.shape[0], -1)  # [n, K, ...]
    per_point_std = None if stds is None else stds.movedim(0, 1).reshape(per_point.shape)
    mean, std = _mixture(per_point, per_point_std, out_of_bag)
    return mean.reshape(n, *shape), None if std is None else std.reshape(n, *shape)


def _mixture(means: Tensor, stds: Tensor | None, mask: Tensor) -> tuple[Tensor, Tensor | None]:
    """Mean and std ``[c, M]`` of the equal mixture of the models ``mask`` ``[c, K]`` marks,
    from their means and stds ``[c, K, M]``."""
    chosen = mask[..., None]
    counts = mask.sum(1, keepdim=True).to(means)
    centre = _sum_over_models(torch.where(chosen, means, 0.0)) / counts
    if stds is None:
        return centre, None
    squares = stds**2 + (means - centre[:, None]) ** 2
    variance = _sum_over_models(torch.where(chosen, squares, 0.0)) / counts
    return centre, variance.sqrt()


def _sum_over_models(values: Tensor) -> Tensor:
    """``values.sum(1)`` of ``[c, K, M]``, added in model order: the same bits whatever ``c``
    and ``M`` (torch's reduction vectorises differently for other widths, so an interval
    would depend on the other inputs predicted with it)."""
    total = values[:, 0].clone()
    for k in range(1, values.shape[1]):
        total += values[:, k]
    return total


def draw_bags(
    n: int, count: int, size: int, replace: bool, generator: torch.Generator
) -> list[Tensor]:
    """``count`` bags of ``size`` indices of ``n`` points, with or without replacement, drawn
    in order from ``generator`` (what `jackknife_plus_after_bootstrap` trains on)."""
    if replace:
        return [torch.randint(n, (size,), generator=generator) for _ in range(count)]
    return [torch.randperm(n, generator=generator)[:size] for _ in range(count)]
