"""Options of `bnn.fit`: the KL weight schedule and the validation data for early stopping."""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import Tensor

from bnn._checks import check_int

__all__ = ["KLSchedule", "Validation"]


@dataclass(frozen=True)
class KLSchedule:
    """The weight ``β`` of the KL term: ramps linearly from 0 to ``weight`` over the first
    ``annealing_epochs`` (every step), then stays at ``weight`` (1 = the ELBO; < 1 tempers).
    """

    weight: float = 1.0
    annealing_epochs: int = 0

    def __post_init__(self) -> None:
        weight = self.weight
        if isinstance(weight, bool) or not isinstance(weight, int | float):
            raise ValueError(f"kl weight must be a non-negative number, got {weight!r}.")
        if not math.isfinite(weight) or weight < 0:
            raise ValueError(f"kl weight must be a non-negative number, got {weight!r}.")
        check_int("kl annealing_epochs", self.annealing_epochs, minimum=0)

    def beta(self, step: int, steps_per_epoch: int) -> float:
        """``β`` at optimiser step ``step`` (0-based)."""
        annealing_steps = self.annealing_epochs * steps_per_epoch
        if not annealing_steps:
            return self.weight
        return self.weight * min(1.0, (step + 1) / annealing_steps)


@dataclass(frozen=True)
class Validation:
    """Held-out data for early stopping on the validation negative log predictive density.

    Attributes:
        x: inputs ``[M, ...]``.
        y: targets ``[M, ...]``.
        patience: epochs without improvement before stopping (``None``: train every epoch,
            then restore the best one).
        num_samples: function samples of the validation predictive.
    """

    x: Tensor
    y: Tensor
    patience: int | None = None
    num_samples: int = 20

    def __post_init__(self) -> None:
        if not isinstance(self.x, Tensor) or not isinstance(self.y, Tensor):
            raise TypeError("Validation needs x and y tensors.")
        if self.x.shape[0] == 0 or self.x.shape[0] != self.y.shape[0]:
            raise ValueError(
                f"validation x has {self.x.shape[0]} rows and y {self.y.shape[0]}; they must "
                "match and be non-empty."
            )
        check_int("validation num_samples", self.num_samples)
