"""The Gaussian-mixture prediction every regression likelihood makes (`RegressionPrediction`).

``p(y | x) = 1/S Σ_s N(y; loc_s(x), scale_s(x)²)`` (or with ``weights``): its mean, the split of
its variance into ``epistemic`` and ``aleatoric`` parts, CDF, quantiles, intervals, density
and CRPS. See ``bnn.likelihoods.regression`` for the likelihoods that make it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from bnn.likelihoods._base import Prediction, _check_finite_targets, align_targets

__all__ = ["RegressionPrediction"]

_BISECTION_STEPS = 64


def _check_level(level: float) -> None:
    if not isinstance(level, float | int) or not 0.0 < float(level) < 1.0:
        raise ValueError(f"level must be in (0, 1), e.g. 0.95, got {level!r}.")


def _log_mean_exp(values: Tensor, dim: int = 0) -> Tensor:
    return torch.logsumexp(values, dim=dim) - math.log(values.shape[dim])


def _expected_abs(mean: Tensor, variance: Tensor) -> Tensor:
    """``E|Z|`` for ``Z ~ N(mean, variance)``."""
    std = variance.sqrt()
    safe = torch.where(std > 0, std, torch.ones_like(std))
    z = mean / safe
    folded = 2 * safe * torch.exp(-0.5 * z**2) / math.sqrt(2 * math.pi) + mean * torch.erf(
        z / math.sqrt(2.0)
    )
    return torch.where(std > 0, folded, mean.abs())


@dataclass(frozen=True)
class RegressionPrediction(Prediction):
    """Gaussian-mixture predictive over ``S`` function samples.

    Attributes:
        samples: raw model outputs ``[S, N, ...]``.
        loc: per-component predictive means ``[C, N, ...]`` (``C = S`` components, one per
            function sample, unless a mixture-density head adds several per sample).
        scale: per-component observation-noise stds, broadcastable to ``loc`` (0 if noise-free).
        weights: mixture weights broadcastable to ``loc``, summing to 1 over components
            (``None``: equal weights ``1/C``).
        described_by_mixture: (class attribute) whether ``loc``, ``scale`` and ``weights``
            alone give this prediction's distribution and intervals. A recalibrated
            prediction (isotonic, conformal) reads them through a map or calibration scores:
            a recalibration that rebuilds its input prediction from the mixture refuses it.
    """

    loc: Tensor
    scale: Tensor
    weights: Tensor | None = None
    described_by_mixture: ClassVar[bool] = True

    @property
    def component_weights(self) -> Tensor:
        """Mixture weights ``[C, N, ...]`` (equal unless given)."""
        if self.weights is None:
            return torch.full_like(self.loc, 1.0 / self.loc.shape[0])
        return self.weights.expand_as(self.loc)

    @property
    def mean(self) -> Tensor:
        """Predictive mean ``[N, ...]``."""
        if self.weights is None:
            return self.loc.mean(0)
        return (self.component_weights * self.loc).sum(0)

    @property
    def epistemic(self) -> Tensor:
        """Variance of the component means ``[N, ...]`` (model uncertainty)."""
        if self.weights is None:
            return self.loc.var(0, unbiased=False)
        return (self.component_weights * (self.loc - self.mean) ** 2).sum(0)

    @property
    def aleatoric(self) -> Tensor:
        """Mean observation-noise variance ``[N, ...]`` (data noise)."""
        return (self.component_weights * (self.scale**2).expand_as(self.loc)).sum(0)

    @property
    def variance(self) -> Tensor:
        """Total predictive variance ``epistemic + aleatoric`` ``[N, ...]``."""
        return self.epistemic + self.aleatoric

    @property
    def std(self) -> Tensor:
        """Total predictive standard deviation ``[N, ...]``."""
        return self.variance.sqrt()

    def rescale(self, shift: Tensor | float, scale: Tensor | float) -> RegressionPrediction:
        """The prediction of ``shift + scale · y``, e.g. back to the original target scale.

        Args:
            shift: added to every sample (e.g. the training targets' mean).
            scale: positive factor (e.g. the training targets' std).
        """
        factor = torch.as_tensor(scale, dtype=self.loc.dtype, device=self.loc.device)
        if not bool((factor > 0).all()):
            raise ValueError("scale must be positive.")
        samples = self.samples * factor + shift if self.weights is None else self.samples
        return RegressionPrediction(
            samples=samples,
            loc=self.loc * factor + shift,
            scale=self.scale * factor,
            weights=self.weights,
        )

    def cdf(self, y: Tensor) -> Tensor:
        """Predictive CDF at ``y`` ``[N, ...]`` (the PIT values when ``y`` are observations)."""
        y = align_targets(y, self.loc.shape[1:])
        scale = self.scale.expand_as(self.loc)
        noisy = scale > 0
        safe = torch.where(noisy, scale, torch.ones_like(scale))
        normal_cdf = 0.5 * (1 + torch.erf((y - self.loc) / (safe * math.sqrt(2.0))))
        step = (y >= self.loc).to(self.loc.dtype)
        return (self.component_weights * torch.where(noisy, normal_cdf, step)).sum(0)

    def quantile(self, probability: float) -> Tensor:
        """Predictive quantile ``[N, ...]`` of the mixture, by bisection on ``cdf``."""
        _check_level(probability)
        scale = self.scale.expand_as(self.loc)
        low = (self.loc - 12 * scale).amin(0) - 1e-12
        high = (self.loc + 12 * scale).amax(0) + 1e-12
        for _ in range(_BISECTION_STEPS):
            middle = 0.5 * (low + high)
            below = self.cdf(middle) < probability
            low = torch.where(below, middle, low)
            high = torch.where(below, high, middle)
        return 0.5 * (low + high)

    def interval(self, level: float = 0.95) -> tuple[Tensor, Tensor]:
        """Central (equal-tailed) predictive interval ``(lower, upper)``, each ``[N, ...]``."""
        _check_level(level)
        tail = 0.5 * (1.0 - float(level))
        return self.quantile(tail), self.quantile(1.0 - tail)

    def crps(self, y: Tensor) -> Tensor:
        """Continuous ranked probability score per datum ``[N, ...]`` (lower is better).

        Closed form for mixtures of Gaussians (Grimit et al. 2006):
        ``CRPS = Σ_i w_i A(y - μ_i, σ_i²) - ½ Σ_ij w_i w_j A(μ_i - μ_j, σ_i² + σ_j²)`` with
        ``A(m, v) = 2√v φ(m/√v) + m (2Φ(m/√v) - 1)`` (``A(m, 0) = |m|``). Cost ``O(S² N)``.
        """
        y = align_targets(y, self.loc.shape[1:])
        loc = self.loc
        variance = (self.scale**2).expand_as(loc)
        weights = self.component_weights
        first = (weights * _expected_abs(y.unsqueeze(0) - loc, variance)).sum(0)
        pairwise = _expected_abs(
            loc.unsqueeze(0) - loc.unsqueeze(1), variance.unsqueeze(0) + variance.unsqueeze(1)
        )
        pair_weights = weights.unsqueeze(0) * weights.unsqueeze(1)
        return first - 0.5 * (pair_weights * pairwise).sum((0, 1))

    def log_likelihood(self, y: Tensor) -> Tensor:
        """Log predictive density of ``y`` per datum ``[N]``: ``log 1/S Σ_s N(y; loc_s, scale_s²)``.

        This is the UCI protocol's test log-likelihood (log-sum-exp over samples). Needs an
        observation-noise model (a likelihood with ``scale > 0``).
        """
        y = align_targets(y, self.loc.shape[1:])
        _check_finite_targets(y)
        scale = self.scale.expand_as(self.loc)
        if not bool((scale > 0).all()):
            raise ValueError(
                "log-likelihood needs observation noise; predict with a likelihood, e.g. "
                "likelihood=bnn.Gaussian(std=...)."
            )
        log_density = torch.distributions.Normal(self.loc, scale).log_prob(y)  # type: ignore[no-untyped-call]
        per_datum = log_density.reshape(*log_density.shape[:2], -1).sum(-1)
        if self.weights is None:
            return _log_mean_exp(per_datum, dim=0)
        log_weights = self.component_weights.reshape(*per_datum.shape, -1)[..., 0].log()
        return torch.logsumexp(per_datum + log_weights, dim=0)
