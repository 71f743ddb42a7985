"""Argument checks shared by the public functions (clear ``ValueError`` messages)."""

from __future__ import annotations

import math

__all__ = ["check_int", "check_positive"]


def check_int(name: str, value: object, minimum: int = 1) -> int:
    """``value`` as an int ``>= minimum``; bools and non-integers are rejected."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        wanted = "a positive int" if minimum == 1 else f"an int >= {minimum}"
        raise ValueError(f"{name} must be {wanted}, got {value!r}.")
    return value


def check_positive(name: str, value: object) -> float:
    """``value`` as a finite float ``> 0``."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or value <= 0
    ):
        raise ValueError(f"{name} must be a positive number, got {value!r}.")
    return float(value)
