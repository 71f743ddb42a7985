"""Posteriors of models: Bayesian layers and MC dropout, or one plain network.

For models, posteriors are *noise first*: all randomness of a chunk of samples (weights of
Bayesian layers, dropout masks) is drawn up front from the ``"predict"`` stream of the `RNG`,
then the deterministic function of that noise is evaluated for all samples at once with
``torch.func.vmap`` + ``functional_call``. Hence

* no Python loop over samples, and chunks sized to a memory budget, not to ``S × N``;
* a vectorised sample equals the loop ``model(x)`` with the same noise, sample for sample.

Example:
    >>> posterior = bnn.posterior.as_posterior(model)     # Bayesian layers and/or MCDropout
    >>> f = posterior.sample_functions(x, 100, rng=0)      # [100, N, ...]
"""

from __future__ import annotations

import contextlib
import warnings
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap

from bnn.nn.dropout import MCDropout
from bnn.nn.layers import bayesian_modules, posterior_mean
from bnn.posterior._evaluate import (
    PROBE_INPUTS,
    ChunkPlan,
    activation_bytes,
    check_output,
    eval_mode,
    evaluate_in_chunks,
    plan_chunks,
)
from bnn.posterior.protocol import (
    Draws,
    Posterior,
    check_inputs,
    check_memory_budget,
)
from bnn.random import GLOBAL_STATE_LOCK
from bnn.random.default import RNGLike, resolve_rng
from bnn.random.draws import standard_normal

__all__ = ["DEFAULT_DRAWS", "ModelPosterior", "PointEstimate", "as_posterior", "has_posterior"]

DEFAULT_DRAWS = 100
"""Draws that ``ModelPosterior.draws`` takes when no number is given."""


