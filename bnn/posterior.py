"""The `Posterior` protocol: draw ``S`` function samples of a batch in one vectorised call.

Every method in ``bnn`` becomes a `Posterior`; prediction and diagnostics only talk to this
interface. For models, posteriors are *noise first*: all randomness of a chunk of samples
(weights of Bayesian layers, dropout masks) is drawn up front from the ``"predict"`` stream of
the `RNG`, then the deterministic function of that noise is evaluated for all samples at once
with ``torch.func.vmap`` + ``functional_call``. Hence

* no Python loop over samples, and chunks sized to a memory budget, not to ``S × N``;
* a vectorised sample equals the loop ``model(x)`` with the same noise, sample for sample.

Example:
    >>> posterior = bnn.as_posterior(model)          # Bayesian layers and/or MCDropout
    >>> f = posterior.sample_functions(x, 100, rng=0)   # [100, N, ...]
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor, nn
from torch.func import functional_call, vmap

from bnn.chunking import ChunkPlan, evaluate_in_chunks, plan_chunks
from bnn.default_rng import RNGLike, resolve_rng
from bnn.dropout import MCDropout
from bnn.layers import bayesian_modules, posterior_mean
from bnn.noise import standard_normal

__all__ = [
    "DEFAULT_MEMORY_BUDGET",
    "PROBE_INPUTS",
    "ModelPosterior",
    "PointEstimate",
    "Posterior",
    "as_posterior",
    "activation_bytes",
    "check_inputs",
    "eval_mode",
    "evaluate_parameter_samples",
    "evaluate_parameter_samples_chunked",
]

PROBE_INPUTS = 64
"""Inputs of the probe forward pass that measures memory per input."""

DEFAULT_MEMORY_BUDGET = 64 * 2**20
"""Bytes of activations (plus sampled noise) one vectorised chunk of samples may use.

