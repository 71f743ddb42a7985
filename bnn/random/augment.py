"""Seeded data augmentation for training.

``AugmentedDataset`` applies ``transform(x, generator)`` to each example with a generator
seeded from ``(rng, epoch, index)``: the augmentation of example ``i`` in epoch ``e`` is the
same whether the data are loaded in the main process or by any number of ``DataLoader``
workers, and a run is reproducible from its seed. ``bnn.fit`` advances the epoch
(``set_epoch``) automatically. (Test-time augmentation, a posterior, is
``bnn.posterior.TestTimeAugmentation``.)

Example:
    >>> jitter = lambda x, g: x + 0.05 * torch.randn(x.shape, generator=g)
    >>> train = bnn.random.AugmentedDataset(TensorDataset(x, y), jitter, rng=0)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from bnn.random.default import RNGLike, resolve_rng

__all__ = ["AugmentedDataset"]


class AugmentedDataset(Dataset[tuple[Any, ...]]):
    """A dataset of ``(x, y, ...)`` whose inputs pass through a seeded random transform.

    Args:
        dataset: any map-style dataset returning tuples whose first item is the input.
        transform: ``transform(x, generator) -> x'``; draw all randomness from ``generator``.
        rng: randomness (the key ``"augment"`` of this `RNG`).
    """

    def __init__(
        self,
        dataset: Dataset[Any],
        transform: Callable[[Tensor, torch.Generator], Tensor],
        *,
        rng: RNGLike = None,
    ) -> None:
        if not callable(transform):
            raise TypeError("transform must be a callable (x, generator) -> x.")
        self.dataset = dataset
        self.transform = transform
        self.base_seed = resolve_rng(rng).derive_seed("augment")
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Use the augmentations of ``epoch`` (``bnn.fit`` calls this every epoch)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, index: int) -> tuple[Any, ...]:
        item = self.dataset[index]
        x, *rest = item if isinstance(item, tuple | list) else (item,)
        sequence = np.random.SeedSequence([self.base_seed, self.epoch, int(index)])
        generator = torch.Generator().manual_seed(
            int(sequence.generate_state(1, np.uint64)[0] >> 1)
        )
        return (self.transform(x, generator), *rest)
