"""Predictive distributions built from ``S`` function samples.

A regression prediction is the mixture ``p(y | x) = 1/S Σ_s N(y; loc_s(x), scale_s(x)²)``: each
function sample contributes a Gaussian (``scale_s = 0`` when there is no observation noise).
Its variance splits by the law of total variance into

* ``epistemic = Var_s[loc_s]`` — disagreement between functions (model uncertainty), and
* ``aleatoric = E_s[scale_s²]`` — noise the model expects in the data.

A classification prediction averages class probabilities over samples; its total entropy
``H[E_s p_s]`` splits into ``expected_entropy = E_s H[p_s]`` (aleatoric) and the mutual
information between the label and the weights (epistemic; Houlsby et al. 2011, "BALD").

All tensors are ``[S, N, ...]`` for per-sample values and ``[N, ...]`` for summaries.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

__all__ = ["ClassificationPrediction", "Prediction", "RegressionPrediction"]

_BISECTION_STEPS = 64


def _check_level(level: float) -> None:
    if not isinstance(level, float | int) or not 0.0 < float(level) < 1.0:
        raise ValueError(f"level must be in (0, 1), e.g. 0.95, got {level!r}.")


def _align(y: Tensor, shape: torch.Size) -> Tensor:
    """Targets shaped like one sample (``[N, ...]``); ``[N]`` is accepted for ``[N, 1]``."""
    if not isinstance(y, Tensor):
        raise TypeError(f"y must be a torch.Tensor, got {type(y).__name__}.")
    if y.shape == shape:
        return y
    if len(shape) >= 1 and shape[-1] == 1 and y.shape == shape[:-1]:
        return y.unsqueeze(-1)
    raise ValueError(
        f"y has shape {tuple(y.shape)} but the prediction is {tuple(shape)} per sample; reshape y."
    )


def _log_mean_exp(values: Tensor, dim: int = 0) -> Tensor:
    return torch.logsumexp(values, dim=dim) - math.log(values.shape[dim])


@dataclass(frozen=True)
class Prediction:
    """Base class: the raw function samples ``[S, N, ...]`` (model outputs)."""

    samples: Tensor

    @property
    def num_samples(self) -> int:
        return int(self.samples.shape[0])


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
    """

    loc: Tensor
    scale: Tensor
    weights: Tensor | None = None

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

    def plot(self, x: Tensor, **kwargs: Any) -> Any:
        """1-D predictive bands at inputs ``x``; see :func:`bnn.plots.plot_predictive`."""
        from bnn.plots import plot_predictive

        return plot_predictive(self, x, **kwargs)

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
        y = _align(y, self.loc.shape[1:])
        scale = self.scale.expand_as(self.loc)
        noisy = scale > 0
        safe = torch.where(noisy, scale, torch.ones_like(scale))
        normal_cdf = 0.5 * (1 + torch.erf((y - self.loc) / (safe * math.sqrt(2.0))))
        step = (y >= self.loc).to(self.loc.dtype)
        return (self.component_weights * torch.where(noisy, normal_cdf, step)).sum(0)

    def quantile(self, probability: float) -> Tensor:
        """Predictive quantile ``[N, ...]`` of the mixture, by bisection on :meth:`cdf`."""
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

    def log_likelihood(self, y: Tensor) -> Tensor:
        """Log predictive density of ``y`` per datum ``[N]``: ``log 1/S Σ_s N(y; loc_s, scale_s²)``.

        This is the UCI protocol's test log-likelihood (log-sum-exp over samples). Needs an
        observation-noise model (a likelihood with ``scale > 0``).
        """
        y = _align(y, self.loc.shape[1:])
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


@dataclass(frozen=True)
class ClassificationPrediction(Prediction):
    """Averaged class probabilities over ``S`` function samples.

    Attributes:
        samples: raw model outputs (logits) ``[S, N, ...]``.
        class_probs: per-sample class probabilities ``[S, N, K]``.
        binary: ``True`` for a Bernoulli likelihood; then :attr:`probs` is ``p(y = 1)`` ``[N]``.
    """

    class_probs: Tensor
    binary: bool = False

    @property
    def probs(self) -> Tensor:
        """Predictive class probabilities ``[N, K]`` (``[N]`` = ``p(y=1)`` when binary)."""
        mean = self.class_probs.mean(0)
        return mean[..., 1] if self.binary else mean

    @property
    def mean(self) -> Tensor:
        """Same as :attr:`probs`."""
        return self.probs

    @property
    def entropy(self) -> Tensor:
        """Entropy of the predictive ``H[E_s p_s]`` ``[N]`` (total uncertainty, nats)."""
        return _entropy(self.class_probs.mean(0))

    @property
    def expected_entropy(self) -> Tensor:
        """``E_s H[p_s]`` ``[N]`` (aleatoric)."""
        return _entropy(self.class_probs).mean(0)

    @property
    def mutual_information(self) -> Tensor:
        """``H[E_s p_s] - E_s H[p_s]`` ``[N]`` (epistemic; ≥ 0)."""
        return (self.entropy - self.expected_entropy).clamp_min(0.0)

    @property
    def epistemic(self) -> Tensor:
        """Mutual information ``[N]``."""
        return self.mutual_information

    @property
    def aleatoric(self) -> Tensor:
        """Expected entropy ``[N]``."""
        return self.expected_entropy

    def log_likelihood(self, y: Tensor) -> Tensor:
        """``log E_s p_s(y)`` per datum ``[N]``; ``y`` holds class indices (0/1 when binary)."""
        mean = self.class_probs.mean(0)
        index = y.long().reshape(mean.shape[:-1]).unsqueeze(-1)
        return torch.log(mean.gather(-1, index).squeeze(-1).clamp_min(1e-45))


def _entropy(probs: Tensor) -> Tensor:
    return -(probs * torch.log(probs.clamp_min(1e-45))).sum(-1)
