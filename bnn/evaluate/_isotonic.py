"""Recalibration of regression predictive CDFs (Kuleshov, Fenner & Ermon 2018).

A calibrated predictive CDF ``F(y | x)`` makes the PIT values ``F(y_i | x_i)`` of held-out data
uniform. When they are not, a monotone map ``R: [0, 1] → [0, 1]`` fitted to the calibration
set's PIT values fixes that: the recalibrated predictive is ``G(y | x) = R(F(y | x))``. The
isotonic regression of the empirical CDF of the PIT values on the PIT values is that empirical
CDF itself (it is already monotone), so ``R`` here is the empirical CDF of the calibration
PITs (denominator ``n + 1``, see ``_knots``), smoothed to the piecewise-linear curve through
``K`` of its quantiles — ``R(a_k) = k / (K + 1)`` with ``a_k`` the PITs' ``k / (K + 1)``
quantile, ``R(0) = 0``, ``R(1) = 1`` — strictly increasing, so it has a density and an
inverse.

Every reading of the recalibrated prediction uses ``G`` (`IsotonicRegressionPrediction`):
``cdf``, ``quantile`` and ``interval`` (``F⁻¹(R⁻¹(q))``), ``log_likelihood``
(``log R'(F(y)) + log f(y)``), ``mean`` and ``variance`` (exact: partial moments of the
Gaussian mixture between the quantiles ``F⁻¹(a_k)``, weighted by the slopes of ``R``), and
``crps`` (the quantile-score integral on a grid of 200 levels, error ≲ 1e-3 of the score).
``epistemic`` and ``aleatoric`` keep their shares of the base prediction's variance. Beyond
the outermost knots the tails are the base model's, rescaled: Kuleshov's method calibrates
quantiles, not tails.

Example:
    >>> recalibrated = isotonic_recalibrate(posterior, x_cal, y_cal,
    ...                                     likelihood=bnn.Gaussian(0.1), rng=0)
    >>> prediction = bnn.predict_with_uncertainty(recalibrated, x_test)
    >>> prediction.interval(0.9), prediction.mean, bnn.evaluate.metrics.crps(prediction, y)
"""

from __future__ import annotations

import functools
import math
import warnings
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import Tensor

from bnn.evaluate._conformal import calibration_likelihood, inner_prediction
from bnn.evaluate._conformal_scores import check_calibration_pair, check_described_by_mixture
from bnn.evaluate._mixture_numerics import mixture_quantiles, partial_moments, pit_values
from bnn.evaluate._scaling import ScalingWrapper
from bnn.likelihoods import Likelihood, Prediction, RegressionPrediction, align_targets
from bnn.posterior.model import as_posterior
from bnn.posterior.protocol import Posterior
from bnn.random.default import RNGLike, resolve_rng
from bnn.random.rng import RNG

__all__ = ["IsotonicRecalibrated", "IsotonicRegressionPrediction", "isotonic_recalibrate"]

_CRPS_LEVELS = 200  # quantile levels of the CRPS integral (midpoint rule)
_SMALLEST_KNOT = 1e-300  # smallest knot and gap between tied knots: slopes of R stay finite


