"""Covariance factors of a Gaussian over a flat parameter vector ``θ ∈ R^P``.

A factor represents ``Σ`` by what sampling and linearised prediction need:

* ``transform(ε)``: maps standard normal noise ``[S, noise_size]`` to deviations ``[S, P]``
  with covariance ``Σ`` (``Σ = T Tᵀ`` for the linear map ``T``);
* ``functional(J)``: ``J Σ Jᵀ`` ``[N, C, C]`` for Jacobians ``J`` ``[N, C, P]`` (the
  function-space covariance of a linearised network);
* ``variance()``: ``diag Σ`` ``[P]``; ``dense()``: ``Σ`` ``[P, P]`` (small ``P`` only).

Four structures cover Laplace and SWAG: `DenseFactor` (Cholesky of a precision),
`DiagonalFactor`, `KroneckerFactor` (one eigendecomposed ``G ⊗ A`` block per Linear or Conv
layer, Martens & Grosse 2015) and `LowRankFactor` (diagonal plus low rank, Maddox et al. 2019).

Example:
    >>> factor = DiagonalFactor(torch.tensor([1.0, 4.0]))
    >>> factor.transform(torch.ones(1, 2))
    tensor([[1., 2.]])
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "CovarianceFactor",
    "DenseFactor",
    "DiagonalFactor",
    "KroneckerBlock",
    "KroneckerFactor",
    "LowRankFactor",
]


class CovarianceFactor(ABC):
    """A covariance ``Σ`` ``[P, P]`` held in a structured form (see the module docstring)."""

    @property
    @abstractmethod
    def num_parameters(self) -> int:
        """``P``."""

    @property
    def noise_size(self) -> int:
        """Standard normal numbers one draw needs (``P`` unless the factor adds a low rank)."""
        return self.num_parameters

    @abstractmethod
    def transform(self, noise: Tensor) -> Tensor:
        """Deviations ``[S, P]`` with covariance ``Σ`` from ``noise`` ``[S, noise_size]``."""

    @abstractmethod
    def functional(self, jacobian: Tensor) -> Tensor:
        """``J Σ Jᵀ`` ``[N, C, C]`` for ``jacobian`` ``[N, C, P]``."""

    def variance(self) -> Tensor:
        """``diag Σ`` ``[P]`` (from ``dense()`` unless a subclass knows better)."""
        return self.dense().diagonal()

    def dense(self) -> Tensor:
        """``Σ`` ``[P, P]`` as ``T Tᵀ`` (memory ``P²``: for small models and tests)."""
        reference = self._reference()
        eye = torch.eye(self.noise_size, dtype=reference.dtype, device=reference.device)
        columns = self.transform(eye)  # [noise, P] = Tᵀ
        return columns.T @ columns

    @abstractmethod
    def _reference(self) -> Tensor:
        """A tensor with the factor's dtype and device."""


class DenseFactor(CovarianceFactor):
    """``Σ = Λ⁻¹`` from the Cholesky factor ``L`` of a precision ``Λ = L Lᵀ`` ``[P, P]``."""

    def __init__(self, precision_cholesky: Tensor) -> None:
        self.cholesky = precision_cholesky

    @property
    def num_parameters(self) -> int:
        return int(self.cholesky.shape[0])

    def _reference(self) -> Tensor:
        return self.cholesky

    def transform(self, noise: Tensor) -> Tensor:
        # θ = L⁻ᵀ ε has covariance (L Lᵀ)⁻¹.
        solved: Tensor = torch.linalg.solve_triangular(self.cholesky.T, noise.T, upper=True)
        return solved.T

    def functional(self, jacobian: Tensor) -> Tensor:
        n, c, p = jacobian.shape
        solved = torch.linalg.solve_triangular(
            self.cholesky, jacobian.reshape(n * c, p).T, upper=False
        )
        rows = solved.T.reshape(n, c, p)  # (L⁻¹ Jᵀ)ᵀ
        return torch.einsum("ncp,ndp->ncd", rows, rows)

    def dense(self) -> Tensor:
        covariance: Tensor = torch.cholesky_inverse(self.cholesky)
        return covariance


class DiagonalFactor(CovarianceFactor):
    """``Σ = diag(v)`` for variances ``v`` ``[P]``."""

    def __init__(self, variance: Tensor) -> None:
        self._variance = variance

    @property
    def num_parameters(self) -> int:
        return int(self._variance.shape[0])

    def _reference(self) -> Tensor:
        return self._variance

    def transform(self, noise: Tensor) -> Tensor:
        return noise * self._variance.sqrt()

    def functional(self, jacobian: Tensor) -> Tensor:
        return torch.einsum("ncp,p,ndp->ncd", jacobian, self._variance, jacobian)

    def variance(self) -> Tensor:
        return self._variance


