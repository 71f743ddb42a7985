"""`SampleSet`: stacked parameter samples ``(chain, draw, ...)`` evaluated in one ``vmap``.

The sample format of ``bnn`` everywhere: ``dict[str, Tensor]`` keyed by the model's parameter
names (as in ``model.named_parameters()``), each shaped ``(chain, draw, *parameter_shape)``.
MCMC (NUTS/HMC), SG-MCMC and draws from a variational guide all end here, so prediction and
diagnostics treat them alike.

Example:
    >>> samples, _ = bnn.infer.nuts(net, (x, y), likelihood=bnn.Gaussian(0.1), num_chains=4)
    >>> prediction = bnn.predict_with_uncertainty(samples, x_test, likelihood=bnn.Gaussian(0.1))
    >>> samples.save("posterior.pt"); same = bnn.SampleSet.load("posterior.pt", net)
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from bnn._io import load_versioned, save_atomically
from bnn.nn.layers import weight_space
from bnn.posterior._evaluate import evaluate_parameter_samples_chunked
from bnn.posterior.protocol import Draws, check_inputs, check_memory_budget
from bnn.random.default import RNGLike, resolve_rng

__all__ = ["SampleSet"]

FORMAT = "bnn.SampleSet"
FORMAT_VERSION = 1


class SampleSet:
    """Posterior samples of a model's parameters: a `bnn.posterior.ParameterPosterior`.

    Args:
        model: the network the samples belong to. Parameters without samples keep their
            current values.
        samples: weight name -> ``[chain, draw, *shape]``; names as in
            ``bnn.nn.layers.weight_space`` (``named_parameters()`` names for plain layers,
            ``"<layer>.module.weight"`` for Bayesian layers).
        sample_stats: optional per-draw statistics -> ``[chain, draw]`` (divergences, step size,
            tree depth, acceptance, ...).
        is_mcmc: ``True`` for real Markov chains (R-hat is meaningful); ``False`` for
            independent draws (a variational guide), stored as one chain.

    Raises:
        ValueError: empty samples, names that are not parameters of ``model``, shapes that do
            not match, inconsistent ``(chain, draw)`` dims, or non-finite values.
    """

    def __init__(
        self,
        model: nn.Module,
        samples: Mapping[str, Tensor],
        *,
        sample_stats: Mapping[str, Tensor] | None = None,
        is_mcmc: bool = True,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}.")
        self.model = model
        self.samples = _checked_samples(model, samples)
        first = next(iter(self.samples.values()))
        self.num_chains, self.num_draws = int(first.shape[0]), int(first.shape[1])
        self.sample_stats = {
            name: _checked_stat(name, value, (self.num_chains, self.num_draws))
            for name, value in (sample_stats or {}).items()
        }
        self.is_mcmc = is_mcmc

    def __repr__(self) -> str:
        return (
            f"SampleSet(chains={self.num_chains}, draws={self.num_draws}, "
            f"parameters={list(self.samples)}, is_mcmc={self.is_mcmc})"
        )

    @property
    def num_samples(self) -> int:
        """Total draws ``chain × draw``."""
        return self.num_chains * self.num_draws

    def flat(self) -> dict[str, Tensor]:
        """Samples with chains concatenated: name -> ``[chain·draw, *shape]``."""
        return {k: v.reshape(self.num_samples, *v.shape[2:]) for k, v in self.samples.items()}

    # ------------------------------------------------------------------ Posterior protocol
    def sample_functions(
        self,
        x: Tensor,
        num_samples: int,
        *,
        rng: RNGLike = None,
        memory_budget: int | None = None,
    ) -> Tensor:
        """Function values at ``x`` for at most ``num_samples`` draws: ``[S, N, ...]``.

        If ``num_samples`` is at least the number of stored draws, every draw is used in order
        (``S = chain·draw``); otherwise a uniformly random subset without replacement, drawn
        from the ``"predict"`` generator of ``rng``. Evaluated in chunks of at most
        ``memory_budget`` bytes.
        """
        reference = next(iter(self.samples.values()))
        check_inputs(x, reference, num_samples)
        budget = check_memory_budget(memory_budget, x.device)
        parameters = self.flat()
        if num_samples < self.num_samples:
            generator = resolve_rng(rng).torch_generator("predict")
            chosen = torch.randperm(self.num_samples, generator=generator)[:num_samples]
            index = chosen.sort().values.to(reference.device)
            parameters = {k: v.index_select(0, index) for k, v in parameters.items()}
        return evaluate_parameter_samples_chunked(self.model, parameters, x, budget)

    def sample_parameters(
        self,
        num_samples: int,  # noqa: ARG002 - stored draws: all of them, in order
        *,
        rng: RNGLike = None,  # noqa: ARG002
    ) -> dict[str, Tensor]:
        """Every stored draw: name -> ``[chain, draw, *shape]`` (``num_samples`` is not used)."""
        return dict(self.samples)

    def draws(
        self,
        num_samples: int | None = None,  # noqa: ARG002 - stored draws: all of them
        *,
        x: Tensor | None = None,
        rng: RNGLike = None,  # noqa: ARG002
    ) -> Draws:
        """All stored draws with their sample stats; ``f`` at ``x`` is ``[chain, draw, N, ...]``."""
        functions = None
        if x is not None:
            flat = self.sample_functions(x, self.num_samples)
            functions = flat.reshape(self.num_chains, self.num_draws, *flat.shape[1:])
        return Draws(
            parameters=dict(self.samples),
            functions=functions,
            sample_stats=dict(self.sample_stats),
            is_mcmc=self.is_mcmc,
        )

    # ------------------------------------------------------------------ selection
    def thin(self, every: int) -> SampleSet:
        """Keep every ``every``-th draw of each chain."""
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be a positive int, got {every!r}.")
        return self.select(draws=slice(None, None, every))

    def select(self, *, chains: list[int] | None = None, draws: slice | None = None) -> SampleSet:
        """A new `SampleSet` with the given chains and draw slice (e.g. dropping burn-in)."""
        chain_index = slice(None) if chains is None else list(chains)
        draw_index = slice(None) if draws is None else draws

        def pick(value: Tensor) -> Tensor:
            return value[chain_index][:, draw_index]

        picked = {k: pick(v) for k, v in self.samples.items()}
        if next(iter(picked.values())).shape[1] == 0:
            raise ValueError("the selection keeps no draws.")
        return SampleSet(
            self.model,
            picked,
            sample_stats={k: pick(v) for k, v in self.sample_stats.items()},
            is_mcmc=self.is_mcmc,
        )

    # ------------------------------------------------------------------ persistence
    def state_dict(self) -> dict[str, Any]:
        """Tensors, strings and numbers only (loads with ``torch.load(weights_only=True)``)."""
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "samples": {k: v.detach().cpu() for k, v in self.samples.items()},
            "sample_stats": {k: v.detach().cpu() for k, v in self.sample_stats.items()},
            "is_mcmc": self.is_mcmc,
        }

    def save(self, path: str | Path) -> None:
        """Write the samples (tensors only, with a format version) to ``path``, atomically.

        An interrupted save leaves an existing file at ``path`` as it was.
        """
        save_atomically(self.state_dict(), path)

    @classmethod
    def load(cls, path: str | Path, model: nn.Module) -> SampleSet:
        """Read samples saved by ``save`` for ``model``; no pickled code is executed.

        Tensors are placed on the device of ``model``'s parameters.
        """
        state = load_versioned(
            path, "SampleSet", FORMAT_VERSION, required=("samples", "sample_stats", "is_mcmc")
        )
        reference = next(model.parameters(), None)
        device = reference.device if reference is not None else torch.device("cpu")
        try:
            return cls(
                model,
                {k: v.to(device) for k, v in state["samples"].items()},
                sample_stats={k: v.to(device) for k, v in state["sample_stats"].items()},
                is_mcmc=bool(state["is_mcmc"]),
            )
        except (ValueError, TypeError, AttributeError) as error:
            raise ValueError(
                f"{path} does not hold samples of this model: {error} Pass the model the "
                "samples were drawn for."
            ) from error


def _checked_samples(model: nn.Module, samples: Mapping[str, Tensor]) -> dict[str, Tensor]:
    if not isinstance(samples, Mapping) or not samples:
        raise ValueError("samples must be a non-empty dict of parameter name -> tensor.")
    parameters = {name: slot.value for name, slot in weight_space(model).items()}
    checked: dict[str, Tensor] = {}
    leading: tuple[int, ...] | None = None
    for name, value in samples.items():
        if name not in parameters:
            raise ValueError(
                f"{name!r} is not a parameter of the model; parameters are {sorted(parameters)}."
            )
        if not isinstance(value, Tensor) or value.dim() < 2:
            raise ValueError(f"samples[{name!r}] must be a tensor shaped (chain, draw, ...).")
        if tuple(value.shape[2:]) != tuple(parameters[name].shape):
            raise ValueError(
                f"samples[{name!r}] has parameter shape {tuple(value.shape[2:])}, the model's "
                f"parameter is {tuple(parameters[name].shape)}."
            )
        if leading is None:
            leading = tuple(value.shape[:2])
        elif tuple(value.shape[:2]) != leading:
            raise ValueError(
                f"samples[{name!r}] has (chain, draw) = {tuple(value.shape[:2])}, others {leading}."
            )
        if 0 in value.shape[:2]:
            raise ValueError("samples are empty: need at least one chain and one draw.")
        if not bool(torch.isfinite(value).all()):
            raise ValueError(f"samples[{name!r}] contains NaN or inf.")
        checked[name] = value.detach()
    return checked


def _checked_stat(name: str, value: Tensor, leading: tuple[int, int]) -> Tensor:
    if not isinstance(value, Tensor) or tuple(value.shape[:2]) != leading:
        raise ValueError(f"sample_stats[{name!r}] must be a tensor shaped {leading}.")
    return value.detach()