@dataclass(frozen=True)
class IsotonicRegressionPrediction(RegressionPrediction):
    """The predictive ``G(y | x) = R(F(y | x))``: a base prediction and a monotone map ``R``.

    ``loc``, ``scale``, ``weights`` and ``samples`` are the base prediction's (its Gaussian
    mixture ``F``); every distributional reading is ``G``'s (see the module docstring).

    Attributes:
        knots: ``[0, a_1, …, a_K, 1]`` — PIT values of the base prediction (increasing,
            float64).
        levels: ``[0, 1/(K+1), …, K/(K+1), 1]`` — ``R`` at the knots (float64).
    """

    knots: Tensor = field(default_factory=lambda: torch.zeros(0))
    levels: Tensor = field(default_factory=lambda: torch.zeros(0))
    described_by_mixture: ClassVar[bool] = False  # every reading goes through R

    @property
    def _base(self) -> RegressionPrediction:
        return RegressionPrediction(
            samples=self.samples, loc=self.loc, scale=self.scale, weights=self.weights
        )

    def _slopes(self) -> Tensor:
        return self.levels.diff() / self.knots.diff()

    def cdf(self, y: Tensor) -> Tensor:
        """``R(F(y))`` ``[N, ...]``."""
        return _interpolate(pit_values(self, y), self.knots, self.levels).to(self.loc.dtype)

    def quantile(self, probability: float) -> Tensor:
        """``F⁻¹(R⁻¹(probability))`` ``[N, ...]``."""
        if not (isinstance(probability, float | int) and 0 < probability < 1):
            raise ValueError(f"probability must lie in (0, 1), got {probability!r}.")
        return self.quantiles(torch.tensor([float(probability)], dtype=self.knots.dtype))[0]

    def quantiles(self, probabilities: Tensor) -> Tensor:
        """``G⁻¹`` at ``L`` probabilities in ``(0, 1)`` at once: ``[L, N, ...]``."""
        levels = _interpolate(probabilities.to(self.knots), self.levels, self.knots)
        quantiles = mixture_quantiles(self.loc, self.scale, self.component_weights, levels)
        return quantiles.to(self.loc.dtype)

    def interval(self, level: float = 0.95) -> tuple[Tensor, Tensor]:
        """Central interval of ``G``: its ``(1 ∓ level) / 2`` quantiles, each ``[N, ...]``."""
        if not (isinstance(level, float | int) and 0 < level < 1):
            raise ValueError(f"level must lie in (0, 1), got {level!r}.")
        return self.quantile((1 - level) / 2), self.quantile((1 + level) / 2)

    def log_likelihood(self, y: Tensor) -> Tensor:
        """``log R'(F(y)) + log f(y)`` per datum ``[N]``."""
        pit = pit_values(self, y).reshape(self.loc.shape[1], -1)[:, 0].to(self.knots.dtype)
        segment = torch.searchsorted(self.knots, pit.contiguous(), right=True).clamp(
            1, len(self.knots) - 1
        )
        log_slope = self._slopes()[segment - 1].log().to(self.loc.dtype)
        return log_slope + self._base.log_likelihood(y)

    @property
    def mean(self) -> Tensor:
        """``E_G[y]`` ``[N, ...]``: slope-weighted partial first moments of ``F``."""
        return self._moment_pair[0]

    @property
    def variance(self) -> Tensor:
        """``Var_G[y]`` ``[N, ...]``."""
        mean, second = self._moment_pair
        return (second - mean**2).clamp_min(0)

    @property
    def epistemic(self) -> Tensor:
        """The base prediction's epistemic share of ``Var_G``."""
        return self._share(self._base.epistemic)

    @property
    def aleatoric(self) -> Tensor:
        """The base prediction's aleatoric share of ``Var_G``."""
        return self._share(self._base.aleatoric)

    def _share(self, part: Tensor) -> Tensor:
        total = self._base.variance
        safe = torch.where(total > 0, total, torch.ones_like(total))
        return torch.where(total > 0, part / safe * self.variance, torch.zeros_like(total))

    @functools.cached_property
    def _moment_pair(self) -> tuple[Tensor, Tensor]:
        """``E_G[y]`` and ``E_G[y²]`` ``[N, ...]`` (computed once)."""
        inner = mixture_quantiles(self.loc, self.scale, self.component_weights, self.knots[1:-1])
        first = [torch.zeros_like(self.loc[0])]
        second = [torch.zeros_like(self.loc[0])]
        for point in inner:
            moment1, moment2 = partial_moments(self.loc, self.scale, self.component_weights, point)
            first.append(moment1)
            second.append(moment2)
        base = RegressionPrediction(
            samples=self.samples,
            loc=self.loc.to(torch.float64),
            scale=self.scale.to(torch.float64),
            weights=None if self.weights is None else self.weights.to(torch.float64),
        )
        first.append(base.mean)
        second.append(base.variance + base.mean**2)
        slopes = self._slopes()
        mean = sum(s * (b - a) for s, a, b in zip(slopes, first[:-1], first[1:], strict=True))
        raw = sum(s * (b - a) for s, a, b in zip(slopes, second[:-1], second[1:], strict=True))
        return torch.as_tensor(mean).to(self.loc.dtype), torch.as_tensor(raw).to(self.loc.dtype)

    def crps(self, y: Tensor) -> Tensor:
        """``∫₀¹ 2 (1{y ≤ G⁻¹(u)} − u)(G⁻¹(u) − y) du`` per datum, midpoint rule on 200
        levels ``[N, ...]``."""
        y = align_targets(y, self.loc.shape[1:])
        u = (torch.arange(_CRPS_LEVELS, dtype=self.loc.dtype) + 0.5) / _CRPS_LEVELS
        q = self.quantiles(u)  # [L, N, ...]
        u = u.to(q).reshape(-1, *[1] * (q.dim() - 1))
        return (2 * ((y <= q).to(q) - u) * (q - y)).mean(0)

    def rescale(self, shift: Tensor | float, scale: Tensor | float) -> RegressionPrediction:
        """``shift + scale · y``: the base rescaled, ``R`` unchanged (PITs are invariant)."""
        base = self._base.rescale(shift, scale)
        return IsotonicRegressionPrediction(
            samples=base.samples,
            loc=base.loc,
            scale=base.scale,
            weights=base.weights,
            knots=self.knots,
            levels=self.levels,
        )


