"""The contract between inference methods and everything that reads their results.

Every inference method in ``bnn`` returns a `Posterior`: an object that draws ``S`` function
samples of a batch of inputs in one vectorised call. Prediction, metrics, calibration and the
ArviZ bridge talk to these protocols only, never to a concrete method:

* `Posterior` — ``sample_functions(x, S, rng=..., memory_budget=...) -> [S, N, ...]``; the one
  method every posterior has.
* `ParameterPosterior` — a posterior over the weights of a network: it also hands out weight
  draws in the one sample format of ``bnn``, ``dict[str, Tensor]`` shaped
  ``(chain, draw, *shape)`` (`Draws`), for ArviZ's ``posterior`` group and trace plots.
* `CarriesLikelihood` — a posterior that brings its own observation model (e.g. a deep
  ensemble whose members each learned a noise scale); prediction uses it when the caller gives
  no likelihood.

Example:
    >>> class Point:  # the smallest posterior: one network, no weight uncertainty
    ...     def __init__(self, net): self.net = net
    ...     def sample_functions(self, x, num_samples, *, rng=None, memory_budget=None):
    ...         return self.net(x).unsqueeze(0)
    >>> isinstance(Point(net), bnn.Posterior)
    True
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from bnn.likelihoods import Likelihood
from bnn.random.default import RNGLike

__all__ = [
    "ACCELERATOR_MEMORY_BUDGET",
    "DEFAULT_MEMORY_BUDGET",
    "CarriesLikelihood",
    "Draws",
    "ParameterPosterior",
    "Posterior",
    "check_batch",
    "check_finite_batch",
    "check_inputs",
    "default_memory_budget",
]

DEFAULT_MEMORY_BUDGET = 64 * 2**20
"""Bytes of activations (plus sampled noise) one vectorised chunk of samples may use.

Also a speed setting: a chunk whose activations stay near the CPU caches runs at the FLOP
floor, a larger one is memory-bound (`benchmarks/suite.py`, 784→400→400→10 on 2,000 inputs,
100 samples, 1 thread: 1.07× the cost of 100 deterministic passes at 64 MiB, 1.37× at 512 MiB).
"""

ACCELERATOR_MEMORY_BUDGET = 2**30
"""The default chunk size on accelerators (CUDA and others): 1 GiB.

