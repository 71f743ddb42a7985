"""One run of an objective under one seed: a failure is recorded, not raised."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from bnn.random.default import use_rng
from bnn.random.rng import RNG

__all__ = ["Objective", "one_seed", "record"]

Objective = Callable[[dict[str, Any], RNG], float]
"""``objective(params, rng) -> float``: one configuration under one seed."""


def one_seed(objective: Objective, item: tuple[dict[str, Any], RNG]) -> tuple[float, str]:
    """``(value, "")`` or ``(nan, error)``: a failing seed is recorded, not raised."""
    params, child = item
    try:
        with use_rng(child):
            value = float(objective(dict(params), child))
    except Exception as error:  # recorded per seed: the study goes on
        return math.nan, f"{type(error).__name__}: {error}"
    if not math.isfinite(value):
        return math.nan, f"the objective returned {value}"
    return value, ""


def record(values: list[float], errors: list[str], value: float, error: str) -> None:
    if error:
        errors.append(error)
    else:
        values.append(value)