def _interpolate(values: Tensor, xs: Tensor, ys: Tensor) -> Tensor:
    """The piecewise-linear curve through ``(xs, ys)`` at ``values`` (``xs`` increasing),
    evaluated in float64 (knots ``1e-8`` apart near 1 are one number in float32)."""
    xs, ys = xs.to(values.device, torch.float64), ys.to(values.device, torch.float64)
    flat = values.reshape(-1).to(torch.float64).clamp(float(xs[0]), float(xs[-1])).contiguous()
    right = torch.searchsorted(xs, flat, right=True).clamp(1, len(xs) - 1)
    x0, x1, y0, y1 = xs[right - 1], xs[right], ys[right - 1], ys[right]
    curve = y0 + (flat - x0) / (x1 - x0) * (y1 - y0)
    return curve.reshape(values.shape).to(values.dtype)


class IsotonicRecalibrated(ScalingWrapper):
    """A regression posterior whose predictive CDF goes through a fitted monotone map ``R``.

    Made by `isotonic_recalibrate`; ``predict_with_uncertainty`` returns an
    `IsotonicRegressionPrediction`. ``sample_functions`` is the wrapped posterior's.

    Args:
        posterior: any `bnn.Posterior` of a regression model.
        knots: ``[0, a_1, …, a_K, 1]``, strictly increasing PIT values.
        likelihood: the observation model ``R`` was fitted with (carried, so prediction needs
            no ``likelihood=``; ``None`` when the posterior carries its own).
    """

    def __init__(
        self, posterior: Posterior, knots: Tensor, likelihood: Likelihood | None = None
    ) -> None:
        super().__init__(posterior, likelihood)
        knots = torch.as_tensor(knots, dtype=torch.float64).detach().cpu()
        if knots.dim() != 1 or len(knots) < 2 or not bool((knots.diff() > 0).all()):
            raise ValueError("knots must be a strictly increasing 1-d tensor from 0 to 1.")
        if float(knots[0]) != 0.0 or float(knots[-1]) != 1.0:
            raise ValueError("knots must start at 0 and end at 1.")
        self.knots = knots
        self.levels = torch.linspace(0, 1, len(knots), dtype=torch.float64)

    def closed_form_prediction(
        self,
        x: Tensor,
        *,
        likelihood: Likelihood | None,
        num_samples: int,
        rng: RNG,
        memory_budget: int,
    ) -> Prediction:
        """The wrapped posterior's predictive with its CDF mapped through ``R``."""
        base = inner_prediction(self.posterior, x, likelihood, num_samples, rng, memory_budget)
        return _recalibrated(base, self.knots, self.levels)


