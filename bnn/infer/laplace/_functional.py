"""``J Σ Jᵀ`` of the linearised predictive from per-layer factors, never a per-input Jacobian.

For a layer ``s = W̃ ã`` (``nn.Linear``; ``W̃ = [W, b]`` ``[out, in']``) the Jacobian of output
``c`` with respect to ``W̃`` is the outer product ``g_c ãᵀ`` of the output Jacobian
``g_c = ∂f_c/∂s`` ``[out]`` and the layer input ``ã`` ``[in']``. With a Kronecker-factored
block ``Σ = (Q_G ⊗ Q_A) diag(1/E) (Q_G ⊗ Q_A)ᵀ`` (``E[o, i] = s·g_o a_i + δ``, see
`bnn.posterior._covariance.KroneckerBlock`) the layer's share of ``J Σ Jᵀ`` is

    ``Σ_o ĝ_co ĝ_do Σ_i â_i² / E[o, i]``,  ``ĝ = g Q_G``, ``â = ã Q_A``,

``O(in'·out + C·out² + C²·out)`` per input instead of the ``C · out · in'`` entries of the
layer's Jacobian and its two rotations; a diagonal ``Σ`` (variances ``V[o, i]``) gives the same
with ``Q = I`` and ``1/E = V``. A convolution (KFAC-expand; patches ``ã_r`` at its ``R``
output locations) has ``J_c = Σ_r g_{c,r} ã_rᵀ``, so its rotated Jacobian ``ĝ_cᵀ Â``
``[out, in']`` is formed per input — ``R`` times cheaper than the per-location sum it replaces
— and weighed by ``1/E`` (or ``V``).

The output Jacobians come from `bnn.infer.laplace._curvature.layer_jacobians` (the same
per-layer ``torch.func`` pass as the KFAC curvature), a block of inputs at a time under the
memory budget. `LaplacePosterior` uses this for ``hessian="kron"`` and for ``hessian="diag"``
on whole ``nn.Linear`` / convolution layers; anything else takes the per-input Jacobians of
`bnn.posterior._linearise.output_jacobians`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from bnn.infer.laplace._curvature import layer_jacobians
from bnn.infer.laplace._selection import KronLayer
from bnn.posterior._covariance import CovarianceFactor, DiagonalFactor, KroneckerFactor

__all__ = ["layer_functional_moments"]

_WORKSPACE = 3  # output Jacobians, their rotation and a convolution's rotated Jacobian


def layer_functional_moments(
    model: nn.Module,
    layers: Sequence[KronLayer],
    factor: CovarianceFactor,
    x: Tensor,
    memory_budget: int,
    at: dict[str, Tensor],
) -> tuple[Tensor, Tensor]:
    """Outputs ``f(x, θ̄)`` ``[N, *out]`` and ``J Σ Jᵀ`` ``[N, C, C]`` (``C = prod(out)``).

    Args:
        model: the network (evaluated at ``at``, the posterior mean's parameter values).
        layers: the selected layers in flat order, each selected whole.
        factor: a `KroneckerFactor` (one block per layer) or a `DiagonalFactor`.
        x: inputs ``[N, ...]``.
        memory_budget: bytes one block of inputs' Jacobians may use.
    """
    probe_outputs, probe_inputs, probe_jacobians = layer_jacobians(model, layers, x[:1], 2**62, at)
    per_input = (
        _WORKSPACE
        * x.element_size()
        * probe_outputs.shape[-1]
        * sum(
            a[0].numel() + g[0].numel() for a, g in zip(probe_inputs, probe_jacobians, strict=True)
        )
    )
    block = max(1, memory_budget // max(per_input, 1))
    weights = _layer_weights(layers, factor)
    outputs, covariances = [], []
    for chunk in torch.split(x, block):
        chunk_outputs, inputs, jacobians = layer_jacobians(model, layers, chunk, 2**62, at)
        total = chunk_outputs.new_zeros(
            chunk.shape[0], chunk_outputs.shape[-1], chunk_outputs.shape[-1]
        )
        for weight, a, g in zip(weights, inputs, jacobians, strict=True):
            total = total + _layer_share(weight, a, g)
        outputs.append(chunk_outputs)
        covariances.append(total)
    with torch.no_grad():
        shape = torch.func.functional_call(model, at, (x[:1],)).shape[1:]
    return torch.cat(outputs).reshape(x.shape[0], *shape), torch.cat(covariances)


def _layer_weights(
    layers: Sequence[KronLayer], factor: CovarianceFactor
) -> list[tuple[Tensor | None, Tensor | None, Tensor]]:
    """Per layer ``(Q_A, Q_G, W)``: the rotations (``None`` for a diagonal ``Σ``) and the
    weights ``W`` ``[out, in']`` (``1/E`` or the variances)."""
    if isinstance(factor, KroneckerFactor):
        return [
            (block.vec_a, block.vec_g, block.eigenvalues.reciprocal()) for block in factor.blocks
        ]
    assert isinstance(factor, DiagonalFactor)
    weights: list[tuple[Tensor | None, Tensor | None, Tensor]] = []
    start = 0
    variance = factor.variance()
    for layer in layers:
        out = layer.weight.shape[0]
        columns = layer.weight[0].numel()
        matrix = variance[start : start + out * columns].reshape(out, columns)
        start += out * columns
        if layer.bias is not None:
            matrix = torch.cat([matrix, variance[start : start + out].unsqueeze(-1)], dim=-1)
            start += out
        weights.append((None, None, matrix))
    return weights


def _layer_share(
    weight: tuple[Tensor | None, Tensor | None, Tensor], a: Tensor, g: Tensor
) -> Tensor:
    """One layer's ``J Σ Jᵀ`` ``[n, C, C]`` from its inputs ``a`` (``[n, in']``, a convolution's
    patches ``[n, R, in']``) and output Jacobians ``g`` (``[n, C, out]`` or ``[n, C, out, R]``)."""
    rotate_a, rotate_g, inverse = weight
    if rotate_a is not None:
        a = a @ rotate_a
    if a.dim() == 2:  # nn.Linear: rank one per output
        if rotate_g is not None:
            g = g @ rotate_g
        per_unit = (a * a) @ inverse.T  # [n, out]
        return torch.einsum("nco,no,ndo->ncd", g, per_unit, g)
    if rotate_g is not None:
        g = torch.einsum("ncor,op->ncpr", g, rotate_g)
    rotated = torch.einsum("ncor,nri->ncoi", g, a)  # [n, C, out, in']
    return torch.einsum("ncoi,oi,ndoi->ncd", rotated, inverse, rotated)
