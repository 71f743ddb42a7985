"""The process-wide generators: Python ``random``, NumPy's global generator, torch (CPU, CUDA).

Pyro draws from these too. ``bnn.RNG`` streams swap them in and out with
``snapshot`` / ``restore``; ``seed_worker`` seeds them in ``DataLoader`` workers.

They belong to the process, not to a thread, so every swap happens under ``GLOBAL_STATE_LOCK``
(re-entrant): a stream block, or a prediction's temporary switch of a model to eval mode, in
one thread runs while the same kind of block in another thread waits.
"""

from __future__ import annotations

import contextlib
import random
import threading
from typing import Any

import numpy as np
import torch

__all__ = ["GLOBAL_STATE_LOCK", "python_state", "restore", "seed_all", "seed_worker", "snapshot"]


class _ProcessLock(contextlib.ContextDecorator):
    """A re-entrant lock usable as ``with LOCK:`` and as a ``@LOCK`` decorator."""

    def __init__(self) -> None:
        self._lock = threading.RLock()

    def __enter__(self) -> _ProcessLock:
        self._lock.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self._lock.release()


GLOBAL_STATE_LOCK = _ProcessLock()
"""Held while a thread has swapped process-wide state (generators, a model's train/eval flags,
hooks a posterior puts on a model for one call)."""


def snapshot() -> dict[str, Any]:
    """Snapshot of Python, NumPy (legacy global) and torch (CPU + CUDA) generator states."""
    kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore(state: dict[str, Any]) -> None:
    random.setstate(python_state(state["python"]))
    numpy_state = state["numpy"]
    np.random.set_state(
        (
            numpy_state["kind"],
            numpy_state["keys"].numpy().astype(np.uint32),
            numpy_state["pos"],
            numpy_state["has_gauss"],
            numpy_state["cached_gaussian"],
        )
    )
    torch.set_rng_state(state["torch"])
    if torch.cuda.is_available() and "cuda" in state:
        torch.cuda.set_rng_state_all(state["cuda"])


def python_state(state: Any) -> tuple[Any, ...]:
    # torch.load returns lists/tuples as saved; random.setstate needs (int, tuple, None|float).
    version, internal, gauss = state
    return (version, tuple(internal), gauss)


def seed_all(seed: int) -> None:
    """Seed Python, NumPy, torch (all devices) and hence Pyro, exactly as ``pyro.set_rng_seed``."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


def seed_worker(worker_id: int) -> None:
    """``DataLoader`` ``worker_init_fn``: seed NumPy and ``random`` from the worker's torch seed.

    PyTorch gives each worker the torch seed ``base_seed + worker_id`` (``base_seed`` drawn from
    the loader's generator); this extends it to the other libraries augmentation code uses.
    """
    del worker_id  # already folded into torch.initial_seed() by PyTorch
    worker_seed = torch.initial_seed() % 2**32
    random.seed(worker_seed)
    np.random.seed(worker_seed)
