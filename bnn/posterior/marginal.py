"""Per-input predictive samples by local reparameterisation: fast when batches are small.

`ModelPosterior` draws *function* samples: one weight draw per sample, shared by every input,
so ``S`` samples cost ``S`` full weight draws (478k normals each for a 784-400-400-10 MLP)
however few the inputs. When only each input's predictive distribution matters — means,
variances, intervals, log-likelihoods, calibration: everything `bnn.predict_with_uncertainty`
reports — the weights need not be drawn at all. For a layer linear in its weights with
independent Gaussian weights, the pre-activation of one input is Gaussian with mean
``f(x; μ)`` and variance ``f(x²; σ²)`` (Kingma, Salimans & Welling 2015), so it can be drawn
directly, one normal per unit instead of one per weight.

`MarginalPredictive` evaluates the model once on ``S`` stacked copies of the inputs
(``[S·N, ...]``, chunked to the memory budget) with every Bayesian layer in local
reparameterisation and every dropout layer drawing its masks per row. The trade-off, stated:

* **exact per-input marginals** — the predictive of each input is the model's, sample for
  sample in distribution, for networks whose Bayesian layers are linear in their weights
  (Linear, ConvNd, ConvTransposeNd) and whose rows do not interact (no batch statistics);
* **no joint samples across inputs** — sample ``s`` at input ``i`` and at input ``j`` come
  from independent noise, so covariances *between* inputs (and anything computed from them,
  e.g. a function's shape over a grid, Thompson sampling) are not those of the posterior.
  For those use the default `ModelPosterior`. (MC dropout's default masks are already drawn
  per input, and its vectorised path evaluates the layers before the first dropout once for
  all samples; a model with dropout and no Bayesian layer is therefore sampled by
  `ModelPosterior` here too.)

Example:
    >>> fast = bnn.posterior.MarginalPredictive(model)
    >>> bnn.predict_with_uncertainty(fast, x_small, num_samples=100, rng=0)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor, nn

from bnn.nn.dropout import MCDropout
from bnn.nn.estimators import is_linear_in_weights
from bnn.nn.layers import BayesianModule, bayesian_modules, posterior_mean
from bnn.posterior._evaluate import (
    PROBE_INPUTS,
    activation_bytes,
    eval_mode,
    evaluate_in_chunks,
    plan_chunks,
)
from bnn.posterior.model import ModelPosterior
from bnn.posterior.protocol import check_inputs, check_memory_budget
from bnn.random import GLOBAL_STATE_LOCK
from bnn.random.default import RNGLike, resolve_rng

__all__ = ["MarginalPredictive"]

_PASSES = 2  # local reparameterisation evaluates a layer twice: its mean and its variance


class MarginalPredictive:
    """Samples of each input's predictive, independent across inputs (local reparameterisation).

    Args:
        model: a network with Bayesian layers linear in their weights (Linear, ConvNd,
            ConvTransposeNd) and/or an `MCDropout` at the top.

    Shapes: ``sample_functions(x, S)`` returns ``[S, N, ...]`` like `ModelPosterior`; sample
    ``s`` of different inputs uses independent noise (see the module docstring).

    Raises:
        TypeError: the model has neither Bayesian layers nor ``MCDropout``.
        ValueError: a Bayesian layer that is not linear in its weights (name given): its
            pre-activations are not Gaussian, so it has no local reparameterisation.
    """

    def __init__(self, model: nn.Module) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}.")
        self.layers = [(name, layer) for name, layer in bayesian_modules(model)]
        if not self.layers and not isinstance(model, MCDropout):
            raise TypeError(
                f"{type(model).__name__} has no Bayesian layers and is not MCDropout, so it has "
                "no predictive to sample; use bnn.bayesianize(model) or bnn.MCDropout(model)."
            )
        for name, layer in self.layers:
            if not is_linear_in_weights(layer.module):
                raise ValueError(
                    f"Bayesian layer {name or 'model'} wraps a {type(layer.module).__name__}, "
                    "which is not linear in its weights: its pre-activations are not Gaussian, "
                    "so the marginal predictive cannot draw them; use the default "
                    "bnn.posterior.ModelPosterior (joint weight samples) for this model."
                )
        self.model = model
        self.dropout = model if isinstance(model, MCDropout) else None

    def reference_tensor(self) -> Tensor | None:
        """A parameter of the model (inputs must match its device and dtype)."""
        return next(self.model.parameters(), None)

    @GLOBAL_STATE_LOCK  # estimator and mode switches on the shared model
    def sample_functions(
        self,
        x: Tensor,
        num_samples: int,
        *,
        rng: RNGLike = None,
        memory_budget: int | None = None,
    ) -> Tensor:
        """``num_samples`` draws of each input's output ``[S, N, ...]`` (stream ``"predict"``).

        One forward pass over ``S`` stacked copies of a block of inputs per chunk; chunks sized
        so that the activations of both local-reparameterisation passes fit ``memory_budget``.
        """
        if not self.layers:  # MC dropout alone: its function samples are per input already
            return ModelPosterior(self.model).sample_functions(
                x, num_samples, rng=rng, memory_budget=memory_budget
            )
        check_inputs(x, self.reference_tensor(), num_samples)
        budget = check_memory_budget(memory_budget, x.device)
        probe = x[:PROBE_INPUTS]
        with local_reparameterisation(self.layers):
            per_input = -(-_PASSES * activation_bytes(self.model, probe) // probe.shape[0])
        mask_shapes = self._mask_shapes_per_row(probe)
        per_input += sum(int(torch.Size(shape).numel()) for shape in mask_shapes) * x.element_size()
        plan = plan_chunks(
            num_samples, x.shape[0], bytes_per_input=per_input, bytes_per_sample=0, budget=budget
        )

        def draw(start: int, stop: int) -> int:
            return stop - start

        def evaluate(count: int, block: Tensor) -> Tensor:
            rows = block.unsqueeze(0).expand(count, *block.shape).reshape(-1, *block.shape[1:])
            with self._row_masks(rows, mask_shapes):
                output: Tensor = self.model(rows)
            return output.reshape(count, block.shape[0], *output.shape[1:])

        with (
            torch.no_grad(),
            resolve_rng(rng).stream("predict"),
            eval_mode(self.model),
            local_reparameterisation(self.layers),
        ):
            return evaluate_in_chunks(x, num_samples, plan, draw, evaluate)

    def _mask_shapes_per_row(self, probe: Tensor) -> list[tuple[int, ...]]:
        """Each dropout layer's mask shape for one input row (leading batch dimension 1)."""
        if self.dropout is None:
            return []
        with posterior_mean(self.model):
            shapes = self.dropout.mask_shapes(probe)
        if any(shape[:1] != probe.shape[:1] for shape in shapes):
            raise ValueError(
                "a dropout layer's mask has no per-input dimension, so rows cannot draw their "
                "own masks; use joint=True (bnn.posterior.ModelPosterior)."
            )
        return [(1, *shape[1:]) for shape in shapes]

    def _row_masks(
        self, rows: Tensor, shapes: list[tuple[int, ...]]
    ) -> contextlib.AbstractContextManager[None]:
        """Dropout masks for every row, drawn by ``bnn.random.draws`` (global generator)."""
        if self.dropout is None:
            return contextlib.nullcontext()
        row_shapes = [(rows.shape[0], *shape[1:]) for shape in shapes]
        masks = [mask[0] for mask in self.dropout.sample_masks(rows, 1, row_shapes)]
        return self.dropout.mask_context(masks, overwrite=True)


@contextlib.contextmanager
def local_reparameterisation(layers: list[tuple[str, BayesianModule]]) -> Iterator[None]:
    """Every Bayesian layer samples its pre-activations inside the block (restored after)."""
    saved = [(layer, layer.estimator, layer.use_mean) for _, layer in layers]
    for layer, _, _ in saved:
        layer.estimator = "local_reparam"
        layer.use_mean = False
    try:
        yield
    finally:
        for layer, estimator, use_mean in saved:
            layer.estimator = estimator
            layer.use_mean = use_mean
