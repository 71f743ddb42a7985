"""Statistics of per-seed results: mean, spread, intervals, the seed-noise share."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from bnn.random.sweep import student_t_quantile, summarise_values

__all__ = ["average", "paired_interval", "seed_noise_share", "seed_summary"]


def average(values: Sequence[float]) -> float:
    return math.fsum(values) / len(values)


def seed_summary(values: Sequence[float]) -> dict[str, float]:
    """Mean, std, standard error, 95 % interval of the mean and ``n`` (NaN when empty)."""
    keys = ("mean", "std", "sem", "ci95_low", "ci95_high")
    if not values:
        return {**dict.fromkeys(keys, math.nan), "n": 0}
    summary = summarise_values(values)
    return {**{key: summary[key] for key in keys}, "n": summary["n"]}


def seed_noise_share(rows: list[dict[str, Any]]) -> float:
    """Within-configuration share of the variance of all per-seed values."""
    groups = [row["values"] for row in rows if len(row["values"]) > 1]
    everything = [v for values in groups for v in values]
    if len(groups) < 2 or len(everything) < 3:
        return math.nan
    grand = average(everything)
    total = math.fsum((v - grand) ** 2 for v in everything)
    within = math.fsum((v - average(values)) ** 2 for values in groups for v in values)
    return within / total if total > 0 else math.nan


def paired_interval(
    first: Sequence[float], second: Sequence[float], level: float
) -> tuple[float, float]:
    """Student-t interval of the mean of ``first − second`` over their common seeds."""
    differences = [a - b for a, b in zip(first, second, strict=False)]
    n = len(differences)
    if n < 2:
        return -math.inf, math.inf
    summary = seed_summary(differences)
    half = student_t_quantile(0.5 + level / 2, n - 1) * summary["sem"]
    return summary["mean"] - half, summary["mean"] + half
