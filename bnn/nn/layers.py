"""One Bayesian-parameter mechanism for every ``nn.Module``.

`BayesianModule` wraps any module with parameters. Each of the module's own parameters is
replaced by a `BayesianParameter`: a diagonal Gaussian posterior ``N(loc, softplus(rho)²)`` with a
prior. The forward pass samples (through an estimator of ``bnn.nn.estimators``) and calls the
wrapped module's own forward with those tensors via ``torch.func.functional_call``, so an
``nn.Linear``, a ``Conv2d``, an ``LSTM`` or a custom module all work the same way, and
``forward(x) -> Tensor`` keeps the module's signature.

The wrapped module's parameter slots stay registered, empty (``None``). When a caller fills them
(``functional_call(model, {"layer.module.weight": w}, x)``), the layer evaluates those weights
deterministically; this is how ``bnn.posterior`` evaluates many weight samples in one
``vmap``-ed call.

Randomness: a forward pass draws from the global torch generator of the weights' device. Inside
``bnn.fit`` and ``bnn.predict_with_uncertainty`` that generator is an ``RNG`` stream; call the
model yourself inside ``with rng.stream(...)`` for the same control.

Example:
    >>> layer = bnn.BayesLinear(3, 2, prior=bnn.nn.priors.Normal(0.0, 1.0))
    >>> layer(torch.randn(5, 3)).shape
    torch.Size([5, 2])
    >>> bnn.nn.kl_divergence(layer)  # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from bnn.nn._pending_kl import PendingKL, records_training_graph
from bnn.nn.estimators import ESTIMATORS, is_linear_in_weights, sample_output
from bnn.nn.priors import Normal, Prior
from bnn.random.draws import standard_normal

__all__ = [
    "BayesConv1d",
    "BayesConv2d",
    "BayesConv3d",
    "BayesConvTranspose2d",
    "BayesLinear",
    "BayesianModule",
    "BayesianParameter",
    "WeightSlot",
    "bayesian_modules",
    "kl_divergence",
    "posterior_mean",
    "weight_space",
]

DEFAULT_INIT_STD = 1e-3

FUSE_MIN_ELEMENTS = 1 << 14
"""Tensors at least this large compute their KL in the training forward pass (one fused pass
over the weights); smaller ones share one KL computation per prior in ``kl_divergence``, where
per-operation overhead, not arithmetic, is the cost."""


def inverse_softplus(value: Tensor) -> Tensor:
    """``rho`` with ``softplus(rho) = value`` (``value > 0``), stable for small and large values."""
    return value + torch.log(-torch.expm1(-value))


class BayesianParameter(nn.Module):
    """A diagonal Gaussian posterior ``N(loc, softplus(rho)²)`` over one tensor, with a prior.

    Args:
        loc: initial posterior mean (its shape is the parameter's shape).
        scale: initial posterior standard deviation, broadcastable to ``loc``; all > 0.
        prior: the prior over every element.
    """

    def __init__(self, loc: Tensor, scale: Tensor | float, prior: Prior) -> None:
        super().__init__()
        if not isinstance(prior, Prior):
            raise TypeError(f"prior must be a bnn.nn.priors.Prior, got {type(prior).__name__}.")
        scale_tensor = torch.as_tensor(scale, dtype=loc.dtype, device=loc.device)
        scale_tensor = scale_tensor.expand_as(loc)
        if not bool((scale_tensor > 0).all()) or not bool(torch.isfinite(scale_tensor).all()):
            raise ValueError("initial posterior scale must be positive and finite everywhere.")
        self.loc = nn.Parameter(loc.detach().clone())
        self.rho = nn.Parameter(inverse_softplus(scale_tensor.detach().clone()))
        self.prior = prior
        self._pending_kl: PendingKL | None = None

    @property
    def scale(self) -> Tensor:
        """Posterior standard deviation, ``softplus(rho)``."""
        return F.softplus(self.rho)

    def sample(self, sample_shape: torch.Size | tuple[int, ...] = ()) -> Tensor:
        """Draw ``loc + scale · ε``, shape ``(*sample_shape, *loc.shape)`` (global generator)."""
        noise = standard_normal(
            (*sample_shape, *self.loc.shape), dtype=self.loc.dtype, device=self.loc.device
        )
        return self.loc + self.scale * noise

    def training_scale(self) -> Tensor:
        """``softplus(rho)`` for a training forward pass, its KL computed in the same pass.

        Where the prior fuses the two (``Normal``) and autograd records the pass, the KL is
        kept for the next ``kl()`` call, which then costs nothing and whose gradient joins the
        scale's in one backward pass. It is used only while ``loc`` and ``rho`` are unchanged
        and no backward pass has gone through this forward; otherwise ``kl()`` computes afresh.
        """
        self._pending_kl = None
        if self.loc.numel() < FUSE_MIN_ELEMENTS or not records_training_graph(self.loc, self.rho):
            return self.scale
        scale, kl = self.prior.scale_and_kl(self.loc, self.rho)
        if kl is not None:
            self._pending_kl = PendingKL.keep(kl, scale, self.loc, self.rho)
        return scale

    def _take_pending_kl(self) -> Tensor | None:
        pending, self._pending_kl = self._pending_kl, None
        return None if pending is None else pending.take(self.loc, self.rho)

    def kl(self, num_samples: int = 1) -> Tensor:
        """``KL(q ‖ prior)`` summed over elements: closed form, or a Monte Carlo estimate."""
        pending = self._take_pending_kl()
        if pending is not None:
            return pending
        closed_form = self.prior.kl_sum_from_softplus(self.loc, self.rho)
        if closed_form is not None:
            return closed_form
        loc, scale = self.loc, self.scale
        weights = self.sample((num_samples,))
        log_q: Tensor = torch.distributions.Normal(loc, scale).log_prob(weights)  # type: ignore[no-untyped-call]
        log_p: Tensor = self.prior.distribution(loc).log_prob(weights)
        return (log_q - log_p).sum() / num_samples

    def extra_repr(self) -> str:
        return f"shape={tuple(self.loc.shape)}, prior={self.prior}"


_PLAIN_CONVOLUTIONS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


class BayesianModule(nn.Module):
    """Make every parameter of ``module`` Bayesian; forward samples and calls ``module``.

    Args:
        module: any module with parameters of its own (its children are left alone).
        prior: prior for all of its parameters (default ``Normal(0, 1)``).
        estimator: ``"reparam"`` (any module), ``"local_reparam"`` or ``"flipout"`` (modules
            linear in their weights: Linear, ConvNd, ConvTransposeNd).
        init_std: initial posterior standard deviation (float or a tensor per parameter name);
            the posterior means start at the module's current parameter values.

    Shapes: as the wrapped module: ``forward(x)`` returns ``module(x)``'s shape.

    Example:
        >>> layer = bnn.nn.BayesianModule(nn.Conv2d(3, 8, 3), estimator="flipout")
        >>> layer(torch.randn(2, 3, 16, 16)).shape
        torch.Size([2, 8, 14, 14])
    """

    def __init__(
        self,
        module: nn.Module,
        *,
        prior: Prior | None = None,
        estimator: str = "reparam",
        init_std: float | Mapping[str, Tensor] = DEFAULT_INIT_STD,
    ) -> None:
        super().__init__()
        if not isinstance(module, nn.Module):
            raise TypeError(f"module must be an nn.Module, got {type(module).__name__}.")
        if isinstance(module, BayesianModule):
            raise TypeError("module is already a BayesianModule.")
        check_estimator(estimator, module)
        own = dict(module.named_parameters(recurse=False))
        if not own:
            raise ValueError(
                f"{type(module).__name__} has no parameters of its own to make Bayesian; wrap "
                "the modules that hold parameters (bnn.bayesianize does this for a whole model)."
            )
        prior = Normal() if prior is None else prior
        self.estimator = estimator
        self.posterior = nn.ModuleDict()
        for name, parameter in own.items():
            std = init_std[name] if isinstance(init_std, Mapping) else init_std
            self.posterior[name] = BayesianParameter(parameter.detach(), std, prior)
            module.register_parameter(name, None)
        self.module = module
        self.use_mean = False

    def bayesian_parameters(self) -> dict[str, BayesianParameter]:
        """The posterior of each wrapped parameter, by the wrapped module's parameter name."""
        return {name: cast(BayesianParameter, p) for name, p in self.posterior.items()}

    def _call(self, params: Mapping[str, Tensor], x: Tensor) -> Tensor:
        module = self.module
        if type(module) is nn.Linear:  # the same computation without functional_call's overhead
            return F.linear(x, params["weight"], params.get("bias"))
        if type(module) in _PLAIN_CONVOLUTIONS:
            conv = cast(nn.Conv2d, module)  # Conv1d/2d/3d share _conv_forward's signature
            output: Tensor = conv._conv_forward(x, params["weight"], params.get("bias"))
            return output
        return functional_call(module, dict(params), (x,))  # type: ignore[no-any-return]

    def forward(self, x: Tensor) -> Tensor:
        if all(getattr(self.module, name) is not None for name in self.posterior):
            return self.module(x)  # type: ignore[no-any-return]  # weights supplied by caller
        posterior = self.bayesian_parameters()
        loc = {name: p.loc for name, p in posterior.items()}
        if self.use_mean:
            return self._call(loc, x)
        scale = {name: p.training_scale() for name, p in posterior.items()}
        return sample_output(self.estimator, self.module, self._call, loc, scale, x)

    def kl(self, num_samples: int = 1) -> Tensor:
        """KL divergence of this module's posterior from its prior (a scalar)."""
        return torch.stack([p.kl(num_samples) for p in self.bayesian_parameters().values()]).sum()

    def extra_repr(self) -> str:
        return f"estimator={self.estimator!r}"


def check_estimator(estimator: object, module: nn.Module) -> None:
    """Raise a clear error if ``estimator`` is unknown or does not apply to ``module``."""
    if estimator not in ESTIMATORS:
        raise ValueError(f"unknown estimator {estimator!r}; choose one of {ESTIMATORS}.")
    if estimator != "reparam" and not is_linear_in_weights(module):
        raise ValueError(
            f"estimator {estimator!r} needs a module linear in its weights (Linear, ConvNd, "
            f"ConvTransposeNd); {type(module).__name__} is not. Use estimator='reparam' for it."
        )


def _drop_in(base: type[nn.Module], name: str) -> type[BayesianModule]:
    """A constructor-compatible Bayesian version of ``base`` (``BayesLinear(3, 2)`` etc.)."""

    def __init__(  # noqa: N807 - becomes the class's __init__
        self: BayesianModule,
        *args: Any,
        prior: Prior | None = None,
        estimator: str = "reparam",
        init_std: float = DEFAULT_INIT_STD,
        **kwargs: Any,
    ) -> None:
        BayesianModule.__init__(
            self, base(*args, **kwargs), prior=prior, estimator=estimator, init_std=init_std
        )

    doc = (
        f"Bayesian ``nn.{base.__name__}``: takes ``nn.{base.__name__}``'s arguments plus "
        "``prior``, ``estimator`` and ``init_std`` (see ``BayesianModule``). Posterior means "
        f"start at ``nn.{base.__name__}``'s own initialisation (global torch generator: construct "
        "inside ``rng.stream('init')`` to control it)."
    )
    return type(name, (BayesianModule,), {"__init__": __init__, "__doc__": doc})


BayesLinear = _drop_in(nn.Linear, "BayesLinear")
"""Bayesian ``nn.Linear``: its arguments plus ``prior``, ``estimator`` and ``init_std``."""
BayesConv1d = _drop_in(nn.Conv1d, "BayesConv1d")
"""Bayesian ``nn.Conv1d``: its arguments plus ``prior``, ``estimator`` and ``init_std``."""
BayesConv2d = _drop_in(nn.Conv2d, "BayesConv2d")
"""Bayesian ``nn.Conv2d``: its arguments plus ``prior``, ``estimator`` and ``init_std``."""
BayesConv3d = _drop_in(nn.Conv3d, "BayesConv3d")
"""Bayesian ``nn.Conv3d``: its arguments plus ``prior``, ``estimator`` and ``init_std``."""
BayesConvTranspose2d = _drop_in(nn.ConvTranspose2d, "BayesConvTranspose2d")
"""Bayesian ``nn.ConvTranspose2d``: its arguments plus ``prior``, ``estimator``, ``init_std``."""


def bayesian_modules(model: nn.Module) -> Iterator[tuple[str, BayesianModule]]:
    """All `BayesianModule`s in ``model`` with their qualified names."""
    for name, module in model.named_modules():
        if isinstance(module, BayesianModule):
            yield name, module


def kl_divergence(model: nn.Module, *, num_samples: int = 1) -> Tensor:
    """Sum of ``KL(q ‖ prior)`` over every Bayesian parameter in ``model``.

    Closed form for Gaussian and Laplace priors; a Monte Carlo estimate with ``num_samples``
    draws (global generator) for priors without one (scale mixture).

    Returns:
        A scalar tensor; ``0`` for a model without Bayesian layers.
    """
    if not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"num_samples must be a positive int, got {num_samples!r}.")
    terms: list[Tensor] = []
    small: dict[tuple[Prior, torch.dtype, torch.device], list[BayesianParameter]] = {}
    for _, module in bayesian_modules(model):
        for posterior in module.bayesian_parameters().values():
            kept = posterior._take_pending_kl()
            if kept is not None:
                terms.append(kept)
            elif posterior.loc.numel() < FUSE_MIN_ELEMENTS:
                key = (posterior.prior, posterior.loc.dtype, posterior.loc.device)
                small.setdefault(key, []).append(posterior)
            else:
                terms.append(posterior.kl(num_samples))
    terms += [_joint_kl(group, num_samples) for group in small.values()]
    if not terms:
        first = next(model.parameters(), None)
        return torch.zeros((), device=first.device if first is not None else None)
    return torch.stack(terms).sum()


