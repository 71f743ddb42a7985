"""The state of `bnn.infer.svi`'s loop: the mini-batch order, the number of steps, and the
checkpoint snapshot a resumed run restores.
"""

from __future__ import annotations

from typing import Any

import pyro
import torch
from pyro import poutine
from torch import Tensor

from bnn.infer.history import History
from bnn.random.rng import RNG

__all__ = ["BatchOrder", "restore", "schedule", "snapshot"]


def snapshot(
    step: int, optim: Any, generator: RNG, order: BatchOrder, history: History
) -> dict[str, Any]:
    """The guide's unconstrained parameters and everything the next step depends on."""
    unconstrained = pyro.get_param_store().get_state()["params"]
    return {
        "step": step,
        "params": {name: value.detach().clone() for name, value in unconstrained.items()},
        "optim": optim.get_state(),
        "rng": generator.state_dict(),
        "order": order.state_dict(),
        "metrics": history.metrics,
    }


def restore(
    saved: dict[str, Any],
    guide_fn: Any,
    example: tuple[Tensor, Tensor, Tensor],
    optim: Any,
    generator: RNG,
    order: BatchOrder,
) -> int:
    """Rebuild the guide's parameters from a ``snapshot``; returns the next step."""
    with RNG(0).stream("guide setup"), poutine.block():  # creates the parameters; no svi draws
        guide_fn(*example)
    store = pyro.get_param_store()
    missing = set(saved["params"]) - set(store.keys())
    if missing:
        raise ValueError(
            f"the checkpoint holds guide parameters {sorted(missing)} this guide does not "
            "have; resume with the same model and guide."
        )
    current = store.get_state()
    current["params"] = current["params"] | {
        name: value.to(current["params"][name].device).clone().requires_grad_(True)
        for name, value in saved["params"].items()
    }
    store.set_state(current)
    optim.set_state(saved["optim"])
    generator.load_state_dict(saved["rng"])
    order.load_state_dict(saved["order"])
    return int(saved["step"])


def schedule(
    steps: int | None, epochs: int | None, batch_size: int | None, n: int
) -> tuple[int, int]:
    """``(total steps, batch size)`` from ``steps`` or ``epochs`` (default 100 epochs)."""
    if steps is not None and epochs is not None:
        raise ValueError("give steps or epochs, not both.")
    batch = n if batch_size is None else batch_size
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}.")
    batch = min(batch, n)
    per_epoch = -(-n // batch)
    if steps is None:
        epochs = 100 if epochs is None else epochs
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
            raise ValueError(f"epochs must be a positive int, got {epochs!r}.")
        return epochs * per_epoch, batch
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}.")
    return steps, batch


class BatchOrder:
    """``(epoch, indices)`` of each mini-batch (the last one of an epoch may be smaller); a new
    permutation from generator ``"data"`` per epoch; checkpointable."""

    def __init__(self, n: int, batch: int, rng: RNG) -> None:
        self.n, self.batch = n, batch
        self.generator = rng.torch_generator("data")
        self.epoch = -1
        self.order: Tensor | None = None
        self.position = n

    def next(self) -> tuple[int, Tensor]:
        if self.position >= self.n:
            full = self.batch >= self.n
            self.order = (
                torch.arange(self.n) if full else torch.randperm(self.n, generator=self.generator)
            )
            self.epoch, self.position = self.epoch + 1, 0
        assert self.order is not None
        index = self.order[self.position : self.position + self.batch]
        self.position += self.batch
        return self.epoch, index

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "order": self.order, "position": self.position}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.order = int(state["epoch"]), state["order"]
        self.position = int(state["position"])
