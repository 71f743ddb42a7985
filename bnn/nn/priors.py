"""Weight priors and their KL divergence from a diagonal Gaussian posterior.

A prior is a small immutable object that builds a ``torch.distributions.Distribution`` on the
device and dtype of the weights it governs, and knows the KL divergence
``KL(N(loc, scale²) ‖ prior)`` in closed form where one exists (``Normal``, ``Laplace``); the
scale mixture of Blundell et al. (2015) has none and is handled by Monte Carlo in
``bnn.nn.kl_divergence``.

Example:
    >>> prior = bnn.nn.priors.Normal(0.0, 1.0)
    >>> prior.distribution(torch.zeros(3, 2)).log_prob(torch.zeros(3, 2)).shape
    torch.Size([3, 2])
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch import distributions as td

__all__ = ["Laplace", "Normal", "Prior", "ScaleMixture"]


def _check_positive(name: str, value: float) -> None:
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}.")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {value}.")


def _check_finite(name: str, value: float) -> None:
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}.")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}.")


class Prior:
    """Base class: an i.i.d. prior over every element of a weight tensor."""

    def distribution(self, like: Tensor) -> td.Distribution:
        """The prior as a distribution with ``like``'s shape, device and dtype."""
        raise NotImplementedError

    def log_prob(self, value: Tensor) -> Tensor:
        """Log density summed over all elements of ``value`` (a scalar; fast, no validation)."""
        return self.distribution(value).log_prob(value).sum()

    def kl_from_normal(self, loc: Tensor, scale: Tensor) -> Tensor | None:  # noqa: ARG002
        """Elementwise ``KL(N(loc, scale²) ‖ prior)``, or ``None`` if no closed form exists."""
        return None

    def kl_sum_from_softplus(self, loc: Tensor, rho: Tensor) -> Tensor | None:
        """``Σ KL(N(loc, softplus(rho)²) ‖ prior)`` (a scalar), or ``None`` without closed form.

        The training loop's form of the KL: subclasses may fuse it (see ``Normal``).
        """
        elementwise = self.kl_from_normal(loc, F.softplus(rho))
        return None if elementwise is None else elementwise.sum()

    def scale_and_kl(self, loc: Tensor, rho: Tensor) -> tuple[Tensor, Tensor | None]:  # noqa: ARG002
        """``softplus(rho)`` and, where this prior fuses the two, ``Σ KL`` from the same pass.

        A training forward needs the posterior scale and, for the loss, the KL; a prior that
        computes both in one pass (``Normal``) returns the KL too, others ``None``.
        """
        return F.softplus(rho), None


@dataclass(frozen=True)
class Normal(Prior):
    """Gaussian prior ``N(loc, std²)``; MAP training with it is L2 weight decay ``1/(2 std² N)``.

    Args:
        loc: prior mean.
        std: prior standard deviation (> 0).
    """

    loc: float = 0.0
    std: float = 1.0

    def __post_init__(self) -> None:
        _check_finite("Normal prior loc", self.loc)
        _check_positive("Normal prior std", self.std)

    def distribution(self, like: Tensor) -> td.Distribution:
        loc = torch.full_like(like, self.loc)
        return td.Normal(loc, torch.full_like(like, self.std))

    def log_prob(self, value: Tensor) -> Tensor:
        standardised = (value - self.loc) / self.std
        constant = value.numel() * (math.log(self.std) + 0.5 * math.log(2 * math.pi))
        return -0.5 * (standardised * standardised).sum() - constant

    def kl_from_normal(self, loc: Tensor, scale: Tensor) -> Tensor:
        # KL(N(m, s²) ‖ N(m0, s0²)) = log(s0/s) + (s² + (m - m0)²) / (2 s0²) - 1/2
        variance_ratio = (scale / self.std) ** 2
        mean_term = ((loc - self.loc) / self.std) ** 2
        return 0.5 * (variance_ratio + mean_term - 1.0 - torch.log(variance_ratio))

    def kl_sum_from_softplus(self, loc: Tensor, rho: Tensor) -> Tensor:
        kl, _ = _NormalKL.apply(loc, rho, self.loc, self.std)  # type: ignore[no-untyped-call]
        return kl  # type: ignore[no-any-return]

    def scale_and_kl(self, loc: Tensor, rho: Tensor) -> tuple[Tensor, Tensor]:
        kl, scale = _NormalKL.apply(loc, rho, self.loc, self.std)  # type: ignore[no-untyped-call]
        return scale, kl


def _squared_norm(tensor: Tensor) -> Tensor:
    norm: Tensor = torch.linalg.vector_norm(tensor)
    return norm.square()


