"""The log joint density ``log p(w) + Σ_i log p(y_i | x_i, w)`` of a network, for samplers.

Built directly with ``torch.func.functional_call`` over the model's weight space (no Pyro
tracing per step), so one evaluation costs one forward pass plus a few elementwise ops.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.func import functional_call

from bnn.likelihoods import Gaussian, Likelihood
from bnn.nn.layers import weight_space
from bnn.nn.priors import Normal, Prior
from bnn.posterior._model_input import check_model_input
from bnn.random.rng import RNG

__all__ = ["LogJoint", "PriorSpec", "check_data", "check_deterministic", "check_start"]

PriorSpec = Prior | Callable[[str, Tensor], Prior] | None


def check_data(model: nn.Module, data: object) -> tuple[Tensor, Tensor]:
    """Validate ``data = (x, y)``: tensors, equal length, non-empty, finite, model's device;
    the model takes ``x`` (features, dtype) and returns one tensor (``check_model_input``).
    """
    if not isinstance(data, tuple | list) or len(data) != 2:
        raise TypeError(
            f"data must be a pair (x, y) of tensors, got {type(data).__name__}; pass (x, y)."
        )
    x, y = data
    if not isinstance(x, Tensor) or not isinstance(y, Tensor):
        raise TypeError(
            f"x and y must be torch.Tensors, got {type(x).__name__} and {type(y).__name__}; "
            "convert them with torch.as_tensor."
        )
    if x.dim() == 0 or x.shape[0] == 0:
        raise ValueError("x is empty: need at least one data point.")
    if y.dim() == 0 or x.shape[0] != y.shape[0]:
        raise ValueError(
            f"x has {x.shape[0]} rows but y has shape {tuple(y.shape)}; they must have the same "
            "number of rows."
        )
    reference = next(model.parameters(), None)
    if reference is not None and (x.device != reference.device or y.device != reference.device):
        raise ValueError(
            f"data on {x.device}/{y.device} but the model on {reference.device}; move them "
            "to the same device."
        )
    for name, tensor in (("x", x), ("y", y)):
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise ValueError(f"{name} contains NaN or inf; remove or impute those rows first.")
    if reference is not None and y.is_floating_point() and y.dtype != reference.dtype:
        y = y.to(reference.dtype)  # targets in the model's precision, as the loss sees them
    check_model_input(model, x)
    return x, y


def check_start(log_density: Tensor, gradient: Tensor, first_chain: int = 0) -> None:
    """Refuse chains that start where ``log p(w, D)`` or its gradient is NaN or infinite.

    A chain cannot leave such a point (every proposal from it diverges), so its draws would be
    the starting weights repeated. ``log_density`` is ``[C]`` (or a scalar: one chain),
    ``gradient`` ``[C, D]`` (or ``[D]``).

    Raises:
        ValueError: naming the chains, their log densities and what to do.
    """
    values = log_density.detach().reshape(-1)
    bad = ~torch.isfinite(values) | ~torch.isfinite(gradient.detach().reshape(len(values), -1)).all(
        -1
    )
    if bool(bad.any()):
        chains = [first_chain + int(i) for i in bad.nonzero().flatten()]
        raise ValueError(
            f"chain(s) {chains} start at weights where the log density is "
            f"{[float(v) for v in values[bad]]} or its gradient is not finite; no sampler can "
            "move from there. Start inside the region where the model's output is finite: "
            "init='current' with valid model weights, or a prior whose draws the model accepts."
        )


def check_deterministic(log_joint: LogJoint, x: Tensor, y: Tensor, method: str) -> None:
    """Refuse a model whose log density is random at fixed weights (dropout in training mode,
    an `MCDropout` wrapper, a noise layer): HMC and NUTS need the same value at the same point.

    Evaluates ``log p(w, D)`` twice at the model's current weights, without gradients; a
    deterministic model draws no random numbers here.

    Raises:
        ValueError: saying what to do.
    """
    vector = log_joint.flatten(log_joint.templates)
    prepared = log_joint.prepare(x, y)
    with torch.no_grad():
        first = log_joint.log_density_flat(vector, x, prepared)
        second = log_joint.log_density_flat(vector, x, prepared)
    if not torch.allclose(first, second, rtol=1e-5, atol=1e-5, equal_nan=True):
        raise ValueError(
            f"{method} needs a deterministic model, but two evaluations of the log density at "
            f"the same weights gave {float(first):.6g} and {float(second):.6g}: the model draws "
            "random numbers (dropout in training mode, an MCDropout wrapper, a noise layer). "
            "Call model.eval() (for MCDropout, sample the wrapped network), or use a "
            "stochastic-gradient sampler (bnn.infer.sgld / sghmc)."
        )


class LogJoint:
    """``log p(w) + scale · Σ_{i∈batch} log p(y_i | x_i, w)`` over the model's weight space.

    Args:
        model: any network (Bayesian layers contribute their weights and their priors).
        likelihood: observation model with fixed parameters.
        prior: one `Prior` for every weight, a function ``(name, template) -> Prior``, or
            ``None``: each Bayesian layer's own prior and ``Normal(0, 1)`` for plain weights.
    """

    def __init__(self, model: nn.Module, likelihood: Likelihood, prior: PriorSpec = None) -> None:
        if not isinstance(likelihood, Likelihood):
            raise TypeError(
                f"likelihood must be a bnn Likelihood, got {type(likelihood).__name__}."
            )
        if isinstance(likelihood, Gaussian) and likelihood.learn_std:
            raise ValueError(
                "samplers need a fixed observation noise: use bnn.Gaussian(std) with "
                "learn_std=False (e.g. the std learned by a VI or MAP fit)."
            )
        self.model = model
        self.likelihood = likelihood
        slots = weight_space(model)
        if not slots:
            raise ValueError("the model has no weights to sample.")
        self.templates = {name: slot.value for name, slot in slots.items()}
        self.priors = {
            name: _prior_for(prior, name, slot.value, slot.prior) for name, slot in slots.items()
        }
        self.sizes = [t.numel() for t in self.templates.values()]
        # Runs of consecutive weights sharing one prior are scored in one call on the flat vector.
        self._prior_runs = _runs([self.priors[name] for name in self.templates], self.sizes)

    def prepare(self, x: Tensor, y: Tensor) -> Tensor:
        """Check ``y`` against the model's output on ``x`` once; return it as the loop needs it."""
        with torch.no_grad():
            output = functional_call(self.model, self.templates, (x,))
        return self.likelihood.check_targets(output, y)

    def flatten(self, weights: dict[str, Tensor]) -> Tensor:
        """All weights as one vector (in weight-space order)."""
        return torch.cat([weights[name].reshape(-1) for name in self.templates])

    def unflatten(self, vector: Tensor) -> dict[str, Tensor]:
        """Views of ``vector`` as the model's weights (``[..., D]`` gives ``[..., *shape]``)."""
        pieces = torch.split(vector, self.sizes, dim=-1)
        return {
            name: piece.reshape((*vector.shape[:-1], *template.shape))  # 0-d weights too
            for (name, template), piece in zip(self.templates.items(), pieces, strict=True)
        }

    def log_density_flat(self, vector: Tensor, x: Tensor, y: Tensor, scale: float = 1.0) -> Tensor:
        """``log p(w) + scale · Σ log p(y | x, w)`` for flat weights, without input checks.

        ``y`` must come from ``prepare``. This is the inner-loop version used by samplers.
        """
        segments = torch.split(vector, [size for _, size in self._prior_runs])
        prior = sum(
            (
                p.log_prob(segment)
                for (p, _), segment in zip(self._prior_runs, segments, strict=True)
            ),
            torch.zeros((), dtype=vector.dtype, device=vector.device),
        )
        output = functional_call(self.model, self.unflatten(vector), (x,))
        return prior + scale * self.likelihood.log_density(output, y).sum()

    def log_prior(self, weights: dict[str, Tensor]) -> Tensor:
        return torch.stack([self.priors[name].log_prob(w) for name, w in weights.items()]).sum()

    def log_likelihood(self, weights: dict[str, Tensor], x: Tensor, y: Tensor) -> Tensor:
        output = functional_call(self.model, weights, (x,))
        return self.likelihood.log_prob(output, y).sum()

    def __call__(
        self, weights: dict[str, Tensor], x: Tensor, y: Tensor, scale: float = 1.0
    ) -> Tensor:
        return self.log_prior(weights) + scale * self.log_likelihood(weights, x, y)

    def initial_weights(self, init: str, rng: RNG) -> dict[str, Tensor]:
        """Starting point of a chain: ``"prior"`` (a prior draw) or ``"current"`` (the model's)."""
        if init == "current":
            return {name: t.clone() for name, t in self.templates.items()}
        if init == "prior":
            with rng.stream("init"):
                return {
                    name: self.priors[name].distribution(t).sample().to(t.dtype)
                    for name, t in self.templates.items()
                }
        raise ValueError(f"init must be 'prior' or 'current', got {init!r}.")


def _runs(priors: list[Prior], sizes: list[int]) -> list[tuple[Prior, int]]:
    runs: list[tuple[Prior, int]] = []
    for prior, size in zip(priors, sizes, strict=True):
        if runs and runs[-1][0] == prior:
            runs[-1] = (prior, runs[-1][1] + size)
        else:
            runs.append((prior, size))
    return runs


def _prior_for(spec: PriorSpec, name: str, template: Tensor, own: Prior | None) -> Prior:
    if spec is None:
        return own if own is not None else Normal()
    if isinstance(spec, Prior):
        return spec
    chosen = spec(name, template)
    if not isinstance(chosen, Prior):
        raise TypeError(f"prior({name!r}, ...) returned {type(chosen).__name__}, not a Prior.")
    return chosen
