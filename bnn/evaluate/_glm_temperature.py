"""Temperature scaling of a linearised (GLM) classifier posterior, in its own closed form.

A Laplace posterior with ``predictive="glm"`` predicts from the linearised logits
``f ~ N(μ(x), Σ(x))`` (``Σ = J Σ_θ Jᵀ``), with the probit approximation
``softmax(μ / √(1 + π/8 · diag Σ))`` or Monte Carlo over ``f``. Dividing the logits by ``T``
gives ``f/T ~ N(μ/T, Σ/T²)``: the same predictive family, so the scaled posterior keeps its
closed form, and the temperature is fitted on that same predictive's calibration NLL — not on
networks with sampled weights, a different predictive that ``sample_functions`` draws.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from bnn.likelihoods import Categorical, Likelihood, Prediction, class_indices
from bnn.posterior._glm import glm_prediction
from bnn.random import GLOBAL_STATE_LOCK
from bnn.random.rng import RNG

__all__ = ["glm_calibration_nll", "is_glm_classifier", "scaled_glm_prediction"]


def is_glm_classifier(posterior: object, likelihood: Likelihood | None) -> bool:
    """Whether ``posterior`` predicts a categorical likelihood through its GLM closed form."""
    return (
        getattr(posterior, "predictive", None) == "glm"
        and callable(getattr(posterior, "functional_moments", None))
        and isinstance(likelihood, Categorical)
    )


def scaled_glm_prediction(
    posterior: object,
    x: Tensor,
    temperature: float,
    likelihood: Likelihood,
    num_samples: int,
    rng: RNG,
    memory_budget: int,
) -> Prediction:
    """The GLM predictive of the logits divided by ``temperature`` at ``x``."""
    mean, covariance = posterior.functional_moments(x, memory_budget=memory_budget)  # type: ignore[attr-defined]
    generator = rng.torch_generator("predict", x.device)
    return glm_prediction(
        mean / temperature,
        covariance / temperature**2,
        likelihood,
        num_samples,
        generator,
        posterior.link,  # type: ignore[attr-defined]
    )


def glm_calibration_nll(
    posterior: object, x_cal: Tensor, y_cal: Tensor, num_samples: int, rng: RNG
) -> Callable[[Tensor], Tensor]:
    """``nll(log T)``: the calibration NLL of the scaled GLM predictive (float64), for the
    posterior's link — probit in closed form, or Monte Carlo over ``num_samples`` linearised
    logit draws shared by every ``T`` (common random numbers)."""
    with torch.no_grad(), GLOBAL_STATE_LOCK:
        mean, covariance = posterior.functional_moments(x_cal)  # type: ignore[attr-defined]
    mean, covariance = mean.detach().double(), covariance.detach().double()
    labels = class_indices(y_cal, mean.shape[0], mean.shape[-1])
    index = labels.to(mean.device).view(-1, 1)
    if posterior.link == "probit":  # type: ignore[attr-defined]
        variance = covariance.diagonal(dim1=-2, dim2=-1).clamp_min(0)

        def probit(log_temperature: Tensor) -> Tensor:
            scale = torch.exp(-log_temperature)
            logits = mean * scale / torch.sqrt(1 + math.pi / 8 * variance * scale**2)
            nll: Tensor = -logits.log_softmax(-1).gather(-1, index).mean()
            return nll

        return probit
    generator = rng.torch_generator("calibrate", mean.device)
    samples = glm_prediction(mean, covariance, Categorical(), num_samples, generator, "mc").samples
    draws = samples.shape[0]
    expanded = index.view(1, -1, 1).expand(draws, -1, 1)

    def monte_carlo(log_temperature: Tensor) -> Tensor:
        log_probs = (samples * torch.exp(-log_temperature)).log_softmax(-1).gather(-1, expanded)
        nll: Tensor = -(torch.logsumexp(log_probs.squeeze(-1), 0) - math.log(draws)).mean()
        return nll

    return monte_carlo
