"""One pass over training data in batches, for the methods that sum over the data once
(Laplace's curvature, the neural-linear head's ``ΦᵀΦ`` and ``Φᵀy``).

``data_batches`` takes ``(x, y)`` tensors, a map-style ``Dataset`` of ``(x, y)`` pairs or a
``DataLoader`` and yields checked ``(x, y)`` batches, read lazily: memory holds one batch, not
the data set. Every batch is checked as it arrives (tensors, finite, matching non-zero row
counts) and moved to the model's device.

Example:
    >>> for x, y in data_batches(dataset, batch_size=256, device=model_device(net)):
    ...     accumulate(x, y)
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, IterableDataset

from bnn._checks import check_int

__all__ = ["DATASET_BATCH", "Batches", "data_batches"]

DATASET_BATCH = 1024
"""Rows per batch when a ``Dataset`` is read without a batch size (it changes only rounding)."""


class Batches:
    """Re-iterable checked ``(x, y)`` batches; ``len`` is the number of batches (for a bar;
    a loader over an ``IterableDataset`` has none, and ``len`` raises ``TypeError``)."""

    def __init__(
        self, source: Iterable[Any], count: int | None, device: torch.device | None
    ) -> None:
        self._source = source
        self._count = count
        self._device = device

    def __len__(self) -> int:
        if self._count is None:
            raise TypeError("the number of batches of an iterable dataset is not known.")
        return self._count

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        for batch in self._source:
            if not isinstance(batch, tuple | list) or len(batch) != 2:
                raise TypeError(
                    "each batch must be a pair (x, y); give a Dataset of (x, y) pairs or a "
                    "DataLoader that yields them."
                )
            x, y = _checked_pair(batch[0], batch[1])
            yield (x, y) if self._device is None else (x.to(self._device), y.to(self._device))


def data_batches(
    data: object, batch_size: int | None = None, *, device: torch.device | None = None
) -> Batches:
    """``data`` as checked ``(x, y)`` batches on ``device`` (``None``: where they are).

    Args:
        data: ``(x, y)`` tensors (split into ``batch_size`` rows; one batch when ``None``), a
            ``Dataset`` of ``(x, y)`` pairs (read in ``batch_size`` rows, ``DATASET_BATCH``
            when ``None``) or a ``DataLoader`` (its own batches, in its own order).
        batch_size: rows per batch, as above.
        device: where each batch goes (the model's device).

    Raises:
        TypeError: ``data`` is none of the three, or a batch is not a pair of tensors.
        ValueError: empty data, ``x`` and ``y`` with different row counts, NaN or inf (in
            whichever batch holds it), a batch size below 1.
    """
    if batch_size is not None:
        check_int("batch_size", batch_size)
    if isinstance(data, tuple | list):
        if len(data) != 2:
            raise TypeError(f"data must be a pair (x, y) of tensors, got {len(data)} items.")
        x, y = _checked_pair(data[0], data[1])
        if batch_size is None:
            return Batches([(x, y)], 1, device)
        pairs = list(zip(torch.split(x, batch_size), torch.split(y, batch_size), strict=True))
        return Batches(pairs, len(pairs), device)
    if isinstance(data, Dataset) and not isinstance(data, DataLoader):
        data = DataLoader(data, batch_size=batch_size or DATASET_BATCH)
    if isinstance(data, DataLoader):
        count = None if isinstance(data.dataset, IterableDataset) else len(data)
        if count == 0:
            raise ValueError("the data has no rows; give at least one (x, y) pair.")
        return Batches(data, count, device)
    raise TypeError(
        f"data must be (x, y) tensors, a Dataset or a DataLoader, got {type(data).__name__}."
    )


def _checked_pair(x: object, y: object) -> tuple[Tensor, Tensor]:
    for name, tensor in (("x", x), ("y", y)):
        if not isinstance(tensor, Tensor):
            raise TypeError(f"{name} must be a tensor, got {type(tensor).__name__}.")
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise ValueError(f"{name} contains NaN or inf; clean or impute it first.")
    assert isinstance(x, Tensor) and isinstance(y, Tensor)
    if x.dim() == 0 or y.dim() == 0 or x.shape[0] == 0 or x.shape[0] != y.shape[0]:
        rows = [t.shape[0] if t.dim() else "no" for t in (x, y)]
        raise ValueError(
            f"x has {rows[0]} rows and y {rows[1]}; give the same number of rows (at least one)."
        )
    return x, y