@dataclass(frozen=True)
class KroneckerBlock:
    """One Linear or Conv layer's block ``Λ = scale · (G ⊗ A) + δ I``, eigendecomposed (a conv
    weight ``[out, in, k...]`` is read as ``[out, in·k...]``, bias last).

    The layer's weight ``[out, in]`` and bias ``[out]`` (when ``bias``) are read as one matrix
    ``W̃ = [W, b]`` ``[out, in']`` whose row-major vectorisation has precision ``G ⊗ A``, with
    ``A = Q_A diag(a) Q_Aᵀ`` ``[in', in']`` and ``G = Q_G diag(g) Q_Gᵀ`` ``[out, out]``. In the
    flat parameter vector the block is the weight (row-major) followed by the bias.

    Attributes:
        eig_a, vec_a: eigenvalues ``[in']`` and eigenvectors ``[in', in']`` of ``A``.
        eig_g, vec_g: eigenvalues ``[out]`` and eigenvectors ``[out, out]`` of ``G``.
        prior_precision: ``δ`` (a 0-dim tensor).
        scale: factor on ``G ⊗ A`` (``1/σ²`` for a Gaussian likelihood, else 1).
        bias: whether the last column of ``W̃`` is a bias.
    """

    eig_a: Tensor
    vec_a: Tensor
    eig_g: Tensor
    vec_g: Tensor
    prior_precision: Tensor
    scale: Tensor
    bias: bool

    @property
    def eigenvalues(self) -> Tensor:
        """Eigenvalues of the block's precision, ``[out, in']``."""
        return self.scale * torch.outer(self.eig_g, self.eig_a) + self.prior_precision

    @property
    def size(self) -> int:
        """Parameters in the block: ``out · in'``."""
        return int(self.eig_g.shape[0] * self.eig_a.shape[0])

    def to_matrix(self, flat: Tensor) -> Tensor:
        """``[..., out·in (+ out)]`` in flat order -> ``[..., out, in']``."""
        out, columns = self.eig_g.shape[0], self.eig_a.shape[0]
        if not self.bias:
            return flat.reshape(*flat.shape[:-1], out, columns)
        weight = flat[..., : out * (columns - 1)].reshape(*flat.shape[:-1], out, columns - 1)
        return torch.cat([weight, flat[..., out * (columns - 1) :].unsqueeze(-1)], dim=-1)

    def to_flat(self, matrix: Tensor) -> Tensor:
        """``[..., out, in']`` -> ``[..., out·in (+ out)]`` in flat order."""
        if not self.bias:
            return matrix.flatten(-2)
        return torch.cat([matrix[..., :-1].flatten(-2), matrix[..., -1]], dim=-1)


class KroneckerFactor(CovarianceFactor):
    """Block-diagonal ``Σ`` with one `KroneckerBlock` per layer, in flat order."""

    def __init__(self, blocks: list[KroneckerBlock]) -> None:
        self.blocks = blocks

    @property
    def num_parameters(self) -> int:
        return sum(block.size for block in self.blocks)

    def _reference(self) -> Tensor:
        return self.blocks[0].eig_a

    def _segments(self, flat: Tensor) -> list[Tensor]:
        return list(torch.split(flat, [block.size for block in self.blocks], dim=-1))

    def transform(self, noise: Tensor) -> Tensor:
        parts = []
        for block, segment in zip(self.blocks, self._segments(noise), strict=True):
            scaled = block.to_matrix(segment) * block.eigenvalues.rsqrt()
            parts.append(block.to_flat(block.vec_g @ scaled @ block.vec_a.T))
        return torch.cat(parts, dim=-1)

    def functional(self, jacobian: Tensor) -> Tensor:
        total = jacobian.new_zeros(jacobian.shape[0], jacobian.shape[1], jacobian.shape[1])
        for block, segment in zip(self.blocks, self._segments(jacobian), strict=True):
            rotated = block.vec_g.T @ block.to_matrix(segment) @ block.vec_a
            total = total + torch.einsum(
                "ncij,ij,ndij->ncd", rotated, block.eigenvalues.reciprocal(), rotated
            )
        return total

    def variance(self) -> Tensor:
        parts = [
            block.to_flat(block.vec_g**2 @ block.eigenvalues.reciprocal() @ (block.vec_a**2).T)
            for block in self.blocks
        ]
        return torch.cat(parts)


class LowRankFactor(CovarianceFactor):
    """``Σ = scale · (diag(v) + D Dᵀ / (K − 1))`` (SWAG; Maddox et al. 2019).

    Args:
        variance: ``v`` ``[P]`` (non-negative).
        deviations: ``D`` ``[P, K]`` (``K ≥ 2``), e.g. the last ``K`` iterates minus their mean.
        scale: overall factor (SWAG's ``1/2``).
    """

    def __init__(self, variance: Tensor, deviations: Tensor, scale: float) -> None:
        self._variance = variance
        self.deviations = deviations
        self.scale = scale

    @property
    def num_parameters(self) -> int:
        return int(self._variance.shape[0])

    @property
    def noise_size(self) -> int:
        return self.num_parameters + int(self.deviations.shape[1])

    def _reference(self) -> Tensor:
        return self._variance

    @property
    def _rank_scale(self) -> float:
        return 1.0 / math.sqrt(self.deviations.shape[1] - 1)

    def transform(self, noise: Tensor) -> Tensor:
        p = self.num_parameters
        diagonal = noise[:, :p] * self._variance.sqrt()
        low_rank = noise[:, p:] @ self.deviations.T * self._rank_scale
        return math.sqrt(self.scale) * (diagonal + low_rank)

    def functional(self, jacobian: Tensor) -> Tensor:
        diagonal = torch.einsum("ncp,p,ndp->ncd", jacobian, self._variance, jacobian)
        projected = jacobian @ self.deviations * self._rank_scale  # [N, C, K]
        return self.scale * (diagonal + projected @ projected.transpose(-1, -2))

    def variance(self) -> Tensor:
        rank = (self.deviations**2).sum(-1) * self._rank_scale**2
        return self.scale * (self._variance + rank)
