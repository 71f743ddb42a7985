"""Std scaling (Levi et al. 2022): one factor on a regression predictive's spread, fitted on
the calibration NLL (the regression half of the scaling recalibrations; see
``bnn.evaluate.recalibrate``)."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from bnn.evaluate._conformal import calibration_likelihood, inner_prediction
from bnn.evaluate._conformal_scores import (
    calibration_targets,
    check_calibration_pair,
    check_described_by_mixture,
)
from bnn.evaluate._scaling import ScalingWrapper, minimise_log_factor
from bnn.likelihoods import Likelihood, Prediction, RegressionPrediction
from bnn.posterior.model import as_posterior
from bnn.posterior.protocol import Posterior
from bnn.random.default import RNGLike, resolve_rng
from bnn.random.rng import RNG

__all__ = ["StdScaled", "std_scale"]


class StdScaled(ScalingWrapper):
    """A regression posterior whose predictive spread is multiplied by ``factor``.

    Made by `std_scale`. ``predict_with_uncertainty`` gets the wrapped posterior's
    `RegressionPrediction` (mixture ``Σ_c w_c N(loc_c, scale_c²)``, mean ``m``) and returns the
    mixture of ``m + s (Y − m)``: ``loc_c → m + s (loc_c − m)``, ``scale_c → s · scale_c``
    (same mean, ``std → s·std``, every quantile's distance to the mean times ``s``).
    ``sample_functions`` returns the wrapped posterior's samples unchanged (they also hold
    noise parameters for heteroscedastic heads, which a factor cannot be applied to blindly).

    It carries the likelihood it was fitted with, so a prediction without ``likelihood=``
    scales the same noisy predictive, and another likelihood is refused.

    Args:
        posterior: any `bnn.Posterior` of a regression model.
        factor: ``s > 0``.
        likelihood: the regression likelihood ``s`` was fitted with (``None``: the wrapped
            posterior's own, if any); `std_scale` passes it.
    """

    def __init__(
        self, posterior: Posterior, factor: float, likelihood: Likelihood | None = None
    ) -> None:
        super().__init__(posterior, likelihood)
        if not (isinstance(factor, float | int) and math.isfinite(factor) and factor > 0):
            raise ValueError(f"factor must be a positive finite number, got {factor!r}.")
        self.factor = float(factor)

    def closed_form_prediction(
        self,
        x: Tensor,
        *,
        likelihood: Likelihood | None,
        num_samples: int,
        rng: RNG,
        memory_budget: int,
    ) -> Prediction:
        """The wrapped posterior's predictive with its spread scaled by ``factor``."""
        prediction = inner_prediction(
            self.posterior, x, likelihood, num_samples, rng, memory_budget
        )
        if not isinstance(prediction, RegressionPrediction):
            raise TypeError(
                "StdScaled wraps a regression posterior; predict it with a regression "
                f"likelihood (e.g. bnn.Gaussian), got a {type(prediction).__name__}."
            )
        return _spread(prediction, torch.tensor(self.factor, dtype=prediction.loc.dtype))


def std_scale(
    posterior: Posterior,
    x_cal: Tensor,
    y_cal: Tensor,
    *,
    likelihood: Likelihood | None = None,
    num_samples: int = 100,
    rng: RNGLike = None,
) -> StdScaled:
    """Fit one factor ``s`` on the predictive std (Levi et al. 2022); wrap the posterior.

    The scaled predictive is the law of ``m + s (Y − m)`` (see `StdScaled`), with density
    ``p_s(y) = p(m + (y − m)/s) / s^D``; ``s`` minimises its mean NLL on the calibration set
    (L-BFGS on ``log s``, float64, the ``S`` function samples drawn once). For a single
    Gaussian predictive ``N(μ_i, σ_i²)`` the optimum is ``s² = 1/n Σ_i (y_i − μ_i)² / σ_i²``.

    Args:
        posterior: any `bnn.Posterior` (or a model) of a regression model.
        x_cal: calibration inputs ``[n, ...]``, not used in training.
        y_cal: targets ``[n, ...]`` (the shape of one sample's prediction).
        likelihood: a regression likelihood with observation noise (``bnn.Gaussian(std)``,
            ``HeteroscedasticGaussian``, ``MixtureDensity``); ``None``: the posterior's own
            (a different one than the posterior carries is refused). The scaled posterior
            carries it.
        num_samples: function samples ``S`` drawn at ``x_cal``.
        rng: randomness of those samples (the posterior's ``"predict"`` stream).

    Returns:
        `StdScaled` with the fitted ``factor`` (and ``nll_before``/``nll_after``).

    Raises:
        ValueError: no observation noise (a mixture of point masses has no density), targets
            not matching the prediction, an empty calibration set.

    Example:
        >>> scaled = std_scale(posterior, x_cal, y_cal, likelihood=bnn.Gaussian(0.1), rng=0)
        >>> bnn.predict_with_uncertainty(scaled, x_test, likelihood=bnn.Gaussian(0.1)).std
    """
    posterior = as_posterior(posterior)  # a model (MCDropout, Bayesian layers) or a posterior
    check_calibration_pair(x_cal, y_cal, num_samples)
    likelihood = calibration_likelihood(posterior, likelihood)
    generator = resolve_rng(rng)
    prediction = inner_prediction(posterior, x_cal, likelihood, num_samples, generator, None)
    if not isinstance(prediction, RegressionPrediction):
        raise TypeError(
            "std scaling is for regression; for a classifier use temperature_scale "
            f"(got a {type(prediction).__name__})."
        )
    check_described_by_mixture(prediction, "std_scale")
    scale = prediction.scale.expand_as(prediction.loc)
    if not bool((scale > 0).all()):
        raise ValueError(
            "std scaling needs observation noise (a mixture of point masses has no density); "
            "pass likelihood=bnn.Gaussian(std=...) or another regression likelihood."
        )
    y = calibration_targets(y_cal, prediction)
    loc = prediction.loc.detach().to(torch.float64)
    scale = scale.detach().to(torch.float64)
    weights = prediction.component_weights.detach().to(torch.float64)
    mean = (weights * loc).sum(0)
    y = y.detach().to(torch.float64)
    dims = loc[0, 0].numel()
    log_weights = weights.reshape(weights.shape[0], weights.shape[1], -1)[..., 0].log()

    def nll(log_factor: Tensor) -> Tensor:
        moved = mean + (y - mean) * torch.exp(-log_factor)  # y mapped back to the model's scale
        z = (moved - loc) / scale
        log_density = -0.5 * z**2 - scale.log() - 0.5 * math.log(2 * math.pi)
        per_component = log_density.reshape(*log_density.shape[:2], -1).sum(-1)
        log_mixture = torch.logsumexp(per_component + log_weights, 0)
        return -(log_mixture - dims * log_factor).mean()

    log_factor = minimise_log_factor(nll, loc.device)
    scaled = StdScaled(posterior, math.exp(log_factor), likelihood)
    scaled.nll_before = float(nll(torch.zeros((), dtype=torch.float64, device=loc.device)))
    scaled.nll_after = float(nll(torch.tensor(log_factor, dtype=torch.float64)))
    return scaled


# ------------------------------------------------------------------------------ helpers


def _spread(prediction: RegressionPrediction, factor: Tensor) -> RegressionPrediction:
    """The mixture of ``m + factor (Y − m)``: same mean, ``std · factor``."""
    factor = factor.to(prediction.loc)
    mean = prediction.mean
    return RegressionPrediction(
        samples=prediction.samples,
        loc=mean + factor * (prediction.loc - mean),
        scale=prediction.scale * factor,
        weights=prediction.weights,
    )
