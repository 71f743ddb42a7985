"""The KL divergence a training forward pass computed, kept for the loss that follows.

A Bayesian parameter's training forward computes ``softplus(ρ)`` and, for a ``Normal`` prior,
the closed-form KL in the same pass (``bnn.nn.priors``). `PendingKL` holds that KL until the
next ``kl()`` call takes it — but only while the weights are unchanged (version counters and
storage pointers) and no backward pass has gone through that forward; copies and pickles of a
module never carry one.
"""

from __future__ import annotations

import weakref
from typing import Any

import torch
from torch import Tensor
from torch._C._functorch import maybe_current_level

__all__ = ["PendingKL", "records_training_graph"]


class PendingKL:
    """The KL of one training forward pass, valid until a backward pass goes through it."""

    __slots__ = ("__weakref__", "fingerprint", "kl")

    def __init__(self, kl: Tensor, fingerprint: tuple[int, ...]) -> None:
        self.kl: Tensor | None = kl
        self.fingerprint = fingerprint

    @classmethod
    def keep(cls, kl: Tensor, scale: Tensor, *weights: Tensor) -> PendingKL:
        """Keep ``kl`` for ``weights``; a backward pass through ``scale`` releases it."""
        pending = cls(kl, _fingerprint(*weights))
        reference = weakref.ref(pending)

        def release(_grad: Tensor) -> None:
            kept = reference()
            if kept is not None:
                kept.kl = None

        scale.register_hook(release)  # type: ignore[no-untyped-call]
        return pending

    def take(self, *weights: Tensor) -> Tensor | None:
        """The kept KL if it still belongs to ``weights`` and autograd records, else ``None``."""
        if self.kl is None or not torch.is_grad_enabled():
            return None
        return self.kl if self.fingerprint == _fingerprint(*weights) else None

    def __deepcopy__(self, memo: dict[int, Any]) -> None:
        return None

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(None), ())


def _fingerprint(*tensors: Tensor) -> tuple[int, ...]:
    """Changes whenever a tensor is modified in place or given new storage (``.data = ...``)."""
    return tuple(value for t in tensors for value in (t._version, t.data_ptr()))


def records_training_graph(*parameters: Tensor) -> bool:
    """Whether autograd records this pass outside ``torch.func`` transforms and compilation."""
    return (
        torch.is_grad_enabled()
        and any(p.requires_grad for p in parameters)
        and maybe_current_level() is None
        and not torch.compiler.is_compiling()
    )