def _joint_kl(group: list[BayesianParameter], num_samples: int) -> Tensor:
    """The KL of small tensors under one prior as one computation over their concatenation.

    On networks of a few thousand weights, the cost of a step is per-operation overhead, not
    arithmetic: one closed-form KL over all of them instead of one per tensor.
    """
    if len(group) == 1:
        return group[0].kl(num_samples)
    loc = torch.cat([parameter.loc.reshape(-1) for parameter in group])
    rho = torch.cat([parameter.rho.reshape(-1) for parameter in group])
    closed_form = group[0].prior.kl_sum_from_softplus(loc, rho)
    if closed_form is None:
        return torch.stack([parameter.kl(num_samples) for parameter in group]).sum()
    return closed_form


@contextlib.contextmanager
def posterior_mean(model: nn.Module) -> Iterator[nn.Module]:
    """Evaluate every Bayesian layer of ``model`` at its posterior mean inside the block."""
    modules = [module for _, module in bayesian_modules(model)]
    previous = [module.use_mean for module in modules]
    for module in modules:
        module.use_mean = True
    try:
        yield model
    finally:
        for module, flag in zip(modules, previous, strict=True):
            module.use_mean = flag


@dataclass(frozen=True)
class WeightSlot:
    """One tensor a sampler can draw: its current value (template) and its layer's prior."""

    value: Tensor
    prior: Prior | None


def weight_space(model: nn.Module) -> dict[str, WeightSlot]:
    """Every weight tensor of ``model`` that samplers and ``functional_call`` can fill, by name.

    Plain parameters appear under their ``named_parameters()`` names with ``prior=None``; each
    Bayesian parameter appears as its wrapped slot ``"<layer>.module.<name>"`` with the posterior
    mean as template and the layer's prior. Filling every slot of a Bayesian layer makes it
    deterministic (see ``BayesianModule``).
    """
    slots: dict[str, WeightSlot] = {}
    bayesian_names = set()
    for path, layer in bayesian_modules(model):
        prefix = f"{path}." if path else ""
        for name, posterior in layer.bayesian_parameters().items():
            slots[f"{prefix}module.{name}"] = WeightSlot(posterior.loc.detach(), posterior.prior)
            bayesian_names.update(
                {f"{prefix}posterior.{name}.loc", f"{prefix}posterior.{name}.rho"}
            )
    for name, parameter in model.named_parameters():
        if name not in bayesian_names:
            slots[name] = WeightSlot(parameter.detach(), None)
    return slots
