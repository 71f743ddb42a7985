"""Training data given as ``(x, y)`` tensors, a map-style ``Dataset`` or a ``DataLoader``, for
the methods that do not iterate a loader themselves: ``indexed_data`` reads rows by index for
those that draw their own seeded mini-batch order (``svi``, ``sgld``, ``sghmc``);
``whole_data`` reads everything once for the full-batch ones (NUTS, HMC, ``marglik_training``,
``boost``).

Drawing the order from the run's ``rng`` (rather than iterating a loader) is what lets those
methods resume from a checkpoint bit for bit, mid-epoch included. A ``DataLoader`` therefore
contributes its dataset, its batch size and its ``collate_fn``; its sampler must be the plain
random or sequential one (a custom sampler would be silently ignored, so it is refused).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import (
    DataLoader,
    Dataset,
    IterableDataset,
    RandomSampler,
    SequentialSampler,
    TensorDataset,
    default_collate,
)

from bnn.infer._log_joint import check_data

__all__ = [
    "IndexedData",
    "IndexedSource",
    "WholeData",
    "indexed_data",
    "model_device",
    "whole_data",
]

IndexedSource = tuple[Tensor, Tensor] | Dataset[Any] | DataLoader[Any]
WholeData = IndexedSource  # read whole by the full-batch methods


class IndexedData:
    """Rows ``index`` of the training data as ``(x, y)`` on the model's device.

    Attributes:
        size: ``N``, the number of rows.
        loader_batch_size: the batch size of the ``DataLoader`` it came from (``None`` if none).
    """

    def __init__(
        self,
        size: int,
        fetch: Callable[[Tensor], tuple[Tensor, Tensor]],
        loader_batch_size: int | None = None,
    ) -> None:
        self.size = size
        self._fetch = fetch
        self.loader_batch_size = loader_batch_size

    def __len__(self) -> int:
        return self.size

    def batch(self, index: Tensor) -> tuple[Tensor, Tensor]:
        """``(x[index], y[index])``: ``index`` is a 1-D ``long`` tensor of row numbers."""
        return self._fetch(index)


def indexed_data(model: nn.Module, data: object) -> IndexedData:
    """``data`` read by index, checked like tensors (see `bnn.infer._log_joint.check_data`).

    Tensors are checked whole, once; a ``Dataset``'s first rows are checked against the model
    before training, and every batch it yields is checked for NaN/inf and shape as it is read.

    Raises:
        TypeError / ValueError: naming what is wrong and what to pass instead.
    """
    if isinstance(data, tuple | list):
        x, y = check_data(model, data)
        return IndexedData(x.shape[0], lambda index: (x[index], y[index]))
    dataset, collate, loader_batch = _dataset_of(data)
    if isinstance(dataset, TensorDataset) and len(dataset.tensors) == 2 and collate is None:
        x, y = check_data(model, (dataset.tensors[0], dataset.tensors[1]))
        return IndexedData(x.shape[0], lambda index: (x[index], y[index]), loader_batch)
    size = _length(dataset)
    read = _reader(model, dataset, collate or default_collate)
    read(torch.arange(min(2, size)))  # the first rows against the model, before any training
    return IndexedData(size, read, loader_batch)


def whole_data(data: Any, device: torch.device | None = None) -> Any:
    """``(x, y)`` tensors of every row of a ``Dataset`` or ``DataLoader``, read once in the
    dataset's index order and moved to ``device`` (``None``: left where they are); tensors and
    anything else are returned as given (the caller checks them).

    For the full-batch methods, whose every step needs all ``N`` rows (memory ``O(N)``). A
    loader's sampler, shuffling and ``drop_last`` are not used, so the rows do not depend on a
    generator's state; its ``collate_fn`` is. An ``IterableDataset`` is read in its own order.
    """
    if isinstance(data, DataLoader) and _default_collate(data):
        data = data.dataset  # a TensorDataset's tensors are taken as they are, below
    if isinstance(data, TensorDataset) and len(data.tensors) == 2:
        x, y = data.tensors
    elif isinstance(data, DataLoader | Dataset):
        x, y = _read_in_order(data)
    else:
        return data
    return (x, y) if device is None else (x.to(device), y.to(device))


def model_device(model: object) -> torch.device | None:
    """The device of the model's first parameter (``None``: no model, not an ``nn.Module`` —
    the caller refuses that — or no parameters)."""
    parameter = next(model.parameters(), None) if isinstance(model, nn.Module) else None
    return None if parameter is None else parameter.device


def _default_collate(loader: DataLoader[Any]) -> bool:
    return loader.batch_size is None or loader.collate_fn is default_collate


def _read_in_order(data: DataLoader[Any] | Dataset[Any]) -> tuple[Tensor, Tensor]:
    dataset = data.dataset if isinstance(data, DataLoader) else data
    if isinstance(dataset, IterableDataset):
        batches: Any = (
            data if isinstance(data, DataLoader) else DataLoader(dataset, batch_size=_READ_BATCH)
        )
    else:
        collate = (
            default_collate
            if isinstance(data, Dataset) or _default_collate(data)
            else data.collate_fn
        )
        batches = DataLoader(dataset, batch_size=_READ_BATCH, collate_fn=collate)
    xs, ys = [], []
    for batch in batches:
        if not isinstance(batch, tuple | list) or len(batch) != 2:
            raise TypeError(
                f"each batch must be an (x, y) pair; got a batch of type {type(batch).__name__}."
            )
        xs.append(torch.as_tensor(batch[0]))
        ys.append(torch.as_tensor(batch[1]))
    if not xs:
        raise ValueError("training data is empty (the dataset yields no rows).")
    return torch.cat(xs), torch.cat(ys)


_READ_BATCH = 1024  # rows per batch when a Dataset is read whole


def _dataset_of(data: object) -> tuple[Dataset[Any], Callable[..., Any] | None, int | None]:
    """The map-style dataset, the collate function (``None``: the default) and the batch size."""
    if isinstance(data, DataLoader):
        if data.batch_size is None:
            raise ValueError(
                "this method draws its own seeded mini-batch order from rng, so the loader's "
                "batch_sampler would be ignored; pass the dataset (or a Subset of it) and "
                "batch_size=."
            )
        if not isinstance(data.sampler, RandomSampler | SequentialSampler):
            raise ValueError(
                f"this method draws its own seeded mini-batch order from rng, so the loader's "
                f"{type(data.sampler).__name__} would be ignored; pass a Subset of the dataset "
                "(or the dataset itself) instead of a custom sampler."
            )
        collate = None if data.collate_fn is default_collate else data.collate_fn
        return _map_style(data.dataset), collate, data.batch_size
    if isinstance(data, Dataset):
        return _map_style(data), None, None
    raise TypeError(
        f"data must be (x, y) tensors, a map-style Dataset of (x, y) pairs or a DataLoader over "
        f"one, got {type(data).__name__}."
    )


def _map_style(dataset: Dataset[Any]) -> Dataset[Any]:
    if isinstance(dataset, IterableDataset):
        raise TypeError(
            "an IterableDataset cannot be read by index; this method draws a seeded mini-batch "
            "order, so it needs a map-style Dataset (with __getitem__ and __len__)."
        )
    return dataset


def _length(dataset: Dataset[Any]) -> int:
    try:
        size = len(dataset)  # type: ignore[arg-type]
    except TypeError as error:
        raise TypeError("the dataset has no length; give it a __len__.") from error
    if size < 1:
        raise ValueError("training data is empty (the dataset has 0 rows).")
    return size


def _reader(
    model: nn.Module, dataset: Dataset[Any], collate: Callable[..., Any]
) -> Callable[[Tensor], tuple[Tensor, Tensor]]:
    """``index -> (x, y)``: the rows collated, moved to the model's device and checked (the
    first call also probes the model with them, as ``check_data`` does for tensors)."""
    getitems = getattr(dataset, "__getitems__", None)
    parameter = next(model.parameters(), None)
    probed = False

    def read(index: Tensor) -> tuple[Tensor, Tensor]:
        nonlocal probed
        rows = index.tolist()
        batch = collate(getitems(rows) if getitems else [dataset[i] for i in rows])
        if not isinstance(batch, tuple | list) or len(batch) != 2:
            raise TypeError(
                "each item of the dataset must be an (x, y) pair; got a batch of type "
                f"{type(batch).__name__}."
            )
        x, y = (torch.as_tensor(part) for part in batch)
        if parameter is not None:
            x, y = x.to(parameter.device), y.to(parameter.device)
        if not probed:
            probed = True
            return check_data(model, (x, y))
        return _checked_batch(x, y, parameter)

    return read


def _checked_batch(x: Tensor, y: Tensor, parameter: Tensor | None) -> tuple[Tensor, Tensor]:
    """A later batch: rows matching, values finite, targets in the model's precision."""
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"a batch has {x.shape[0]} inputs but {y.shape[0]} targets.")
    for name, tensor in (("x", x), ("y", y)):
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise ValueError(
                f"{name} contains NaN or inf in a mini-batch; clean or impute the dataset."
            )
    if parameter is not None and y.is_floating_point() and y.dtype != parameter.dtype:
        y = y.to(parameter.dtype)
    return x, y