Also a speed setting: a chunk whose activations stay near the CPU caches runs at the FLOP
floor, a larger one is memory-bound (`benchmarks/suite.py`, 784→400→400→10 on 2,000 inputs,
100 samples, 1 thread: 1.07× the cost of 100 deterministic passes at 64 MiB, 1.37× at 512 MiB).
"""


@runtime_checkable
class Posterior(Protocol):
    """Anything that draws function samples: ``sample_functions(x, S, rng=...) -> [S, N, ...]``."""

    def sample_functions(self, x: Tensor, num_samples: int, *, rng: RNGLike = None) -> Tensor:
        """Draw ``num_samples`` function values at ``x``, shape ``[S, N, ...]``."""
        ...


def check_inputs(x: object, reference: Tensor | None, num_samples: object) -> None:
    """Validate a batch of inputs and a sample count at the public boundary."""
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}.")
    if x.dim() == 0 or x.shape[0] == 0:
        raise ValueError(f"x must be a non-empty batch [N, ...], got shape {tuple(x.shape)}.")
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples must be a positive int, got {num_samples!r}.")
    if reference is not None:
        if x.device != reference.device:
            raise ValueError(
                f"x is on {x.device} but the model is on {reference.device}; move one of them, "
                f"e.g. x.to('{reference.device}')."
            )
        if x.is_floating_point() and x.dtype != reference.dtype:
            raise TypeError(
                f"x has dtype {x.dtype} but the model's parameters are {reference.dtype}; "
                f"convert with x.to({reference.dtype})."
            )
    if x.is_floating_point() and not bool(torch.isfinite(x).all()):
        raise ValueError("x contains NaN or inf; clean or impute the inputs first.")


class ModelPosterior:
    """Posterior of a model with Bayesian layers and/or an `MCDropout` wrapper.

    Args:
        model: the network (``MCDropout`` at the top, Bayesian layers anywhere inside).
        memory_budget: bytes a chunk of samples may use (activations + noise).
    """

    def __init__(self, model: nn.Module, *, memory_budget: int = DEFAULT_MEMORY_BUDGET) -> None:
        self.model = model
        self.layers = [(name, layer) for name, layer in bayesian_modules(model)]
        self.dropout = model if isinstance(model, MCDropout) else None
        if not self.layers and self.dropout is None:
            raise TypeError(
                f"{type(model).__name__} has no Bayesian layers and is not MCDropout, so it has "
                "no posterior to sample. Use bnn.bayesianize(model), bnn.MCDropout(model), or "
                "pass a Posterior (DeepEnsemble, SampleSet)."
            )
        if memory_budget < 1:
            raise ValueError(f"memory_budget must be positive bytes, got {memory_budget}.")
        self.memory_budget = memory_budget

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

        ``moments`` (from :meth:`weight_moments`) saves recomputing the scales for every chunk.
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

        def one_function(weights: dict[str, Tensor], masks: list[Tensor]) -> Tensor:
            context = (
                self.dropout.mask_context(masks)
                if self.dropout is not None
                else contextlib.nullcontext()
            )
            with context:
                return functional_call(self.model, weights, (x,))  # type: ignore[no-any-return]

        batched = vmap(one_function, randomness="different")
        output: Tensor = batched(noise["weights"], noise["masks"])
        return output

    # ---------------------------------------------------------------------- sampling
    def sample_functions(self, x: Tensor, num_samples: int, *, rng: RNGLike = None) -> Tensor:
        """Draw ``num_samples`` function values at ``x`` (``[S, N, ...]``), chunked to the budget.

        Weights are drawn once per block of samples and shared by all inputs; dropout masks are
        drawn per input, as a loop over ``model(x)`` would. Randomness: the ``"predict"`` stream
        of ``rng``. The draws carry no gradient to the variational parameters (prediction, not
        training: use ``bnn.fit`` for that).
        """
        check_inputs(x, self.reference_tensor(), num_samples)
        probe = x[:PROBE_INPUTS]
        probe_shapes = self._mask_shapes(probe)
        plan = self._plan(x, num_samples, probe, probe_shapes)
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
            return self.evaluate({"weights": weights, "masks": masks}, block)

        with eval_mode(self.model), resolve_rng(rng).stream("predict"):
            return evaluate_in_chunks(x, num_samples, plan, draw, evaluate)

    def plan(self, x: Tensor, num_samples: int) -> ChunkPlan:
        """Samples and inputs per vectorised call for ``x`` under the memory budget.

        Memory per input is measured by one probe forward on the first (at most
        ``PROBE_INPUTS``) inputs: activations plus dropout masks.
        """
        probe = x[:PROBE_INPUTS]
        return self._plan(x, num_samples, probe, self._mask_shapes(probe))

    def _plan(
        self, x: Tensor, num_samples: int, probe: Tensor, mask_shapes: list[tuple[int, ...]]
    ) -> ChunkPlan:
        per_input = self._activation_bytes(probe) + sum(
            int(torch.Size(shape).numel()) * x.element_size() for shape in mask_shapes
        )
        return plan_chunks(
            num_samples,
            x.shape[0],
            bytes_per_input=-(-per_input // probe.shape[0]),
            bytes_per_sample=self._weight_bytes(),
            budget=self.memory_budget,
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


def activation_bytes(model: nn.Module, x: Tensor) -> int:
    """Bytes of all module outputs in one forward pass on ``x`` (a per-sample memory estimate).

    Runs one forward pass without gradients in eval mode; a model that cannot take ``x``
    raises a ``ValueError`` naming the input shape.
    """
    total = 0

    def count(_module: nn.Module, _inputs: Any, output: Any) -> None:
        nonlocal total
        if isinstance(output, Tensor):
            total += output.numel() * output.element_size()

    handles = [m.register_forward_hook(count) for m in model.modules()]
    try:
        with torch.no_grad(), eval_mode(model):
            model(x)
    except RuntimeError as error:
        raise ValueError(
            f"the model failed on x of shape {tuple(x.shape)}: {error}. Check that x has the "
            "feature dimensions the model expects."
        ) from error
    finally:
        for handle in handles:
            handle.remove()
    return total


def evaluate_parameter_samples(
    model: nn.Module, parameters: dict[str, Tensor], x: Tensor
) -> Tensor:
    """``functional_call(model, {name: p[s]}, x)`` for every sample ``s`` in one ``vmap``.

    Args:
        model: the network; parameters not in ``parameters`` keep their current values.
        parameters: name -> ``[S, *shape]`` stacked parameter samples.
        x: inputs ``[N, ...]``.

    Returns:
        ``[S, N, ...]``.
    """

    def one_function(sample: dict[str, Tensor]) -> Tensor:
        return functional_call(model, sample, (x,))  # type: ignore[no-any-return]

    with eval_mode(model):
        output: Tensor = vmap(one_function, randomness="different")(parameters)
    return output


def evaluate_parameter_samples_chunked(
    model: nn.Module, parameters: dict[str, Tensor], x: Tensor, memory_budget: int
) -> Tensor:
    """:func:`evaluate_parameter_samples` in chunks of samples (and inputs) under a budget.

    Args:
        model: the network.
        parameters: name -> ``[S, *shape]`` stacked parameter samples.
        x: inputs ``[N, ...]``.
        memory_budget: bytes one vectorised call may use (activations plus parameters).

    Returns:
        ``[S, N, ...]``.
    """
    total = next(iter(parameters.values())).shape[0]
    probe = x[:PROBE_INPUTS]
    plan = plan_chunks(
        total,
        x.shape[0],
        bytes_per_input=-(-activation_bytes(model, probe) // probe.shape[0]),
        bytes_per_sample=sum(v[0].numel() * v.element_size() for v in parameters.values()),
        budget=memory_budget,
    )

    def draw(start: int, stop: int) -> dict[str, Tensor]:
        return {name: value[start:stop] for name, value in parameters.items()}

    def evaluate(chunk: dict[str, Tensor], block: Tensor) -> Tensor:
        return evaluate_parameter_samples(model, chunk, block)

    return evaluate_in_chunks(x, total, plan, draw, evaluate)


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Put ``model`` in eval mode inside the block; restore every module's flag afterwards."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, mode in modes:
            module.training = mode


class PointEstimate:
    """A single network as a one-sample `Posterior` (e.g. a MAP fit with a probabilistic head).

    Its only uncertainty is what the likelihood models (aleatoric): ``sample_functions``
    returns ``[1, N, ...]``.
    """

    def __init__(self, model: nn.Module) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}.")
        self.model = model

    def sample_functions(self, x: Tensor, num_samples: int, *, rng: RNGLike = None) -> Tensor:  # noqa: ARG002
        """The network's output at ``x`` as one sample: ``[1, N, ...]``."""
        check_inputs(x, next(self.model.parameters(), None), num_samples)
        with eval_mode(self.model):
            return self.model(x).unsqueeze(0)  # type: ignore[no-any-return]


def as_posterior(obj: object, *, memory_budget: int = DEFAULT_MEMORY_BUDGET) -> Posterior:
    """A `Posterior` for ``obj``: itself if it is one, else a :class:`ModelPosterior`."""
    if isinstance(obj, nn.Module):
        if isinstance(obj, Posterior):
            return obj
        return ModelPosterior(obj, memory_budget=memory_budget)
    if isinstance(obj, Posterior):
        return obj
    raise TypeError(
        f"expected a model with Bayesian layers, an MCDropout, or a Posterior; got "
        f"{type(obj).__name__}."
    )