Small chunks leave a GPU's kernels short of work: on an H100 (784→400→400→10, 10,000 inputs,
100 samples) MC dropout ran at 5.1× the floor with 64 MiB chunks and 0.91× with 1 GiB
(`benchmarks/gpu.py`). A fixed size, not a share of the free memory, so that a seed gives the
same chunks, hence the same numbers, whatever else the device holds.
"""


def default_memory_budget(device: torch.device | str) -> int:
    """Bytes per vectorised chunk when none is given: 64 MiB on the CPU, 1 GiB elsewhere."""
    if torch.device(device).type == "cpu":
        return DEFAULT_MEMORY_BUDGET
    return ACCELERATOR_MEMORY_BUDGET


@runtime_checkable
class Posterior(Protocol):
    """Anything that draws function samples: ``sample_functions(x, S) -> [S, N, ...]``."""

    def sample_functions(
        self,
        x: Tensor,
        num_samples: int,
        *,
        rng: RNGLike = None,
        memory_budget: int | None = None,
    ) -> Tensor:
        """Draw ``num_samples`` function values at ``x``.

        Args:
            x: inputs ``[N, ...]`` on the posterior's device and dtype.
            num_samples: ``S`` (≥ 1). A posterior with a fixed number of members may return
                fewer (e.g. an ensemble of ``M < S`` members returns ``M``).
            rng: where the randomness comes from (an `RNG`, a seed, or ``None``: the default).
            memory_budget: bytes one vectorised chunk may use (``None``:
                ``default_memory_budget(x.device)``); posteriors that need no chunking ignore it.

        Returns:
            ``[S, N, ...]``.
        """
        ...


@dataclass(frozen=True)
class Draws:
    """Posterior draws in the sample format of ``bnn``: every tensor ``(chain, draw, ...)``.

    Attributes:
        parameters: weight name -> ``[chain, draw, *shape]`` (names as in
            ``bnn.nn.layers.weight_space``).
        functions: function values at the requested inputs, ``[chain, draw, N, ...]``, drawn
            with the same weights (and, e.g., fresh dropout masks); ``None`` without inputs.
        sample_stats: per-draw sampler statistics ``[chain, draw]`` (divergences, step size,
            tree depth, acceptance, ...).
        is_mcmc: whether the chains are Markov chains (R-hat applies) or independent draws
            stored as one chain.
    """

    parameters: dict[str, Tensor]
    functions: Tensor | None = None
    sample_stats: dict[str, Tensor] = field(default_factory=dict)
    is_mcmc: bool = False


@runtime_checkable
class ParameterPosterior(Posterior, Protocol):
    """A posterior over a network's weights: function samples plus the weight draws behind them."""

    @property
    def model(self) -> nn.Module:
        """The network the weight draws belong to."""
        ...

    def sample_parameters(self, num_samples: int, *, rng: RNGLike = None) -> dict[str, Tensor]:
        """Weight draws: name -> ``[chain, draw, *shape]``."""
        ...

    def draws(
        self, num_samples: int | None = None, *, x: Tensor | None = None, rng: RNGLike = None
    ) -> Draws:
        """Weight draws (and function values at ``x`` from the same draws) for ArviZ.

        ``num_samples=None`` takes every stored draw of a sample set, or 100 fresh draws.
        """
        ...


@runtime_checkable
class CarriesLikelihood(Protocol):
    """A posterior that brings its own observation model."""

    @property
    def predictive_likelihood(self) -> Likelihood | None:
        """The likelihood that turns this posterior's samples into a prediction, if it has one."""
        ...


def check_batch(x: object, num_samples: object) -> None:
    """Validate the type and shape of a batch and a sample count (no pass over the values).

    Raises:
        TypeError: ``x`` is not a tensor.
        ValueError: an empty batch or a bad sample count.
    """
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}.")
    if x.dim() == 0 or x.shape[0] == 0:
        raise ValueError(f"x must be a non-empty batch [N, ...], got shape {tuple(x.shape)}.")
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples must be a positive int, got {num_samples!r}.")


def check_finite_batch(x: object, num_samples: object) -> None:
    """``check_batch`` plus finite values (a meta tensor has none to check)."""
    check_batch(x, num_samples)
    assert isinstance(x, Tensor)
    if x.device.type != "meta" and x.is_floating_point() and not bool(torch.isfinite(x).all()):
        raise ValueError("x contains NaN or inf; clean or impute the inputs first.")


def check_inputs(x: object, reference: Tensor | None, num_samples: object) -> None:
    """Validate a batch of inputs and a sample count where a posterior receives them.

    Raises:
        TypeError: ``x`` is not a tensor, or its floating dtype differs from ``reference``'s.
        ValueError: an empty batch, a bad sample count, another device, NaN or inf.
    """
    check_batch(x, num_samples)
    assert isinstance(x, Tensor)
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
    if x.device.type == "meta":
        raise ValueError("x is a meta tensor (a shape without values); pass real inputs.")
    if x.is_floating_point() and not bool(torch.isfinite(x).all()):
        raise ValueError("x contains NaN or inf; clean or impute the inputs first.")


def check_memory_budget(memory_budget: object, device: torch.device | str = "cpu") -> int:
    """``memory_budget`` as positive bytes (``None``: the default for inputs on ``device``)."""
    if memory_budget is None:
        return default_memory_budget(device)
    if isinstance(memory_budget, bool) or not isinstance(memory_budget, int) or memory_budget < 1:
        raise ValueError(f"memory_budget must be positive bytes, got {memory_budget!r}.")
    return memory_budget
