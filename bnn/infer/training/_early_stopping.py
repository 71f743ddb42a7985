"""Early stopping on a validation metric, with the best weights restored."""

from __future__ import annotations

import copy
import math
from typing import Any

from torch import nn

__all__ = ["EarlyStopping"]


class EarlyStopping:
    """Track a validation metric (lower is better) and keep the best modules' weights.

    Args:
        patience: stop after this many evaluations without improvement (``None``: never stop,
            but still remember the best weights).
        min_delta: an improvement must exceed this amount.

    Example:
        >>> stopper = EarlyStopping(patience=10)
        >>> for epoch in range(epochs):
        ...     if stopper.update(val_nll, model): break
        >>> stopper.restore(model)
    """

    def __init__(self, patience: int | None = 10, min_delta: float = 0.0) -> None:
        if patience is not None and (
            isinstance(patience, bool) or not isinstance(patience, int) or patience < 1
        ):
            raise ValueError(f"patience must be a positive int or None, got {patience!r}.")
        if not min_delta >= 0:
            raise ValueError(f"min_delta must be >= 0, got {min_delta!r}.")
        self.patience = patience
        self.min_delta = float(min_delta)
        self.best = math.inf
        self.best_step: int | None = None
        self._step = -1
        self._since_best = 0
        self._best_states: list[dict[str, Any]] = []

    def update(self, value: float, *modules: nn.Module) -> bool:
        """Record ``value``; remember ``modules``' weights if it is the best. True = stop now."""
        self._step += 1
        if math.isfinite(value) and value < self.best - self.min_delta:
            self.best, self.best_step, self._since_best = value, self._step, 0
            self._best_states = [copy.deepcopy(m.state_dict()) for m in modules]
            return False
        self._since_best += 1
        return self.patience is not None and self._since_best >= self.patience

    def restore(self, *modules: nn.Module) -> None:
        """Load the best weights back into ``modules`` (same order as in ``update``)."""
        if not self._best_states:
            return
        for module, state in zip(modules, self._best_states, strict=True):
            module.load_state_dict(state)

    def state_dict(self) -> dict[str, Any]:
        """Counters, best value and best weights (tensors and numbers: checkpointable)."""
        return {
            "best": self.best,
            "best_step": self.best_step,
            "step": self._step,
            "since_best": self._since_best,
            "best_states": self._best_states,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a ``state_dict``."""
        self.best = float(state["best"])
        self.best_step = state["best_step"]
        self._step = int(state["step"])
        self._since_best = int(state["since_best"])
        self._best_states = list(state["best_states"])
