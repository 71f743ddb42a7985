"""Training data of `bnn.infer.gp`: ``(x, y)`` tensors, or a ``DataLoader`` of mini-batches.

An exact GP factors all ``N`` points at once, so it takes tensors. SVGP's ELBO is a sum over
the data, so it also trains from a ``DataLoader`` (any map-style dataset of ``(x, y)``
pairs): each epoch reads the loader once — its own batches, order and shuffling — every
batch is checked like the tensors are, and
``N = len(loader.dataset)`` scales the ELBO. The inducing points are drawn from the dataset's
rows by the same rule as from tensors (``randperm(N)`` from the ``"inducing"`` generator), so
nothing but those ``M`` rows is ever gathered. A loader without its own ``generator`` draws
its seeds from the global generator, inside ``gp``'s ``"gp"`` stream: the same ``rng`` still
gives the same run, but GPyTorch's draws then depend on the loader; give it a seeded
``generator`` to keep them apart.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, IterableDataset

from bnn.infer._indexed_data import model_device, whole_data
from bnn.infer.gp._checks import check_arguments
from bnn.likelihoods import Categorical, Likelihood

__all__ = ["GPData", "read_data"]


@dataclass
class GPData:
    """The training data as ``gp`` reads it.

    Attributes:
        x, y: all inputs and checked targets (tensors), or the first batch's (a loader):
            shapes, dtype and device come from them.
        num_classes: ``K`` for a categorical likelihood, else ``None``.
        loader: the ``DataLoader`` (``None`` for tensors).
        check: the arguments every loader batch is checked with.
    """

    x: Tensor
    y: Tensor
    num_classes: int | None
    loader: DataLoader[Any] | None = None
    check: tuple[Any, ...] = ()

    @property
    def size(self) -> int:
        """``N``, the number of training points."""
        return self.x.shape[0] if self.loader is None else len(self.loader.dataset)  # type: ignore[arg-type]

    def epoch(
        self, batch_size: int | None, shuffle: torch.Generator
    ) -> Iterator[tuple[Tensor, Tensor]]:
        """One pass: shuffled mini-batches of the tensors, or the loader's checked batches."""
        if self.loader is None:
            order = torch.randperm(self.x.shape[0], generator=shuffle).to(self.x.device)
            for index in [order] if batch_size is None else torch.split(order, batch_size):
                yield self.x[index], self.y[index]
            return
        for batch in self.loader:
            model, *rest = self.check
            x, y, _ = check_arguments(model, (batch[0], batch[1]), *rest)
            yield x.to(self.x.device), y.to(self.x.device)

    def rows(self, index: Tensor) -> Tensor:
        """The inputs of rows ``index`` ``[M, ...]``."""
        if self.loader is None:
            return self.x[index.to(self.x.device)]
        dataset = self.loader.dataset
        return torch.stack([dataset[int(i)][0] for i in index]).to(self.x.device, self.x.dtype)


def read_data(
    model: nn.Module | None,
    data: object,
    likelihood: Likelihood,
    method: str,
    kernel: object,
    mean: object,
    num_classes: int | None,
    batch_size: int | None,
) -> GPData:
    """Check ``data`` (tensors or a ``Dataset``, read whole; or a loader for SVGP) and what
    goes with it."""
    if not isinstance(data, DataLoader):
        data = whole_data(data, model_device(model))
        x, y, classes = check_arguments(model, data, likelihood, method, kernel, mean, num_classes)
        return GPData(x, y, classes)
    if method != "svgp":
        raise ValueError(
            "an exact GP factors all N training points at once: pass data=(x, y) tensors; a "
            "DataLoader streams mini-batches for method='svgp'."
        )
    if batch_size is not None:
        raise ValueError("batch_size is for (x, y) tensors; a DataLoader brings its own batches.")
    if isinstance(data.dataset, IterableDataset):
        raise TypeError(
            "gp needs a map-style dataset (len and indexing) to draw inducing points and count "
            "N; wrap the data in a torch.utils.data.Dataset (e.g. TensorDataset)."
        )
    if isinstance(likelihood, Categorical) and num_classes is None:
        raise ValueError("with a DataLoader pass num_classes=K: a batch need not hold every class.")
    first = next(iter(data))
    check = (model, likelihood, method, kernel, mean, num_classes)
    x, y, classes = check_arguments(model, (first[0], first[1]), *check[1:])
    return GPData(x, y, classes, loader=data, check=check)
