"""Resumable training: a loop's whole state in one file, written after every epoch.

``bnn.fit(..., checkpoint=path)`` and ``bnn.infer.sgld/sghmc(..., checkpoint=path)`` save
everything their next epoch depends on — weights, optimiser state, RNG streams and generators,
schedule position (KL annealing, step-size cycles, the step and epoch counters), early-stopping
state and the history so far — atomically at the end of every epoch (a temporary file renamed
over the old one, so an interruption never leaves a broken checkpoint). Called again with the
same path, the loop continues from the saved epoch, so

    fit(model, data, epochs=5, checkpoint=path, rng=0)   # then, in a new process:
    fit(model, data, epochs=10, checkpoint=path, rng=0)

gives the bits of ``fit(model, data, epochs=10, rng=0)``. The file records the settings that
shape the run (batch size, learning rate, schedules, seed, ...), a fingerprint of the data and
of the model's and likelihood's parameter layout; resuming with different ones is refused with
the differences named (settings a file from an older bnn does not record are not compared).
Files hold tensors, numbers and strings only and load with
``torch.load(weights_only=True)``.

Example:
    >>> posterior, history = bnn.fit(net, (x, y), likelihood=bnn.Gaussian(0.1), epochs=100,
    ...                              checkpoint="run.pt", rng=0)   # rerun to resume
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from bnn._io import load_versioned, save_atomically

__all__ = ["Checkpoint", "data_fingerprint", "layout_fingerprint"]

FORMAT_VERSION = 1


UNSAVED_SEGMENT = 256
"""Steps per RNG-stream block of a loop that writes no checkpoint (entering a stream swaps every
global generator: more than a step of a small model costs). The numbers do not depend on it."""


class Checkpoint:
    """The checkpoint file of one training run.

    Args:
        path: the file (its folder must exist); a data-parallel rank ``r > 0`` of ``R`` uses
            ``<path>.rank<r>``.
        method: the loop writing it (``"fit"``, ``"sgld"``, ...); another method's file is refused.
        settings: numbers and strings that must be equal for a run to resume (the seed, batch
            size, learning rate, schedules, data size, ...).
        rank: this process's data-parallel rank.
    """

    def __init__(
        self, path: str | Path, *, method: str, settings: dict[str, Any], rank: int = 0
    ) -> None:
        if not isinstance(path, str | Path):
            raise TypeError(f"checkpoint must be a file path, got {type(path).__name__}.")
        target = Path(path)
        self.path = target if rank == 0 else target.with_name(f"{target.name}.rank{rank}")
        if not self.path.parent.is_dir():
            raise FileNotFoundError(
                f"checkpoint folder {self.path.parent} does not exist; create it before training."
            )
        if self.path.is_dir():
            raise IsADirectoryError(f"checkpoint {self.path} is a folder; give a file path.")
        self.method = method
        self.settings = dict(settings)

    def load(self) -> dict[str, Any] | None:
        """The saved state, or ``None`` when there is no file yet (a fresh run).

        Raises:
            ValueError: the file is not a checkpoint of this method, or was written with other
                settings (named).
        """
        if not self.path.exists():
            return None
        state = load_versioned(self.path, "checkpoint", FORMAT_VERSION)
        if state.get("method") != self.method:
            raise ValueError(
                f"{self.path} is a checkpoint of {state.get('method')!r}, not of "
                f"{self.method!r}; give this run another checkpoint path."
            )
        saved = state.get("settings", {})
        differences = [
            f"{key}: saved {saved.get(key)!r}, now {value!r}"
            for key, value in self.settings.items()
            if key in saved and not _same(saved.get(key), value)
        ]
        if differences:
            raise ValueError(
                f"{self.path} was written by a run with other settings ("
                + "; ".join(differences)
                + "); resume with the same settings, or delete the file to start afresh."
            )
        return state

    def save(self, state: dict[str, Any]) -> None:
        """Write ``state`` (tensors, numbers, strings, lists, dicts) atomically."""
        save_atomically(
            {
                "format": "bnn.checkpoint",
                "format_version": FORMAT_VERSION,
                "method": self.method,
                "settings": self.settings,
                **state,
            },
            self.path,
        )


def _same(saved: Any, now: Any) -> bool:
    if isinstance(saved, float) and isinstance(now, float) and math.isnan(saved):
        return math.isnan(now)
    return bool(saved == now)


SAMPLED_ITEMS = 64
"""Examples of a ``Dataset`` that is not a ``TensorDataset`` hashed into its fingerprint."""


def data_fingerprint(data: object) -> str:
    """A short digest of training data, so that a checkpoint refuses other data of one size.

    ``(x, y)`` tensors and a ``TensorDataset`` (also inside a ``DataLoader``) are hashed whole;
    another map-style ``Dataset`` by ``SAMPLED_ITEMS`` examples spread over it; an iterable
    dataset is not hashed (``"unhashed"``).
    """
    dataset = data.dataset if isinstance(data, torch.utils.data.DataLoader) else data
    digest = hashlib.sha256()
    if isinstance(dataset, tuple):
        tensors: list[Any] = list(dataset)
    elif isinstance(dataset, torch.utils.data.TensorDataset):
        tensors = list(dataset.tensors)
    elif isinstance(dataset, torch.utils.data.Dataset) and hasattr(dataset, "__len__"):
        size = len(dataset)
        step = max(size // SAMPLED_ITEMS, 1)
        tensors = [dataset[i] for i in range(0, size, step)][:SAMPLED_ITEMS]
    else:
        return "unhashed"
    _update(digest, tensors)
    return digest.hexdigest()[:16]


def _update(digest: Any, item: Any) -> None:
    if isinstance(item, Tensor):
        digest.update(f"{item.dtype}{tuple(item.shape)}".encode())
        digest.update(
            item.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
        )
    elif isinstance(item, tuple | list):
        for part in item:
            _update(digest, part)
    else:
        digest.update(repr(item).encode())


def layout_fingerprint(*modules: nn.Module) -> str:
    """``"<count> tensors, <numbers> numbers, layout <digest>"`` of the modules' state: the
    names, shapes and dtypes of their parameters and buffers, and which parameters train."""
    entries = []
    for index, module in enumerate(modules):
        trainable = {name for name, p in module.named_parameters() if p.requires_grad}
        for name, tensor in module.state_dict().items():
            entries.append(
                f"{index}.{name}:{tuple(tensor.shape)}:{tensor.dtype}:{name in trainable}"
            )
    numbers = sum(t.numel() for m in modules for t in m.state_dict().values())
    digest = hashlib.sha256("\n".join(entries).encode()).hexdigest()[:12]
    return f"{len(entries)} tensors, {numbers} numbers, layout {digest}"
