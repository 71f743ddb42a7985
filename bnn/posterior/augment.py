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

from bnn.posterior._evaluate import (
    PROBE_INPUTS,
    activation_bytes,
    eval_mode,
    evaluate_in_chunks,
    plan_chunks,
)
from bnn.posterior.protocol import check_inputs, check_memory_budget
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
        memory_budget: int | None = None,
    ) -> Tensor:
        """``[S, N, ...]``: the model on ``S`` independent augmentations of ``x``.

        Augmented copies are evaluated in vectorised chunks of at most ``memory_budget``
        bytes of activations; when the inputs must be split, each block of inputs draws its
        own augmentations (independent per input, as for any per-example transform).
        """
        check_inputs(x, next(self.model.parameters(), None), num_samples)
        budget = check_memory_budget(memory_budget, x.device)
        probe = x[:PROBE_INPUTS]
        plan = plan_chunks(
            num_samples,
            x.shape[0],
            bytes_per_input=-(-activation_bytes(self.model, probe) // probe.shape[0]),
            bytes_per_sample=0,
            budget=budget,
        )

        def augmented(count: int, block: Tensor) -> Tensor:
            def one(_: Tensor) -> Tensor:
                return self.model(self.augment(block))  # type: ignore[no-any-return]

            output: Tensor = vmap(one, randomness="different")(torch.arange(count))
            return output

        with resolve_rng(rng).stream("tta"), eval_mode(self.model):
            return evaluate_in_chunks(
                x, num_samples, plan, lambda start, stop: stop - start, augmented
            )
