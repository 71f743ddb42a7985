"""The Laplace posterior ``N(θ*, Λ⁻¹)`` that `bnn.infer.laplace` builds: its covariance from the
curvature sums and the prior precision (dense, diagonal or Kronecker-factored), the Laplace
estimate of the log marginal likelihood, and the tuning of the prior precision and noise on
it or on validation data. See `bnn.infer.laplace` for the method.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor, nn

from bnn.infer.history import History
from bnn.infer.laplace._curvature import CurvatureSums
from bnn.infer.laplace._functional import layer_functional_moments
from bnn.infer.laplace._selection import KronLayer, check_precision, kron_layers
from bnn.infer.laplace._tuning import glm_nll, maximise_marglik, search_grid
from bnn.likelihoods import Gaussian, Likelihood
from bnn.posterior._covariance import (
    CovarianceFactor,
    DenseFactor,
    DiagonalFactor,
    KroneckerBlock,
    KroneckerFactor,
)
from bnn.posterior._glm import check_glm_likelihood
from bnn.posterior._linearise import flatten_parameters, output_jacobians
from bnn.posterior.gaussian import GaussianPosterior, Predictive
from bnn.posterior.protocol import check_memory_budget

__all__ = ["Hessian", "LaplacePosterior"]

Hessian = Literal["full", "kron", "diag"]


class LaplacePosterior(GaussianPosterior):
    """The Laplace posterior ``N(θ*, Λ⁻¹)``; a `bnn.posterior.GaussianPosterior`.

    Built by `laplace`. Changing ``prior_precision`` or ``noise_std`` (directly or by
    ``optimize_prior_precision``) rebuilds the covariance; the mean stays ``θ*``.

    Attributes:
        hessian: ``"full"``, ``"kron"`` or ``"diag"``.
        groups: the layer (module name) of each prior-precision entry.
        layer_bias: for ``"kron"``, whether each layer has a bias.
        sums: the curvature and data fit (see ``bnn.infer.laplace._curvature.CurvatureSums``).
    """

    def __init__(
        self,
        model: nn.Module,
        names: Sequence[str],
        groups: list[str],
        group_index: Tensor,
        sums: CurvatureSums,
        *,
        hessian: Hessian,
        layer_bias: list[bool],
        likelihood: Likelihood,
        prior_precision: Tensor,
        predictive: Predictive,
        link: str,
    ) -> None:
        self.hessian = hessian
        self.layer_bias = layer_bias
        self.groups = groups
        self.group_index = group_index
        self.sums = sums
        self.kind = likelihood
        parameters = dict(model.named_parameters())
        mean = flatten_parameters(
            {n: parameters[n].detach().clone() for n in names}, names, leading=0
        )
        self.mean = mean  # the factor below needs its dtype and device
        self._prior_precision = prior_precision
        self._log_noise = (
            likelihood.std.detach().to(mean).log() if isinstance(likelihood, Gaussian) else None
        )
        super().__init__(
            model,
            names,
            mean,
            self._factor(prior_precision, self._log_noise),
            likelihood=self._carried(),
            predictive=predictive,
            link=link,
        )

    # ------------------------------------------------------------------ hyper-parameters
    @property
    def prior_precision(self) -> Tensor:
        """``δ``: a 0-dim tensor, or one value per layer ``[len(groups)]``."""
        return self._prior_precision

    @prior_precision.setter
    def prior_precision(self, value: float | Sequence[float] | Tensor) -> None:
        self._prior_precision = check_precision(value, len(self.groups), self.mean)
        self._rebuild()

    @property
    def noise_std(self) -> float | None:
        """``σ`` of a Gaussian likelihood (``None`` for classification)."""
        return None if self._log_noise is None else float(self._log_noise.exp())

    @noise_std.setter
    def noise_std(self, value: float) -> None:
        if self._log_noise is None:
            raise ValueError("noise_std applies to a Gaussian likelihood only.")
        if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
            raise ValueError(f"noise_std must be a positive number, got {value!r}.")
        self._log_noise = self.mean.new_tensor(math.log(value))
        self._rebuild()

    def _rebuild(self) -> None:
        self.factor = self._factor(self._prior_precision, self._log_noise)
        self.likelihood = self._carried()

    def _carried(self) -> Likelihood:
        if self._log_noise is None:
            return self.kind
        return Gaussian(float(self._log_noise.exp())).to(self.mean.device)

    # ------------------------------------------------------------------ precision
    def _per_parameter(self, precision: Tensor) -> Tensor:
        return precision.expand(len(self.groups))[self.group_index]

    def _curvature_scale(self, log_noise: Tensor | None) -> Tensor:
        if log_noise is None:
            return torch.ones((), dtype=self.mean.dtype, device=self.mean.device)
        return torch.exp(-2 * log_noise.to(self.mean))

    def log_det_precision(
        self, prior_precision: Tensor | None = None, log_noise: Tensor | None = None
    ) -> Tensor:
        """``log det Λ`` (differentiable in both arguments)."""
        precision = self._prior_precision if prior_precision is None else prior_precision
        scale = self._curvature_scale(self._log_noise if log_noise is None else log_noise)
        if self.hessian == "kron":
            return sum(
                (b.eigenvalues.log().sum() for b in self._kron_blocks(precision, scale)),
                torch.zeros((), dtype=self.mean.dtype, device=self.mean.device),
            )
        if self.hessian == "diag":
            assert self.sums.diagonal is not None
            return (scale * self.sums.diagonal + self._per_parameter(precision)).log().sum()
        if precision.numel() == 1:  # δ I: the GGN's eigenvalues, computed once, suffice
            return (scale * self._full_eigenvalues + precision.reshape(())).log().sum()
        cholesky = self._cholesky(precision, scale)
        return 2 * cholesky.diagonal().log().sum()

    @functools.cached_property
    def _full_eigenvalues(self) -> Tensor:
        """Eigenvalues of the full GGN (``≥ 0``): ``log det(s·GGN + δ I) = Σ log(s·λ + δ)`` for
        every scalar ``δ`` and noise scale ``s``, so the marginal-likelihood optimisation needs
        no factorisation per step."""
        assert self.sums.full is not None
        eigenvalues: Tensor = torch.linalg.eigvalsh(self.sums.full).clamp_min(0)
        return eigenvalues

    def _cholesky(self, precision: Tensor, scale: Tensor) -> Tensor:
        assert self.sums.full is not None
        matrix = scale * self.sums.full + torch.diag(self._per_parameter(precision))
        cholesky, info = torch.linalg.cholesky_ex(matrix)
        if int(info) != 0:
            raise ValueError(
                "the posterior precision is singular or not positive definite; raise "
                "prior_precision (it must be > 0) or check the curvature for NaN."
            )
        return cholesky  # type: ignore[no-any-return]

    @functools.cached_property
    def _kron_eigen(self) -> list[tuple[Tensor, Tensor, Tensor, Tensor]]:
        """Eigendecompositions of every layer's factors ``A`` and ``G``, computed once.

        They do not depend on the prior precision or the noise, so the marginal-likelihood
        optimisation reuses them at every step.
        """
        eigen = []
        for factor_a, factor_g in zip(self.sums.factors_a, self.sums.factors_g, strict=True):
            eig_a, vec_a = torch.linalg.eigh(factor_a)
            eig_g, vec_g = torch.linalg.eigh(factor_g / self.sums.count)
            eigen.append((eig_a.clamp_min(0), vec_a, eig_g.clamp_min(0), vec_g))
        return eigen

    def _kron_blocks(self, precision: Tensor, scale: Tensor) -> list[KroneckerBlock]:
        per_layer = precision.expand(len(self.groups))
        return [
            KroneckerBlock(eig_a, vec_a, eig_g, vec_g, per_layer[i], scale, self.layer_bias[i])
            for i, (eig_a, vec_a, eig_g, vec_g) in enumerate(self._kron_eigen)
        ]

    def _factor(self, precision: Tensor, log_noise: Tensor | None) -> CovarianceFactor:
        scale = self._curvature_scale(log_noise)
        if self.hessian == "kron":
            factor: CovarianceFactor = KroneckerFactor(self._kron_blocks(precision, scale))
        elif self.hessian == "diag":
            assert self.sums.diagonal is not None
            factor = DiagonalFactor(
                (scale * self.sums.diagonal + self._per_parameter(precision)).reciprocal()
            )
        else:
            factor = DenseFactor(self._cholesky(precision, scale))
        return factor

    # ------------------------------------------------------------------ linearised predictive
    def functional_moments(
        self, x: Tensor, *, memory_budget: int | None = None
    ) -> tuple[Tensor, Tensor]:
        """Mean ``f(x, θ*)`` ``[N, *out]`` and covariance ``J Σ Jᵀ`` ``[N, C, C]``.

        ``"kron"`` and ``"diag"`` on whole ``nn.Linear`` / convolution layers: from each
        layer's inputs and output Jacobians (``bnn.infer.laplace._functional``, no per-input
        Jacobian of the weights); otherwise from per-input Jacobians.
        """
        layers = self._factored_layers
        if layers is None:
            return super().functional_moments(x, memory_budget=memory_budget)
        self.check_inputs(x, 1)
        budget = check_memory_budget(memory_budget, x.device)
        at = self._unflatten(self.mean)
        try:
            outputs, covariance = layer_functional_moments(
                self.model, layers, self.factor, x, budget, at
            )
        except ValueError:  # a layer applied twice, or to unbatched features
            if self.hessian == "kron":
                raise
            self._factored_layers = None
            return super().functional_moments(x, memory_budget=memory_budget)
        return outputs.detach(), covariance.detach()

    @functools.cached_property
    def _factored_layers(self) -> list[KronLayer] | None:
        """The selected layers, if each is a whole Linear / Conv layer and Σ is per layer."""
        if self.hessian == "full":
            return None
        try:
            return kron_layers(self.model, self.names, self.groups)
        except ValueError:
            return None

    @property
    def posterior_precision(self) -> Tensor:
        """``Λ`` ``[P, P]`` (dense: for small selections and tests)."""
        precision: Tensor = torch.linalg.inv(self.factor.dense())
        return precision

    # ------------------------------------------------------------------ marginal likelihood
    def log_marginal_likelihood(
        self,
        prior_precision: float | Sequence[float] | Tensor | None = None,
        noise: float | Tensor | None = None,
    ) -> Tensor:
        """The Laplace log marginal likelihood ``log p(D | δ, σ)`` (see the module docstring).

        Args:
            prior_precision: ``δ`` (scalar or per layer; default: the current one). A tensor
                keeps its autograd graph, so the value can be optimised.
            noise: the Gaussian likelihood's ``σ`` (default: the current one).

        Returns:
            A 0-dim tensor, differentiable in ``prior_precision`` and ``noise``.
        """
        precision = (
            self._prior_precision
            if prior_precision is None
            else check_precision(prior_precision, len(self.groups), self.mean)
        )
        log_noise = self._log_noise
        if noise is not None:
            log_noise = torch.as_tensor(noise, dtype=self.mean.dtype, device=self.mean.device).log()
        delta = self._per_parameter(precision)
        scatter = (delta * self.mean**2).sum()
        log_det_ratio = self.log_det_precision(precision, log_noise) - delta.log().sum()
        return self._log_likelihood(log_noise) - 0.5 * (scatter + log_det_ratio)

    def _log_likelihood(self, log_noise: Tensor | None) -> Tensor:
        if log_noise is None:
            return self.mean.new_tensor(self.sums.log_likelihood)
        terms = self.sums.count * self.sums.outputs
        log_noise = log_noise.to(self.mean)
        return (
            -0.5 * self.sums.squared_error * torch.exp(-2 * log_noise)
            - terms * log_noise
            - 0.5 * terms * math.log(2 * math.pi)
        )

    def optimize_prior_precision(
        self,
        method: Literal["marglik", "validation"] = "marglik",
        *,
        per_layer: bool = False,
        optimize_noise: bool = True,
        steps: int = 200,
        lr: float = 0.1,
        validation: tuple[Tensor, Tensor] | None = None,
        grid: Tensor | None = None,
        noise_grid: Tensor | None = None,
    ) -> History:
        """Choose ``δ`` (and ``σ``) by the marginal likelihood or a validation set.

        ``"marglik"`` maximises ``log_marginal_likelihood`` over ``log δ`` (scalar, or one per
        layer with ``per_layer=True``) and, for a Gaussian likelihood with
        ``optimize_noise=True``, ``log σ``, by Adam (Immer et al. 2021). ``"validation"``
        picks the scalar ``δ`` on ``grid`` (default ``logspace(-4, 4, 41)``) — and, for a
        Gaussian likelihood with ``optimize_noise=True``, jointly ``σ`` among the current
        ``σ`` times ``noise_grid`` (default ``2^linspace(-1, 2, 13)``) — with the best log
        predictive density of ``validation = (x, y)`` under the linearised predictive.

        Returns:
            A `History` with ``neg_log_marglik`` per step (marglik), or ``val_nll`` per grid
            value (validation; ``δ``-major over ``(δ, σ)`` pairs, with ``extras["grid"]``
            holding the pairs).
        """
        if method == "validation":
            factors = (
                2.0 ** torch.linspace(-1.0, 2.0, 13, dtype=torch.float64)
                if noise_grid is None
                else noise_grid
            )
            return self._optimize_on_validation(
                validation, grid, factors if optimize_noise else None
            )
        if method != "marglik":
            raise ValueError(f"method must be 'marglik' or 'validation', got {method!r}.")
        size = len(self.groups) if per_layer else 1
        precision, log_noise, history = maximise_marglik(
            self.log_marginal_likelihood,
            self._prior_precision,
            self._log_noise if optimize_noise else None,
            size=size,
            scalar=size == 1 and not per_layer,
            reference=self.mean,
            steps=steps,
            lr=lr,
        )
        self._prior_precision = precision
        if log_noise is not None:
            self._log_noise = log_noise
        self._rebuild()
        return history

    def _optimize_on_validation(
        self,
        validation: tuple[Tensor, Tensor] | None,
        grid: Tensor | None,
        noise_grid: Tensor | None,
    ) -> History:
        if not (isinstance(validation, tuple) and len(validation) == 2):
            raise ValueError("method='validation' needs validation=(x_val, y_val).")
        check_glm_likelihood(self.likelihood)
        x, y = validation
        values = torch.logspace(-4, 4, 41, dtype=torch.float64) if grid is None else grid
        noises: list[float | None] = [None]  # None: keep the current σ
        current = self.noise_std
        if current is not None and noise_grid is not None:
            noises = [current * float(factor) for factor in noise_grid]
        budget = check_memory_budget(None, x.device)
        outputs, jacobian = output_jacobians(self.model, self.names, x, budget)

        def validation_nll(value: float, noise: float | None) -> float:
            log_noise = self._log_noise if noise is None else self.mean.new_tensor(math.log(noise))
            likelihood = self.likelihood if noise is None else Gaussian(noise)
            factor = self._factor(self.mean.new_tensor(value), log_noise)
            return glm_nll(outputs.detach(), factor.functional(jacobian.detach()), y, likelihood)

        best_value, best_noise, history = search_grid(validation_nll, values.tolist(), noises)
        if best_noise is not None:
            self._log_noise = self.mean.new_tensor(math.log(best_noise))
        self.prior_precision = float(best_value)
        return history
