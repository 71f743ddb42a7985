"""The search space of `bnn.tune.tune`: real, integer and categorical hyperparameters."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import optuna

__all__ = ["Categorical", "Float", "Int", "Space", "check_space", "suggest"]


@dataclass(frozen=True)
class Float:
    """A real hyperparameter in ``[low, high]`` (``log=True``: sampled on a log scale)."""

    low: float
    high: float
    log: bool = False

    def __post_init__(self) -> None:
        _check_range(self.low, self.high, self.log)


@dataclass(frozen=True)
class Int:
    """An integer hyperparameter in ``[low, high]`` (both included)."""

    low: int
    high: int
    log: bool = False

    def __post_init__(self) -> None:
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (self.low, self.high)):
            raise TypeError(f"Int bounds must be ints, got {self.low!r} and {self.high!r}.")
        _check_range(self.low, self.high, self.log)


@dataclass(frozen=True)
class Categorical:
    """One of ``choices`` (numbers, strings, booleans or ``None``)."""

    choices: tuple[Any, ...]

    def __post_init__(self) -> None:
        if len(self.choices) == 0:
            raise ValueError("Categorical needs at least one choice.")


Space = Mapping[str, Float | Int | Categorical] | Callable[["optuna.Trial"], dict[str, Any]]


def suggest(trial: optuna.Trial, space: Space) -> dict[str, Any]:
    if callable(space):
        params = space(trial)
        if not isinstance(params, dict):
            raise TypeError(f"space(trial) must return a dict, got {type(params).__name__}.")
        return params
    chosen: dict[str, Any] = {}
    for name, spec in space.items():
        if isinstance(spec, Float):
            chosen[name] = trial.suggest_float(name, spec.low, spec.high, log=spec.log)
        elif isinstance(spec, Int):
            chosen[name] = trial.suggest_int(name, spec.low, spec.high, log=spec.log)
        else:
            chosen[name] = trial.suggest_categorical(name, list(spec.choices))
    return chosen


def _check_range(low: float, high: float, log: bool) -> None:
    for value in (low, high):
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
        ):
            raise TypeError(f"range bounds must be finite numbers, got {low!r} and {high!r}.")
    if not low < high:
        raise ValueError(f"empty range [{low}, {high}]: low must be smaller than high.")
    if log and low <= 0:
        raise ValueError(f"a log-scale range needs low > 0, got {low}.")


def check_space(space: object) -> None:
    """A non-empty ``{name: Float | Int | Categorical}`` or a function ``trial -> params``."""
    if not callable(space) and (not isinstance(space, Mapping) or not space):
        raise ValueError(
            "space must be a non-empty {name: Float | Int | Categorical} or a function."
        )
    if isinstance(space, Mapping):
        for name, spec in space.items():
            if not isinstance(spec, Float | Int | Categorical):
                raise TypeError(
                    f"space[{name!r}] must be bnn.tune.Float, Int or Categorical, got "
                    f"{type(spec).__name__}."
                )
