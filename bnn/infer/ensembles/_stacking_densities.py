"""The members' validation log densities of ``stack``: their predictives (a member with
non-finite outputs named), the log predictive density of each validation point, or its
PSIS-LOO estimate from the pointwise log-likelihood of every function sample."""

from __future__ import annotations

import torch
from torch import Tensor

from bnn.infer.ensembles._psis import psis_loo
from bnn.infer.history import History
from bnn.likelihoods import ClassificationPrediction, Likelihood, Prediction, RegressionPrediction
from bnn.posterior.closed_form import ClosedFormPredictive
from bnn.random.rng import RNG

__all__ = ["closed_form", "event_shape", "member_log_densities", "member_prediction"]


def closed_form(
    member: object,
    x: Tensor,
    likelihood: Likelihood | None,
    num_samples: int,
    rng: RNG,
    memory_budget: int,
) -> Prediction | None:
    """Member's own closed-form predictive at ``x`` (what ``bnn.predict_with_uncertainty``
    gives for it alone: a GP's exact Gaussian, Laplace's GLM), or ``None`` to sample it.

    Its ``samples`` ``[S, N, ...]`` are draws of each input's ``f`` (PSIS-LOO needs no more).
    A classification predictive with fewer components than samples (the probit link) is
    replaced by the link averaged over those draws: the mixture of members weighs
    classification components equally.
    """
    if not isinstance(member, ClosedFormPredictive):
        return None
    direct = member.closed_form_prediction(
        x, likelihood=likelihood, num_samples=num_samples, rng=rng, memory_budget=memory_budget
    )
    if (
        likelihood is not None
        and isinstance(direct, ClassificationPrediction)
        and direct.class_probs.shape[0] != direct.samples.shape[0]
    ):
        return likelihood.predict(direct.samples)
    return direct


def member_prediction(k: int, likelihood: Likelihood, samples: Tensor) -> Prediction:
    """Member ``k``'s validation predictive; a member with non-finite outputs is named."""
    try:
        return likelihood.predict(samples)
    except ValueError as error:
        raise ValueError(f"stack: posterior {k} of the list: {error}") from error


def member_log_densities(
    method: str,
    predictions: list[Prediction],
    likelihoods: list[Likelihood],
    samples: list[Tensor],
    y_val: Tensor,
    history: History,
) -> Tensor:
    """Each member's log predictive density of every validation point ``[K, n]``: the
    validation predictive's, or the PSIS-LOO estimate (its Pareto k̂ in ``history``)."""
    if method == "validation":
        return torch.stack([p.log_likelihood(y_val).to(torch.float64) for p in predictions])
    pointwise = [
        pointwise_log_likelihood(lk, s, y_val) for lk, s in zip(likelihoods, samples, strict=True)
    ]
    loo = [psis_loo(values) for values in pointwise]
    history.extras["max_pareto_k"] = [float(k_hat.max()) for _, k_hat in loo]
    return torch.stack([elpd for elpd, _ in loo])


def event_shape(prediction: Prediction) -> tuple[str, tuple[int, ...]]:
    if isinstance(prediction, RegressionPrediction):
        return "regression", tuple(prediction.loc.shape[1:])
    if isinstance(prediction, ClassificationPrediction):
        return "classification", tuple(prediction.class_probs.shape[1:])
    return type(prediction).__name__, tuple(prediction.samples.shape[1:])


def pointwise_log_likelihood(likelihood: Likelihood, samples: Tensor, y: Tensor) -> Tensor:
    """``log p(y_i | f_s(x_i))`` ``[S, N]`` for every function sample."""
    s, n = samples.shape[:2]
    flat = samples.reshape(s * n, *samples.shape[2:])
    targets = likelihood.check_targets(samples[0], y)
    repeated = targets.unsqueeze(0).expand(s, *targets.shape).reshape(s * n, *targets.shape[1:])
    return likelihood.log_density(flat, repeated).reshape(s, n).to(torch.float64)
