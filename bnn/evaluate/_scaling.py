"""What the scaling recalibrations share: the wrapper that records the calibration NLL, the
logit map applied to every function sample, the likelihood they use, and the L-BFGS fit of
their parameters on the calibration NLL."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from bnn.evaluate._conformal import ConformalPosterior
from bnn.evaluate._conformal_scores import check_calibration_pair
from bnn.likelihoods import Bernoulli, Categorical, Likelihood
from bnn.posterior.protocol import Posterior
from bnn.posterior.wrapper import PosteriorWrapper
from bnn.predict import observation_model
from bnn.random import GLOBAL_STATE_LOCK
from bnn.random.default import RNGLike, resolve_rng

_LOG_FACTOR_BOUND = math.log(1e4)  # fitted factors are confined to [1e-4, 1e4]

__all__ = [
    "LogitMap",
    "ScalingWrapper",
    "calibration_logits",
    "check_temperature",
    "classification_likelihood",
    "minimise",
    "minimise_log_factor",
    "resolve_likelihood",
]


class ScalingWrapper(PosteriorWrapper):
    """A fitted recalibration: the wrapper, the likelihood it was fitted with, and its
    calibration-set NLL before and after fitting.

    It carries that likelihood (``None``: the wrapped posterior's own, if it carries one), so a
    prediction without ``likelihood=`` is the calibrated one and another likelihood is refused.
    """

    def __init__(self, posterior: Posterior, likelihood: Likelihood | None = None) -> None:
        super().__init__(posterior)
        if likelihood is not None and not isinstance(likelihood, Likelihood):
            raise TypeError(
                f"likelihood must be a bnn Likelihood, got {type(likelihood).__name__}."
            )
        self.likelihood = likelihood
        self.nll_before = math.nan
        self.nll_after = math.nan

    @property
    def predictive_likelihood(self) -> Likelihood | None:
        """The likelihood the recalibration was fitted with (else the wrapped posterior's)."""
        return self.likelihood if self.likelihood is not None else super().predictive_likelihood


class LogitMap(ScalingWrapper):
    """A classifier posterior whose function samples (logits) go through ``transform``; the
    likelihood it carries is a classification one, so a prediction without ``likelihood=``
    reads the logits as class scores."""

    def __init__(self, posterior: Posterior, likelihood: Likelihood | None = None) -> None:
        if likelihood is not None and not isinstance(likelihood, Categorical | Bernoulli):
            raise TypeError(
                f"{type(self).__name__} maps logits: its likelihood must be bnn.Categorical() "
                f"or bnn.Bernoulli(), got {type(likelihood).__name__}."
            )
        super().__init__(posterior, likelihood)

    def transform(self, logits: Tensor) -> Tensor:
        """The map applied to the wrapped posterior's samples ``[S, N, ...]``."""
        raise NotImplementedError

    def sample_functions(
        self,
        x: Tensor,
        num_samples: int,
        *,
        rng: RNGLike = None,
        memory_budget: int | None = None,
    ) -> Tensor:
        """The wrapped posterior's logits at ``x``, transformed: ``[S, N, ...]``."""
        samples = self.posterior.sample_functions(
            x, num_samples, rng=rng, memory_budget=memory_budget
        )
        return self.transform(samples)


def check_temperature(temperature: object) -> float:
    """``temperature`` as a positive finite float, or a ValueError that says what it got."""
    if not (isinstance(temperature, float | int) and math.isfinite(temperature)):
        raise ValueError(f"temperature must be a finite number, got {temperature!r}.")
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}.")
    return float(temperature)


def resolve_likelihood(
    posterior: Posterior, likelihood: Likelihood | None, default: Likelihood
) -> Likelihood:
    """The one the posterior carries (``likelihood`` may repeat it; another one is refused),
    else the caller's, else ``default``."""
    if not isinstance(posterior, Posterior):
        raise TypeError(
            f"posterior must be a bnn Posterior (what a bnn.infer method returns), got "
            f"{type(posterior).__name__}."
        )
    if likelihood is not None and not isinstance(likelihood, Likelihood):
        raise TypeError(f"likelihood must be a bnn Likelihood, got {type(likelihood).__name__}.")
    return observation_model(posterior, likelihood, "calibrate") or default


def classification_likelihood(
    posterior: Posterior, likelihood: Likelihood | None, what: str
) -> Likelihood:
    """`resolve_likelihood` with ``Categorical`` as the default, refused unless it models logits
    (``what`` names the method in the message)."""
    if isinstance(posterior, ConformalPosterior):
        raise TypeError(
            f"{what} would read this conformal posterior's logits and drop its calibrated "
            "prediction sets; apply it to the posterior that was conformalized instead (one "
            "recalibration per posterior)."
        )
    likelihood = resolve_likelihood(posterior, likelihood, Categorical())
    if not isinstance(likelihood, Categorical | Bernoulli):
        raise TypeError(
            f"{what} needs logits: a bnn.Categorical or bnn.Bernoulli likelihood, got "
            f"{type(likelihood).__name__}; for regression use std_scale."
        )
    return likelihood


def calibration_logits(
    posterior: Posterior,
    likelihood: Likelihood | None,
    x_cal: Tensor,
    y_cal: Tensor,
    num_samples: int,
    rng: RNGLike,
    what: str,
) -> tuple[Likelihood, Tensor]:
    """The classification likelihood, and the posterior's ``S`` logit samples at ``x_cal`` in
    float64 ``[S, n, ...]`` (drawn once: common random numbers for the fit).

    Raises:
        TypeError / ValueError: not a classification likelihood (``what`` names the method in
            the message), a bad calibration pair.
    """
    likelihood = classification_likelihood(posterior, likelihood, what)
    check_calibration_pair(x_cal, y_cal, num_samples)
    with torch.no_grad(), GLOBAL_STATE_LOCK:
        logits = posterior.sample_functions(x_cal, num_samples, rng=resolve_rng(rng))
    return likelihood, logits.detach().to(torch.float64)


def minimise(
    objective: Callable[[Tensor], Tensor], start: Tensor, bound: float | None = None
) -> Tensor:
    """Minimise a smooth function of a parameter vector by L-BFGS from ``start`` (each entry
    confined to ``[−bound, bound]`` when given); the argmin.

    Raises:
        ValueError: the objective is not finite at the result.
    """
    parameters = start.clone().requires_grad_(True)
    optimizer = torch.optim.LBFGS(
        [parameters],
        lr=1.0,
        max_iter=200,
        tolerance_grad=1e-12,
        tolerance_change=1e-15,
        line_search_fn="strong_wolfe",
    )

    def confined(values: Tensor) -> Tensor:
        return values if bound is None else values.clamp(-bound, bound)

    def closure() -> Tensor:
        optimizer.zero_grad()
        value: Tensor = objective(confined(parameters))
        value.backward()  # type: ignore[no-untyped-call]
        return value

    optimizer.step(closure)  # type: ignore[no-untyped-call]
    result = confined(parameters.detach())
    if not bool(torch.isfinite(result).all()):
        raise ValueError("the calibration objective is not finite; check the calibration data.")
    return result


def minimise_log_factor(objective: Callable[[Tensor], Tensor], device: torch.device) -> float:
    """Minimise a smooth function of one log-parameter (a log temperature or log factor) by
    L-BFGS from 0, confined to ``[log 1e-4, log 1e4]``; its argmin."""
    start = torch.zeros((), dtype=torch.float64, device=device)
    return float(minimise(objective, start, _LOG_FACTOR_BOUND))
