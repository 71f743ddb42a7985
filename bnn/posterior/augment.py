"""Test-time augmentation: the predictive over random augmentations of the input.

``TestTimeAugmentation`` turns a trained network and a random augmentation into a
`bnn.Posterior`: ``S`` augmented copies of each input, evaluated in one ``vmap``.

Example:
    >>> tta = bnn.posterior.TestTimeAugmentation(net, lambda x: x + 0.05 * torch.randn_like(x))
    >>> bnn.predict_with_uncertainty(tta, x_test, likelihood=bnn.Gaussian(0.1), rng=0)
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.func import vmap

from bnn.posterior._evaluate import eval_mode
from bnn.posterior.protocol import check_inputs
from bnn.random.default import RNGLike, resolve_rng

__all__ = ["TestTimeAugmentation"]


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

    def sample_functions(
        self,
        x: Tensor,
        num_samples: int,
        *,
        rng: RNGLike = None,
        memory_budget: int | None = None,  # noqa: ARG002 - all augmentations in one vmap
    ) -> Tensor:
        """``[S, N, ...]``: the model on ``S`` independent augmentations of ``x``."""
        check_inputs(x, next(self.model.parameters(), None), num_samples)

        def one(_: Tensor) -> Tensor:
            return self.model(self.augment(x))  # type: ignore[no-any-return]

        with resolve_rng(rng).stream("tta"), eval_mode(self.model):
            output: Tensor = vmap(one, randomness="different")(torch.arange(num_samples))
        return output
