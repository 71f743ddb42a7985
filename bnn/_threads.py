"""Intra-op threads for training loops: one thread where more only add synchronisation.

A small network's step is a handful of tiny kernels; spreading each over all cores costs more
in OpenMP synchronisation than it saves, and beside another busy process the waiting threads
spin against it (measured on 2 cores: a 13-50-1 MLP's Adam step takes 0.13 ms with one thread
and 15–46 ms with two beside a busy neighbour). ``threads="auto"`` therefore trains models
whose work per step — parameters × batch rows — is below `SMALL_STEP_WORK` on one thread, and
leaves everything else alone: bigger models keep torch's setting, and so does any process
whose user chose a thread count (``torch.set_num_threads`` after importing bnn, or
``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS``). An integer pins the count for the loop; ``None``
changes nothing. The previous count is restored when the loop ends.

`SMALL_STEP_WORK` comes from ``benchmarks/threads.py`` (``docs/benchmarks.md``).
Floating-point sums depend on the thread count: a run reproduces bit for bit under the same
choice.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Literal

import torch
from torch import nn

__all__ = ["SMALL_STEP_WORK", "Threads", "check_threads", "training_threads"]

Threads = int | Literal["auto"] | None

SMALL_STEP_WORK = 2_000_000
"""Parameters × rows per step below which one thread is at least as fast as all (2 cores)."""

_STARTUP_THREADS = torch.get_num_threads()
_USER_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def check_threads(threads: object) -> None:
    """``"auto"``, ``None`` or a positive int; anything else raises ``ValueError``."""
    if threads is None or threads == "auto":
        return
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be 'auto', None or a positive int, got {threads!r}.")


def user_chose_threads() -> bool:
    """Whether the thread count is the user's: changed since bnn was imported, or set by an
    environment variable."""
    changed = torch.get_num_threads() != _STARTUP_THREADS
    return changed or any(os.environ.get(name) for name in _USER_VARIABLES)


def chosen_threads(threads: Threads, model: nn.Module, rows_per_step: int) -> int | None:
    """The count a loop should run with (``None``: leave torch's setting)."""
    check_threads(threads)
    if threads is None or isinstance(threads, int):
        return threads
    if user_chose_threads() or torch.get_num_threads() == 1:
        return None
    if any(p.device.type != "cpu" for p in model.parameters()):
        return None  # intra-op threads are the CPU's
    parameters = sum(p.numel() for p in model.parameters())
    return 1 if parameters * rows_per_step < SMALL_STEP_WORK else None


@contextlib.contextmanager
def training_threads(threads: Threads, model: nn.Module, rows_per_step: int) -> Iterator[None]:
    """Run the block with the thread count ``threads`` asks for; restore the previous one."""
    count = chosen_threads(threads, model, rows_per_step)
    if count is None or count == torch.get_num_threads():
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
