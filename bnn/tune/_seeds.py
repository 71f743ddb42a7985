"""One run of an objective under one seed: a failure is recorded, not raised."""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import Any

from torch import Tensor

from bnn.random.default import use_rng
from bnn.random.rng import RNG

__all__ = ["Objective", "one_seed", "record", "score_of"]

Objective = Callable[[dict[str, Any], RNG], float]
"""``objective(params, rng) -> float``: one configuration under one seed."""


def one_seed(objective: Objective, item: tuple[dict[str, Any], RNG]) -> tuple[float, str]:
    """``(value, "")`` or ``(nan, error)``: a failing seed is recorded, not raised."""
    params, child = item
    try:
        with use_rng(child):
            returned = objective(dict(params), child)
    except Exception as error:  # recorded per seed: the study goes on
        return math.nan, f"{type(error).__name__}: {error}"
    value = score_of(returned)
    if not math.isfinite(value):
        return math.nan, f"the objective returned {value}"
    return value, ""


def score_of(returned: object) -> float:
    """The objective's return value as a float; anything but a real number is a bug.

    Raises:
        TypeError: ``returned`` is a string, a bool, a tensor of more than one element or
            anything else that is not a real number (a wrong return is not a seed's failure:
            it would fail on every seed, so it stops the study at once).
    """
    if isinstance(returned, Tensor) and returned.numel() == 1 and not returned.is_complex():
        return float(returned.detach())
    if isinstance(returned, numbers.Real) and not isinstance(returned, bool):
        return float(returned)
    raise TypeError(
        f"the objective returned {returned!r} ({type(returned).__name__}); it must return one "
        "real number (a float, an int or a one-element tensor), e.g. float(score)."
    )


def record(values: list[float], errors: list[str], value: float, error: str) -> None:
    if error:
        errors.append(error)
    else:
        values.append(value)
