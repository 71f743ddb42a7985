"""Regression observation models and the Gaussian-mixture prediction they make.

A regression prediction is the mixture ``p(y | x) = 1/S Σ_s N(y; loc_s(x), scale_s(x)²)``: each
function sample contributes a Gaussian (``scale_s = 0`` when there is no observation noise).
Its variance splits by the law of total variance into

* ``epistemic = Var_s[loc_s]`` — disagreement between functions (model uncertainty), and
* ``aleatoric = E_s[scale_s²]`` — noise the model expects in the data.

=========================== ============================ ================================
likelihood                  model output                 target ``y``
=========================== ============================ ================================
``Gaussian(std)``           mean ``[N, D]`` or ``[N]``   float, same shape
``Gaussian(learn_std=True)`` mean; ``std`` is learned    float, same shape
``HeteroscedasticGaussian`` ``[N, 2D]``: mean, raw std   float ``[N, D]``
``MixtureDensity(K)``       ``[N, 3K]``                  float ``[N]``
=========================== ============================ ================================

``[N, 1]`` outputs accept ``[N]`` targets (they are reshaped); anything else that does not
match raises an error instead of broadcasting silently. All tensors are ``[S, N, ...]`` for
per-sample values and ``[N, ...]`` for summaries.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bnn.likelihoods._base import (
    Likelihood,
    Prediction,
    _check_finite_targets,
    _per_datum,
    align_targets,
    check_finite_samples,
)

__all__ = ["Gaussian", "HeteroscedasticGaussian", "MixtureDensity", "RegressionPrediction"]

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


class Gaussian(Likelihood):
    """Homoscedastic Gaussian ``N(y; f(x), std²)``, fixed or learned.

    Args:
        std: observation noise std (> 0), one number for every output, or one per output
            dimension (a sequence of ``D`` numbers for outputs ``[..., D]``, e.g. the noises a
            GP learned for ``D`` independent outputs); the initial value when learned.
        learn_std: learn ``std`` (parameterised by its logarithm; one value, or one per
            output when ``std`` is a sequence).

    Example:
        >>> bnn.Gaussian(0.1)                 # one noise std for every output
        >>> bnn.Gaussian([0.1, 0.5])          # outputs [..., 2] with their own noise
    """

    def __init__(self, std: float | Sequence[float] = 1.0, *, learn_std: bool = False) -> None:
        super().__init__()
        log_std = _log_std(std)
        if learn_std:
            self.log_std = nn.Parameter(log_std)
        else:
            self.register_buffer("log_std", log_std)
        self.learn_std = learn_std

    @property
    def std(self) -> Tensor:
        return self.log_std.exp()

    def check_targets(self, output: Tensor, y: Tensor) -> Tensor:
        self._check_outputs(output)
        y = align_targets(y, output.shape, "model output")
        _check_finite_targets(y)
        return y

    def _check_outputs(self, output: Tensor) -> None:
        """One std per output dimension needs outputs ``[..., D]`` with the same ``D``."""
        if self.log_std.dim() and (output.dim() == 0 or output.shape[-1] != len(self.log_std)):
            raise ValueError(
                f"this Gaussian has {len(self.log_std)} noise stds (one per output) but the "
                f"outputs have shape {tuple(output.shape)}; their last dimension must be "
                f"{len(self.log_std)}."
            )

    def log_density(self, output: Tensor, y: Tensor) -> Tensor:
        std = self.std.to(output)
        log_density = (
            -0.5 * ((y - output) / std) ** 2 - torch.log(std) - 0.5 * math.log(2 * math.pi)
        )
        return _per_datum(log_density)

    def predict(self, samples: Tensor) -> RegressionPrediction:
        check_finite_samples(samples)
        self._check_outputs(samples)
        scale = self.std.detach().to(samples).expand_as(samples)
        return RegressionPrediction(samples=samples, loc=samples, scale=scale)

    def extra_repr(self) -> str:
        stds = self.std.detach()
        shown = f"{float(stds):.4g}" if not stds.dim() else f"{[round(float(v), 4) for v in stds]}"
        return f"std={shown}, learn_std={self.learn_std}"


def require_one_std(likelihood: object, method: str) -> None:
    """Refuse a `Gaussian` with one std per output where ``method`` models a single noise.

    Raises:
        ValueError: naming the method and what to pass.
    """
    if isinstance(likelihood, Gaussian) and likelihood.log_std.dim():
        raise ValueError(
            f"{method} models one noise std for every output, got {likelihood!r}; pass "
            "bnn.Gaussian(std). One std per output works with fit, svi, the samplers, "
            "ensembles, boost and a GP with several outputs."
        )


def _log_std(std: object) -> Tensor:
    """``log std`` as a 0-d tensor (a number) or ``[D]`` (a sequence of ``D`` numbers)."""
    if isinstance(std, Tensor) and std.dim() <= 1:
        std = std.tolist()
    if isinstance(std, Sequence) and not isinstance(std, str):
        values = list(std)
        if not values or not all(_finite_number(v) for v in values):
            raise TypeError(
                f"std must be a finite number or a non-empty sequence of them, got {std!r}."
            )
        if min(values) <= 0:
            raise ValueError(f"every std must be positive, got {values}.")
        return torch.tensor([math.log(v) for v in values])
    if not _finite_number(std):
        raise TypeError(f"std must be a finite number, got {std!r}.")
    assert isinstance(std, int | float)
    if std <= 0:
        raise ValueError(f"std must be positive, got {std}.")
    return torch.tensor(math.log(std))


def _finite_number(value: object) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)


class HeteroscedasticGaussian(Likelihood):
    """Input-dependent Gaussian noise: the model outputs a mean and a raw std per dimension.

    The last output dimension ``2D`` splits into mean ``[..., :D]`` and
    ``std = softplus(raw) + min_std`` ``[..., D:]`` (Nix & Weigend 1994; Kendall & Gal 2017).

    Training with the plain Gaussian NLL lets a network explain hard points by a large variance
    instead of fitting their mean. ``beta > 0`` trains with the β-NLL of Seitzer et al. (2022,
    "On the Pitfalls of Heteroscedastic Uncertainty Estimation with Probabilistic Neural
    Networks"): each datum's log-density is weighted by ``stopgrad(std^(2β))`` in training mode
    (``β = 0.5`` is their recommended compromise, ``β = 1`` gives the mean the MSE gradient).
    Only ``training_log_prob`` (what ``bnn.fit`` maximises) is weighted; the density
    seen by samplers, metrics and predictions is the plain Gaussian one.

    Args:
        min_std: floor on the std, for numerical stability (> 0).
        beta: β-NLL exponent in ``[0, 1]`` for training (0: the plain NLL).
    """

    def __init__(self, min_std: float = 1e-6, beta: float = 0.0) -> None:
        super().__init__()
        if not isinstance(min_std, int | float) or not min_std > 0:
            raise ValueError(f"min_std must be a positive number, got {min_std!r}.")
        if not isinstance(beta, int | float) or not 0.0 <= beta <= 1.0:
            raise ValueError(f"beta must be a number in [0, 1], got {beta!r}.")
        self.min_std = float(min_std)
        self.beta = float(beta)

    def split(self, output: Tensor) -> tuple[Tensor, Tensor]:
        """``(mean, std)``, each with last dimension ``D``, from an output with last dim ``2D``."""
        if output.dim() < 1 or output.shape[-1] % 2 != 0:
            raise ValueError(
                f"HeteroscedasticGaussian needs an output whose last dimension is 2·D (mean and "
                f"std), got shape {tuple(output.shape)}; give the network 2·D outputs."
            )
        mean, raw = output.chunk(2, dim=-1)
        return mean, F.softplus(raw) + self.min_std

    def check_targets(self, output: Tensor, y: Tensor) -> Tensor:
        mean, _ = self.split(output)
        y = align_targets(y, mean.shape, "predicted mean")
        _check_finite_targets(y)
        return y

    def log_density(self, output: Tensor, y: Tensor) -> Tensor:
        return _per_datum(self._elementwise_log_density(output, y))

    def training_log_prob(self, output: Tensor, y: Tensor) -> Tensor:
        """β-NLL: each log-density term weighted by ``stopgrad(std^(2β))`` (plain for β = 0)."""
        elementwise = self._elementwise_log_density(output, self.check_targets(output, y))
        if self.beta > 0:
            _, std = self.split(output)
            elementwise = elementwise * std.detach() ** (2 * self.beta)
        return _per_datum(elementwise)

    def _elementwise_log_density(self, output: Tensor, y: Tensor) -> Tensor:
        mean, std = self.split(output)
        return -0.5 * ((y - mean) / std) ** 2 - torch.log(std) - 0.5 * math.log(2 * math.pi)

    def predict(self, samples: Tensor) -> RegressionPrediction:
        check_finite_samples(samples)
        mean, std = self.split(samples)
        return RegressionPrediction(samples=samples, loc=mean, scale=std)


class MixtureDensity(Likelihood):
    """Mixture density network head (Bishop 1994): ``K`` Gaussians per input, scalar targets.

    The output ``[N, 3K]`` splits into mixture logits ``[..., :K]``, means ``[..., K:2K]`` and
    raw stds ``[..., 2K:]`` (``std = softplus(raw) + min_std``). Over ``S`` function samples the
    predictive is the mixture of all ``S·K`` components with weights ``π_k / S``.

    Args:
        num_components: ``K`` (≥ 1).
        min_std: floor on each component's std (> 0).
    """

    def __init__(self, num_components: int, min_std: float = 1e-6) -> None:
        super().__init__()
        if (
            isinstance(num_components, bool)
            or not isinstance(num_components, int)
            or num_components < 1
        ):
            raise ValueError(f"num_components must be a positive int, got {num_components!r}.")
        if not isinstance(min_std, int | float) or not min_std > 0:
            raise ValueError(f"min_std must be a positive number, got {min_std!r}.")
        self.num_components = num_components
        self.min_std = float(min_std)

    def split(self, output: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(log_weights, means, stds)``, each ``[..., K]``, from an output ``[..., 3K]``."""
        if output.shape[-1] != 3 * self.num_components:
            raise ValueError(
                f"MixtureDensity({self.num_components}) needs outputs with last dimension "
                f"{3 * self.num_components} (logits, means, stds), got {tuple(output.shape)}."
            )
        logits, means, raw = output.chunk(3, dim=-1)
        return logits.log_softmax(-1), means, F.softplus(raw) + self.min_std

    def check_targets(self, output: Tensor, y: Tensor) -> Tensor:
        self.split(output)
        if not isinstance(y, Tensor):
            raise TypeError(f"targets must be a torch.Tensor, got {type(y).__name__}.")
        if y.dim() == 2 and y.shape[1] == 1:
            y = y.squeeze(-1)
        if y.shape != output.shape[:-1]:
            raise ValueError(
                f"MixtureDensity targets must be scalars per datum {tuple(output.shape[:-1])}, got "
                f"{tuple(y.shape)}."
            )
        _check_finite_targets(y)
        return y

    def log_density(self, output: Tensor, y: Tensor) -> Tensor:
        log_weights, means, stds = self.split(output)
        standardised = (y.unsqueeze(-1) - means) / stds
        component = -0.5 * standardised**2 - torch.log(stds) - 0.5 * math.log(2 * math.pi)
        return torch.logsumexp(log_weights + component, dim=-1)

    def predict(self, samples: Tensor) -> RegressionPrediction:
        check_finite_samples(samples)
        log_weights, means, stds = self.split(samples)
        s, k = samples.shape[0], self.num_components

        def components(t: Tensor) -> Tensor:  # [S, N, K] -> [S·K, N, 1]
            return t.movedim(-1, 1).reshape(s * k, *t.shape[1:-1], 1)

        weights = components(log_weights.exp()) / s
        return RegressionPrediction(
            samples=samples, loc=components(means), scale=components(stds), weights=weights
        )