class _NormalKL(torch.autograd.Function):
    """``(Σ KL(N(m, s²) ‖ N(m0, s0²)), s)`` with ``s = softplus(ρ)``; the gradient in closed form.

    ``∂KL/∂m = (m - m0)/s0²`` and ``∂KL/∂ρ = (s/s0² - 1/s) · sigmoid(ρ)``, and the gradient that
    reaches ``s`` from the forward pass that sampled with it joins the same pass,
    ``∂/∂ρ = (g_s + s·g/s0² - g/s) · sigmoid(ρ)``: one softplus, one sigmoid and no separate
    accumulation per step instead of autograd through two elementwise formulas (this runs on
    every training step, on tensors as large as the network).
    """

    generate_vmap_rule = True

    @staticmethod
    def forward(
        loc: Tensor, rho: Tensor, prior_loc: float, prior_std: float
    ) -> tuple[Tensor, Tensor]:
        scale = F.softplus(rho)
        centred = loc - prior_loc if prior_loc else loc
        # Squared norms in one pass each, without materialising the squares.
        total = (_squared_norm(scale) + _squared_norm(centred)) / (prior_std * prior_std)
        log_scale_sum = torch.log(scale).sum()
        constant = loc.numel() * (2.0 * math.log(prior_std) - 1.0)
        return 0.5 * (total + constant) - log_scale_sum, scale

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[Tensor, Tensor]) -> None:
        loc, rho, prior_loc, prior_std = inputs
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(loc, rho, output[1])
        ctx.prior_loc, ctx.prior_std = prior_loc, prior_std

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(
        ctx: Any, grad: Tensor | None, grad_scale: Tensor | None
    ) -> tuple[Tensor | None, Tensor | None, None, None]:
        loc, rho, scale = ctx.saved_tensors
        grad_loc = grad_rho = None
        if grad is None:  # only the scale was used
            if ctx.needs_input_grad[1] and grad_scale is not None:
                grad_rho = grad_scale * torch.sigmoid(rho)
            return None, grad_rho, None, None
        factor = grad / (ctx.prior_std * ctx.prior_std)
        if ctx.needs_input_grad[0]:
            grad_loc = (loc - ctx.prior_loc if ctx.prior_loc else loc) * factor
        if ctx.needs_input_grad[1]:
            # out of place where `grad` may be batched alone by torch.func transforms
            if grad_scale is None:
                grad_rho = (scale * factor - grad / scale) * torch.sigmoid(rho)
            else:
                grad_rho = torch.addcmul(grad_scale, scale, factor)
                grad_rho = grad_rho.addcdiv_(grad.expand_as(scale), scale, value=-1.0)
                grad_rho = grad_rho.mul_(torch.sigmoid(rho))
        return grad_loc, grad_rho, None, None


@dataclass(frozen=True)
class Laplace(Prior):
    """Laplace prior with density ``exp(-|w - loc| / scale) / (2 scale)`` (L1 penalty).

    Args:
        loc: location.
        scale: scale ``b`` (> 0); the variance is ``2 b²``.
    """

    loc: float = 0.0
    scale: float = 1.0

    def __post_init__(self) -> None:
        _check_finite("Laplace prior loc", self.loc)
        _check_positive("Laplace prior scale", self.scale)

    def distribution(self, like: Tensor) -> td.Distribution:
        return td.Laplace(torch.full_like(like, self.loc), torch.full_like(like, self.scale))

    def log_prob(self, value: Tensor) -> Tensor:
        constant = value.numel() * math.log(2 * self.scale)
        return -(value - self.loc).abs().sum() / self.scale - constant

    def kl_from_normal(self, loc: Tensor, scale: Tensor) -> Tensor:
        # KL = -H[N(m, s²)] + log(2b) + E|w - loc| / b, with the folded-normal mean
        # E|X| = s sqrt(2/pi) exp(-d²/(2s²)) + d (1 - 2 Phi(-d/s)),  d = m - loc.
        offset = loc - self.loc
        standardised = offset / scale
        folded_mean = scale * math.sqrt(2.0 / math.pi) * torch.exp(
            -0.5 * standardised**2
        ) + offset * torch.erf(standardised / math.sqrt(2.0))
        negative_entropy = -0.5 * torch.log(2.0 * math.pi * math.e * scale**2)
        return negative_entropy + math.log(2.0 * self.scale) + folded_mean / self.scale


@dataclass(frozen=True)
class ScaleMixture(Prior):
    """Scale mixture of two zero-mean Gaussians (Blundell et al., 2015, "Weight Uncertainty").

    ``p(w) = pi N(0, std1²) + (1 - pi) N(0, std2²)``, typically ``std1 > std2`` so that a
    heavy component lets weights grow while the narrow one pulls most of them to zero.
    No closed-form KL: ``bnn.nn.kl_divergence`` estimates it by Monte Carlo.

    Args:
        pi: weight of the first component, in (0, 1).
        std1: standard deviation of the first component.
        std2: standard deviation of the second component.
    """

    pi: float = 0.5
    std1: float = 1.0
    std2: float = math.exp(-6.0)

    def __post_init__(self) -> None:
        _check_finite("ScaleMixture pi", self.pi)
        if not 0.0 < self.pi < 1.0:
            raise ValueError(f"ScaleMixture pi must be in (0, 1), got {self.pi}.")
        _check_positive("ScaleMixture std1", self.std1)
        _check_positive("ScaleMixture std2", self.std2)

    def log_prob(self, value: Tensor) -> Tensor:
        log_weights = (math.log(self.pi), math.log1p(-self.pi))
        components = [
            log_weight - 0.5 * (value / std) ** 2 - math.log(std) - 0.5 * math.log(2 * math.pi)
            for log_weight, std in zip(log_weights, (self.std1, self.std2), strict=True)
        ]
        return torch.logaddexp(*components).sum()

    def distribution(self, like: Tensor) -> td.Distribution:
        mixing = td.Categorical(
            probs=torch.tensor([self.pi, 1.0 - self.pi], device=like.device, dtype=like.dtype)
            .expand(*like.shape, 2)
            .contiguous()
        )
        stds = torch.tensor([self.std1, self.std2], device=like.device, dtype=like.dtype)
        components = td.Normal(torch.zeros_like(like).unsqueeze(-1), stds.expand(*like.shape, 2))
        return td.MixtureSameFamily(mixing, components)
