"""Deterministic-algorithm mode: the same seed gives the same numbers on GPU too.

Seeding fixes the random numbers; it does not fix the order of floating-point reductions.
Some CUDA kernels (atomics in scatter/index_add, cuDNN autotuning, split-K cuBLAS GEMMs) sum in
a run-dependent order. This mode asks PyTorch for deterministic kernels only
(``torch.use_deterministic_algorithms``), pins cuDNN to deterministic, non-benchmarked
algorithms, and sets ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` as the cuBLAS documentation requires.
On CPU, PyTorch kernels are already deterministic for a fixed thread count.

Example:
    >>> import bnn
    >>> with bnn.deterministic_mode():
    ...     pass  # deterministic kernels here; previous settings restored afterwards
    >>> bnn.deterministic_mode(True)  # or: switch on for the rest of the process
"""

from __future__ import annotations

import os
from types import TracebackType

import torch

__all__ = ["deterministic_mode"]

CUBLAS_WORKSPACE_CONFIG = ":4096:8"


class deterministic_mode:  # noqa: N801 - used like torch.no_grad / torch.set_grad_enabled
    """Switch deterministic algorithms on (or off) now; restore the old settings on ``with`` exit.

    Args:
        enabled: ``True`` for deterministic kernels, ``False`` to switch them off.
        warn_only: if ``True``, an op without a deterministic implementation warns instead of
            raising ``RuntimeError``.
    """

    def __init__(self, enabled: bool = True, *, warn_only: bool = False) -> None:
        if not isinstance(enabled, bool):
            raise TypeError(f"enabled must be a bool, got {type(enabled).__name__}.")
        self._previous = (
            torch.are_deterministic_algorithms_enabled(),
            torch.is_deterministic_algorithms_warn_only_enabled(),
            torch.backends.cudnn.deterministic,
            torch.backends.cudnn.benchmark,
            os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
        )
        _apply(enabled, warn_only, enabled, not enabled and torch.backends.cudnn.benchmark)
        if enabled:
            os.environ["CUBLAS_WORKSPACE_CONFIG"] = CUBLAS_WORKSPACE_CONFIG

    def __enter__(self) -> deterministic_mode:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        algorithms, warn_only, cudnn_deterministic, cudnn_benchmark, workspace = self._previous
        _apply(algorithms, warn_only, cudnn_deterministic, cudnn_benchmark)
        if workspace is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)
        else:
            os.environ["CUBLAS_WORKSPACE_CONFIG"] = workspace


def _apply(algorithms: bool, warn_only: bool, cudnn_deterministic: bool, benchmark: bool) -> None:
    torch.use_deterministic_algorithms(algorithms, warn_only=warn_only)
    torch.backends.cudnn.deterministic = cudnn_deterministic
    torch.backends.cudnn.benchmark = benchmark