def _recalibrated(base: Prediction, knots: Tensor, levels: Tensor) -> IsotonicRegressionPrediction:
    if not isinstance(base, RegressionPrediction):
        raise TypeError(
            "isotonic recalibration maps a regression predictive CDF; predict with a "
            f"regression likelihood (e.g. bnn.Gaussian), got a {type(base).__name__}."
        )
    if base.loc[0, 0].numel() != 1:
        raise ValueError(
            f"isotonic recalibration maps one predictive CDF per input; the prediction has "
            f"{tuple(base.loc.shape[2:])} outputs per input. Recalibrate each output alone."
        )
    return IsotonicRegressionPrediction(
        samples=base.samples,
        loc=base.loc,
        scale=base.scale,
        weights=base.weights,
        knots=knots.to(base.loc.device),  # float64: see _interpolate
        levels=levels.to(base.loc.device),
    )


def isotonic_recalibrate(
    posterior: Posterior,
    x_cal: Tensor,
    y_cal: Tensor,
    *,
    likelihood: Likelihood | None = None,
    num_knots: int = 50,
    num_samples: int = 100,
    rng: RNGLike = None,
) -> IsotonicRecalibrated:
    """Fit ``R`` on a calibration set (Kuleshov et al. 2018); wrap the posterior.

    Args:
        posterior: any `bnn.Posterior` of a regression model with one output per input (or a
            model with Bayesian layers or ``MCDropout``).
        x_cal: calibration inputs ``[n, ...]``, not used in training.
        y_cal: targets ``[n]`` or ``[n, 1]``.
        likelihood: the observation model (``None``: the posterior's own); it must have
            observation noise (a mixture of point masses has no density to recalibrate).
        num_knots: ``K``, the quantiles of the PIT values ``R`` passes through (at most
            ``n``); the moments cost ``K`` quantile evaluations per prediction.
        num_samples: function samples ``S`` drawn at ``x_cal``.
        rng: randomness of those samples.

    Returns:
        `IsotonicRecalibrated` (``knots``; ``nll_before``/``nll_after`` the calibration-set
        NLL of ``F`` and of ``G``).

    Raises:
        TypeError / ValueError: not a regression prediction, no observation noise, several
            outputs per input,
            mismatched or non-finite targets, fewer than 2 calibration points, a bad
            ``num_knots``.

    Example:
        >>> recalibrated = isotonic_recalibrate(posterior, x_cal, y_cal, rng=0)
        >>> bnn.predict_with_uncertainty(recalibrated, x_test).interval(0.9)
    """
    posterior = as_posterior(posterior)  # a model (MCDropout, Bayesian layers) or a posterior
    check_calibration_pair(x_cal, y_cal, num_samples)
    if isinstance(num_knots, bool) or not isinstance(num_knots, int) or num_knots < 1:
        raise ValueError(f"num_knots must be a positive int, got {num_knots!r}.")
    generator = resolve_rng(rng)
    chosen = calibration_likelihood(posterior, likelihood)
    base = inner_prediction(posterior, x_cal, chosen, num_samples, generator, None)
    if not isinstance(base, RegressionPrediction):
        raise TypeError(
            "isotonic recalibration needs a regression prediction (e.g. likelihood="
            f"bnn.Gaussian(0.1)), got a {type(base).__name__}."
        )
    check_described_by_mixture(base, "isotonic_recalibrate")
    if not bool((base.scale > 0).all()):
        raise ValueError(
            "isotonic recalibration maps a predictive CDF with a density; this prediction is a "
            "mixture of point masses (no observation noise): pass likelihood=bnn.Gaussian(std=...) "
            "or another regression likelihood."
        )
    if x_cal.shape[0] < 2:
        raise ValueError("isotonic recalibration needs at least 2 calibration points.")
    pit = pit_values(base, y_cal).reshape(-1).cpu()
    knots = _knots(pit, min(num_knots, len(pit)))
    wrapper = IsotonicRecalibrated(posterior, knots, chosen)
    recalibrated = _recalibrated(base, wrapper.knots, wrapper.levels)
    wrapper.nll_before = -float(base.log_likelihood(y_cal).mean())
    wrapper.nll_after = -float(recalibrated.log_likelihood(y_cal).mean())
    return wrapper