class ModelPosterior:
    """Posterior of a model with Bayesian layers and/or an `MCDropout` wrapper.

    Args:
        model: the network (``MCDropout`` at the top, Bayesian layers anywhere inside).

    A `bnn.posterior.ParameterPosterior`: the weights of its Bayesian layers are the
    parameters; dropout masks are drawn afresh for each function sample.
    """

    def __init__(self, model: nn.Module) -> None:
        self._model = model
        self.layers = [(name, layer) for name, layer in bayesian_modules(model)]
        self.dropout = model if isinstance(model, MCDropout) else None
        if not self.layers and self.dropout is None:
            raise TypeError(
                f"{type(model).__name__} has no Bayesian layers and is not MCDropout, so it has "
                "no posterior to sample. Use bnn.bayesianize(model), bnn.MCDropout(model), or "
                "pass a Posterior (DeepEnsemble, SampleSet)."
            )

    @property
    def model(self) -> nn.Module:
        """The network."""
        return self._model

    def reference_tensor(self) -> Tensor | None:
        """A parameter of the model (its device and dtype are what inputs must match)."""
        return next(self.model.parameters(), None)

    # ---------------------------------------------------------------------- noise
    def weight_moments(self) -> dict[str, tuple[Tensor, Tensor]]:
        """``(loc, scale)`` of every Bayesian weight, by slot name (no gradients)."""
        with torch.no_grad():
            return {
                f"{name}.module.{parameter}" if name else f"module.{parameter}": (
                    posterior.loc.detach(),
                    posterior.scale.detach(),
                )
                for name, layer in self.layers
                for parameter, posterior in layer.bayesian_parameters().items()
            }

    def sample_weights(
        self, num_samples: int, moments: dict[str, tuple[Tensor, Tensor]] | None = None
    ) -> dict[str, Tensor]:
        """Weight draws of every Bayesian layer: slot name -> ``[S, *shape]`` (global generator).

        ``moments`` (from ``weight_moments``) saves recomputing the scales for every chunk.
        """
        moments = self.weight_moments() if moments is None else moments
        weights = {}
        for slot, (loc, scale) in moments.items():
            noise = standard_normal((num_samples, *loc.shape), dtype=loc.dtype, device=loc.device)
            weights[slot] = noise.mul_(scale).add_(loc)  # in place: no second [S, ...] buffer
        return weights

    def sample_noise(
        self,
        x: Tensor,
        num_samples: int,
        mask_shapes: list[tuple[int, ...]] | None = None,
        moments: dict[str, tuple[Tensor, Tensor]] | None = None,
    ) -> dict[str, Any]:
        """All randomness of ``num_samples`` functions: weights and masks, each ``[S, ...]``."""
        weights = self.sample_weights(num_samples, moments)
        masks = (
            self.dropout.sample_masks(
                x, num_samples, self._mask_shapes(x) if mask_shapes is None else mask_shapes
            )
            if self.dropout is not None
            else []
        )
        return {"weights": weights, "masks": masks}

    def _mask_shapes(self, x: Tensor) -> list[tuple[int, ...]]:
        if self.dropout is None:
            return []
        with posterior_mean(self.model):  # the probe forward draws no weights
            return self.dropout.mask_shapes(x)

    def evaluate(self, noise: dict[str, Any], x: Tensor) -> Tensor:
        """Evaluate every function sample given its noise, in one vmap: ``[S, N, ...]``."""
        return self._evaluate(noise, x, overwrite_masks=False)

    def _evaluate(self, noise: dict[str, Any], x: Tensor, *, overwrite_masks: bool) -> Tensor:
        """``evaluate``; ``overwrite_masks``: the masks are fresh and may hold the outputs."""

        def one_function(weights: dict[str, Tensor], masks: list[Tensor]) -> Tensor:
            context = (
                self.dropout.mask_context(masks, overwrite=overwrite_masks)
                if self.dropout is not None
                else contextlib.nullcontext()
            )
            with context:
                return functional_call(self.model, weights, (x,))  # type: ignore[no-any-return]

        batched = vmap(one_function, randomness="different")
        output: Tensor = batched(noise["weights"], noise["masks"])
        return output

    # ---------------------------------------------------------------------- sampling
    @GLOBAL_STATE_LOCK  # probes, hooks and mode switches on the shared model
    def sample_functions(
        self,
        x: Tensor,
        num_samples: int,
        *,
        rng: RNGLike = None,
        memory_budget: int | None = None,
    ) -> Tensor:
        """Draw ``num_samples`` function values at ``x`` (``[S, N, ...]``), chunked to the budget.

        Weights are drawn once per block of samples and shared by all inputs; dropout masks are
        drawn per input, as a loop over ``model(x)`` would. Randomness: the ``"predict"`` stream
        of ``rng``. The draws carry no gradient to the variational parameters (prediction, not
        training: use ``bnn.fit`` for that).
        """
        check_inputs(x, self.reference_tensor(), num_samples)
        budget = check_memory_budget(memory_budget, x.device)
        self._warn_if_deterministic()
        probe = x[:PROBE_INPUTS]
        probe_shapes = self._mask_shapes(probe)
        plan = self._plan(x, num_samples, probe, probe_shapes, budget)
        moments = self.weight_moments()
        mask_shapes = {probe.shape[0]: probe_shapes}  # by block length; probed once each

        def draw(start: int, stop: int) -> tuple[int, dict[str, Tensor]]:
            return stop - start, self.sample_weights(stop - start, moments)

        def evaluate(state: tuple[int, dict[str, Tensor]], block: Tensor) -> Tensor:
            count, weights = state
            masks: list[Tensor] = []
            if self.dropout is not None:
                if block.shape[0] not in mask_shapes:
                    mask_shapes[block.shape[0]] = self._mask_shapes(block)
                masks = self.dropout.sample_masks(block, count, mask_shapes[block.shape[0]])
            noise = {"weights": weights, "masks": masks}
            return self._evaluate(noise, block, overwrite_masks=True)

        with resolve_rng(rng).stream("predict"), eval_mode(self.model):
            return evaluate_in_chunks(x, num_samples, plan, draw, evaluate)

    def _warn_if_deterministic(self) -> None:
        """MC dropout whose every rate is 0 and no Bayesian layer: all samples are one function."""
        if self.dropout is None or self.layers or any(rate > 0 for rate in self.dropout.rates):
            return
        warnings.warn(
            "every dropout rate of this MCDropout model is 0, so all function samples are the "
            "same and the epistemic uncertainty is exactly 0; set the dropout layers' p > 0 "
            "(e.g. 0.1) or use MCDropout(model, add_dropout=0.1).",
            UserWarning,
            stacklevel=3,
        )

    # ---------------------------------------------------------------------- parameters
    def sample_parameters(self, num_samples: int, *, rng: RNGLike = None) -> dict[str, Tensor]:
        """Bayesian-layer weight draws: name -> ``[1, S, *shape]`` (stream ``"predict"``)."""
        return self.draws(num_samples, rng=rng).parameters

    @GLOBAL_STATE_LOCK  # probes, hooks and mode switches on the shared model
    def draws(
        self, num_samples: int | None = None, *, x: Tensor | None = None, rng: RNGLike = None
    ) -> Draws:
        """``num_samples`` (default 100) independent draws as one chain, with ``f`` at ``x``.

        Weights and dropout masks come from one ``"predict"`` stream, so the function values
        are those of the returned weights. Evaluated in one vectorised call (no chunking).
        """
        count = DEFAULT_DRAWS if num_samples is None else num_samples
        if x is not None:
            check_inputs(x, self.reference_tensor(), count)
        elif isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise ValueError(f"num_samples must be a positive int, got {count!r}.")
        with resolve_rng(rng).stream("predict"), torch.no_grad():
            if x is None:
                weights, functions = self.sample_weights(count), None
            else:
                noise = self.sample_noise(x, count)
                weights, functions = noise["weights"], self.evaluate(noise, x).unsqueeze(0)
        return Draws(
            parameters={name: value.unsqueeze(0) for name, value in weights.items()},
            functions=functions,
            is_mcmc=False,
        )

    @GLOBAL_STATE_LOCK  # probes, hooks and mode switches on the shared model
    def plan(self, x: Tensor, num_samples: int, memory_budget: int | None = None) -> ChunkPlan:
        """Samples and inputs per vectorised call for ``x`` under ``memory_budget`` bytes.

        Memory per input is measured by one probe forward on the first (at most
        ``PROBE_INPUTS``) inputs: activations plus dropout masks.
        """
        probe = x[:PROBE_INPUTS]
        budget = check_memory_budget(memory_budget, x.device)
        return self._plan(x, num_samples, probe, self._mask_shapes(probe), budget)

    def _plan(
        self,
        x: Tensor,
        num_samples: int,
        probe: Tensor,
        mask_shapes: list[tuple[int, ...]],
        budget: int,
    ) -> ChunkPlan:
        per_input = self._activation_bytes(probe) + sum(
            int(torch.Size(shape).numel()) * x.element_size() for shape in mask_shapes
        )
        return plan_chunks(
            num_samples,
            x.shape[0],
            bytes_per_input=-(-per_input // probe.shape[0]),
            bytes_per_sample=self._weight_bytes(),
            budget=budget,
            # a dropout mask without a per-input dimension is one mask for all inputs
            split_inputs=all(shape[:1] == probe.shape[:1] for shape in mask_shapes),
        )

    def _weight_bytes(self) -> int:
        return sum(
            p.loc.numel() * p.loc.element_size()
            for _, layer in self.layers
            for p in layer.bayesian_parameters().values()
        )

    def _activation_bytes(self, x: Tensor) -> int:
        quiet = self.dropout.identity_dropout() if self.dropout else contextlib.nullcontext()
        with posterior_mean(self.model), quiet:
            return activation_bytes(self.model, x)


class PointEstimate:
    """A single network as a one-sample `Posterior` (e.g. a MAP fit with a probabilistic head).

    Its only uncertainty is what the likelihood models (aleatoric): ``sample_functions``
    returns ``[1, N, ...]``.
    """

    def __init__(self, model: nn.Module) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}.")
        self.model = model

    def sample_functions(
        self,
        x: Tensor,
        num_samples: int,
        *,
        rng: RNGLike = None,  # noqa: ARG002 - a point estimate draws nothing
        memory_budget: int | None = None,  # noqa: ARG002 - one forward pass, no chunks
    ) -> Tensor:
        """The network's output at ``x`` as one sample: ``[1, N, ...]``."""
        check_inputs(x, next(self.model.parameters(), None), num_samples)
        with eval_mode(self.model):
            return check_output(self.model(x)).unsqueeze(0)


def has_posterior(model: nn.Module) -> bool:
    """Whether ``model`` has random weights or units to sample (Bayesian layers, MC dropout)."""
    if isinstance(model, MCDropout) or isinstance(model, Posterior):
        return True
    return any(True for _ in bayesian_modules(model))


def as_posterior(obj: object) -> Posterior:
    """A `Posterior` for ``obj``: itself if it is one, else a ``ModelPosterior``.

    Raises:
        TypeError: ``obj`` is neither a posterior nor a model with Bayesian layers or
            ``MCDropout``.
    """
    if isinstance(obj, Posterior):
        return obj
    if isinstance(obj, nn.Module):
        return ModelPosterior(obj)
    raise TypeError(
        f"expected a model with Bayesian layers, an MCDropout, or a Posterior; got "
        f"{type(obj).__name__}."
    )
