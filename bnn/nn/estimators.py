"""Gradient estimators for a module whose parameters have a diagonal Gaussian posterior.

Each estimator is written once, against a function ``call(params, x)`` that evaluates the
wrapped module with the given parameters (``torch.func.functional_call``), so it serves every
module type it applies to:

* ``reparam`` — sample one weight tensor per forward, ``w = loc + scale · ε``, shared by the whole
  batch (Kingma & Welling 2014; Blundell et al. 2015). Works for any module.
* ``local_reparam`` — sample the pre-activations instead of the weights (Kingma, Salimans &
  Welling 2015): for a module linear in its parameters, ``f(x; w)`` with independent Gaussian
  weights is Gaussian with mean ``f(x; loc)`` and variance ``f(x²; scale²)``. Independent noise
  per example: lower-variance gradients, two evaluations of the op.
* ``flipout`` — one weight perturbation ``Δw = scale · ε`` per batch, decorrelated across
  examples by random sign flips: ``f(x; loc) + s_out ⊙ f(x ⊙ s_in; Δw)`` (Wen et al. 2018).

``local_reparam`` and ``flipout`` need a module that is linear in its weights and bias jointly:
``nn.Linear``, ``nn.ConvNd`` and ``nn.ConvTransposeNd``. All randomness is drawn from the global
torch generator of the current device (through ``bnn.random.draws``); ``bnn`` runs these
inside an ``RNG.stream``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Literal

import torch
from torch import Tensor, nn
from torch.nn.modules.conv import _ConvNd

from bnn.random.draws import rademacher, standard_normal

__all__ = ["ESTIMATORS", "Estimator", "is_linear_in_weights", "sample_output"]

Estimator = Literal["reparam", "local_reparam", "flipout"]
ESTIMATORS: tuple[str, ...] = ("reparam", "local_reparam", "flipout")

Call = Callable[[Mapping[str, Tensor], Tensor], Tensor]


def is_linear_in_weights(module: nn.Module) -> bool:
    """Whether ``module``'s output is linear in its (weight, bias) jointly."""
    return isinstance(module, nn.Linear | _ConvNd)


def sample_output(
    estimator: str,
    module: nn.Module,
    call: Call,
    loc: Mapping[str, Tensor],
    scale: Mapping[str, Tensor],
    x: Tensor,
) -> Tensor:
    """One stochastic forward pass of ``module`` on ``x`` under the chosen estimator.

    Args:
        estimator: ``"reparam"``, ``"local_reparam"`` or ``"flipout"``.
        module: the wrapped module (used for its channel layout by flipout).
        call: ``call(params, x)`` evaluates the module with the given parameter tensors.
        loc: posterior means, by parameter name.
        scale: posterior standard deviations, by parameter name (same shapes as ``loc``).
        x: the input batch.

    Returns:
        The module's output for ``x``, shape as ``module(x)``.
    """
    if estimator == "reparam":
        weights = {name: torch.addcmul(m, scale[name], _normal_like(m)) for name, m in loc.items()}
        return call(weights, x)
    if estimator == "local_reparam":
        mean = call(loc, x)
        variance = call({name: s * s for name, s in scale.items()}, x * x)
        return torch.addcmul(
            mean, variance.clamp_min(torch.finfo(variance.dtype).tiny).sqrt(), _normal_like(mean)
        )
    if estimator == "flipout":
        mean = call(loc, x)
        perturbation = {name: s * _normal_like(s) for name, s in scale.items()}
        flipped = call(perturbation, x * _random_signs(x, module))
        return torch.addcmul(mean, flipped, _random_signs(flipped, module))
    raise ValueError(f"unknown estimator {estimator!r}; choose one of {ESTIMATORS}.")


def _random_signs(tensor: Tensor, module: nn.Module) -> Tensor:
    """Rademacher signs, one per example and channel, broadcast over spatial positions."""
    if isinstance(module, _ConvNd):
        spatial = len(module.kernel_size)
        keep = tensor.dim() - spatial
        shape = (*tensor.shape[:keep], *([1] * spatial))
    else:
        shape = tuple(tensor.shape)
    return rademacher(shape, dtype=tensor.dtype, device=tensor.device)


def _normal_like(tensor: Tensor) -> Tensor:
    return standard_normal(tensor.shape, dtype=tensor.dtype, device=tensor.device)
