"""Argument checks shared by the public functions (clear ``ValueError`` messages)."""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["check_finite_parameters", "check_int", "check_positive"]


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


def check_finite_parameters(module: nn.Module, method: str) -> None:
    """Refuse a network whose weights hold NaN or inf before a method builds on them.

    Raises:
        ValueError: naming the first parameters with non-finite entries and what to do.
    """
    bad = [
        f"{name} ({int((~torch.isfinite(p)).sum())} of {p.numel()})"
        for name, p in module.named_parameters()
        if p.is_floating_point() and not bool(torch.isfinite(p).all())
    ]
    if bad:
        raise ValueError(
            f"{method} needs finite weights, but the network's parameters hold NaN or inf: "
            f"{', '.join(bad[:3])}{' ...' if len(bad) > 3 else ''}. Its training diverged "
            "before this call: retrain it (a lower learning rate, standardised data) or load "
            "weights saved before the divergence."
        )