def _knots(pit: Tensor, count: int) -> Tensor:
    """``[0, a_1, …, a_K, 1]``: the PITs' quantiles ``q_k`` at levels ``k / (K + 1)``, read at
    the plotting positions ``k (n + 1) / (K + 1)`` of their order statistics (so ``q_k`` is
    the ``k``-th smallest PIT when ``K = n``: on average a new PIT falls between the ``i``-th
    and ``j``-th with probability ``(j − i) / (n + 1)``, which the levels state — the
    interpolating quantile of ``torch.quantile`` would pull the outer knots inward and make
    small calibration sets under-cover). Tied quantiles (tied PITs: a jump of the empirical
    CDF) are spread by a relative ``1e-9`` so that ``R`` stays strictly increasing; a PIT of
    exactly 0 or 1 (a target beyond the float64 tail of ``F``, about 38 stds below or 8 above
    it) cannot be placed, is kept just inside ``(0, 1)``, and is warned about."""
    levels = torch.arange(1, count + 1, dtype=torch.float64) / (count + 1)
    ordered = pit.clamp(0, 1).sort().values
    n = len(ordered)
    position = (levels * (n + 1) - 1).clamp(0, n - 1)  # 0-based order statistic
    below = position.floor().long()
    above = position.ceil().long()
    quantiles = ordered[below] + (position - below) * (ordered[above] - ordered[below])
    _warn_saturated(quantiles, levels)
    inner = torch.tensor(_strictly_increasing(quantiles.tolist()), dtype=torch.float64)
    return torch.cat(
        [torch.zeros(1, dtype=torch.float64), inner, torch.ones(1, dtype=torch.float64)]
    )


def _warn_saturated(quantiles: Tensor, levels: Tensor) -> None:
    """Warn when knots sit at a PIT of exactly 0 or 1, naming the levels whose quantiles the
    float64 tails of ``F`` cannot reach."""
    low, high = levels[quantiles <= 0], levels[quantiles >= 1]
    if len(low) + len(high) == 0:
        return
    capped = [f"below level {float(low.max()):.4f}" for _ in low[:1]]
    capped += [f"above level {float(high.min()):.4f}" for _ in high[:1]]
    warnings.warn(
        f"{len(low) + len(high)} of the {len(levels)} knots of R sit at a PIT of exactly 0 or "
        "1: calibration targets lie beyond the float64 tails of the predictive (about 38 stds "
        f"below or 8 above it), so the recalibrated quantiles {' and '.join(capped)} are "
        "capped there. The model is far too confident: widen its predictive first "
        "(std_scale), or use conformalize.",
        stacklevel=4,
    )


def _strictly_increasing(values: list[float]) -> list[float]:
    """Sorted values in ``[0, 1]`` made strictly increasing inside ``(0, 1)``: at least
    ``1e-300``, each tie moved up by a relative ``1e-9`` (at least ``1e-300``: the slopes of
    ``R`` stay below ``1e300``), then those at or above 1 stepped below it, one float each."""
    values = [min(max(value, _SMALLEST_KNOT), 1.0) for value in values]
    for k in range(1, len(values)):
        if values[k] <= values[k - 1]:
            values[k] = max(values[k - 1] * (1 + 1e-9), values[k - 1] + _SMALLEST_KNOT)
    ceiling = 1.0
    for k in reversed(range(len(values))):
        if values[k] >= ceiling:
            values[k] = math.nextafter(ceiling, 0.0)
        ceiling = values[k]
    return values
