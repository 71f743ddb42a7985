"""Seeded data augmentation, in training and at test time.

* :class:`AugmentedDataset` applies ``transform(x, generator)`` to each example with a
  generator seeded from ``(rng, epoch, index)``: the augmentation of example ``i`` in epoch
  ``e`` is the same whether the data are loaded in the main process or by any number of
  ``DataLoader`` workers, and a run is reproducible from its seed. ``bnn.fit`` advances the
  epoch (``set_epoch``) automatically.
* :class:`TestTimeAugmentation` turns a trained network and a random augmentation into a
  `bnn.Posterior`: ``S`` augmented copies of each input, evaluated in one ``vmap``.

Example:
    >>> jitter = lambda x, g: x + 0.05 * torch.randn(x.shape, generator=g)
    >>> train = bnn.AugmentedDataset(TensorDataset(x, y), jitter, rng=0)
    >>> tta = bnn.TestTimeAugmentation(net, lambda x: x + 0.05 * torch.randn_like(x))
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.func import vmap
from torch.utils.data import Dataset

from bnn.default_rng import RNGLike, resolve_rng
from bnn.posterior import check_inputs, eval_mode

__all__ = ["AugmentedDataset", "TestTimeAugmentation"]


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


class TestTimeAugmentation:
    """Predictive over random augmentations of the input: a `bnn.Posterior`.

    Args:
        model: the trained network (evaluated in eval mode).
        augment: ``augment(x) -> x'`` for a batch, drawing randomness from torch's random
            functions (``torch.randn_like``, ``torch.rand``...), which ``vmap`` makes
            independent per sample and ``rng`` seeds (stream ``"tta"``).
    """

    __test__ = False  # not a pytest class

    def __init__(self, model: nn.Module, augment: Callable[[Tensor], Tensor]) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}.")
        if not callable(augment):
            raise TypeError("augment must be a callable x -> x'.")
        self.model = model
        self.augment = augment

    def sample_functions(self, x: Tensor, num_samples: int, *, rng: RNGLike = None) -> Tensor:
        """``[S, N, ...]``: the model on ``S`` independent augmentations of ``x``."""
        check_inputs(x, next(self.model.parameters(), None), num_samples)

        def one(_: Tensor) -> Tensor:
            return self.model(self.augment(x))  # type: ignore[no-any-return]

        with resolve_rng(rng).stream("tta"), eval_mode(self.model):
            output: Tensor = vmap(one, randomness="different")(torch.arange(num_samples))
        return output
