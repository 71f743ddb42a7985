"""Choosing a Laplace posterior's prior precision ``δ`` and noise ``σ``.

The two searches behind `LaplacePosterior.optimize_prior_precision`, as functions of the
objective alone: the Laplace log marginal likelihood maximised by Adam over ``log δ`` and
``log σ`` (Immer et al. 2021), and a grid search for the best validation score, with the
negative log predictive density of the linearised (GLM) predictive that it scores.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from bnn.infer.history import History
from bnn.likelihoods import Categorical, Gaussian, Likelihood

__all__ = ["glm_nll", "maximise_marglik", "search_grid"]

LogMarginalLikelihood = Callable[[Tensor, Tensor | None], Tensor]
"""``(δ, σ or None) -> log p(D | δ, σ)``, differentiable in both."""


def maximise_marglik(
    log_marglik: LogMarginalLikelihood,
    precision: Tensor,
    log_noise: Tensor | None,
    *,
    size: int,
    scalar: bool,
    reference: Tensor,
    steps: int,
    lr: float,
) -> tuple[Tensor, Tensor | None, History]:
    """Adam on ``log δ`` (``size`` values, 0-dim when ``scalar``) and ``log σ`` (``None``: σ is
    kept), from ``precision`` and ``log_noise``; ``log σ`` in the dtype and device of
    ``reference``.

    Returns:
        ``(δ, log σ or None, history)``, with ``neg_log_marglik`` per step.
    """
    log_precision = precision.detach().log().expand(size).clone()
    log_precision = log_precision.reshape(()) if scalar else log_precision
    log_precision.requires_grad_(True)
    variables = [log_precision]
    if log_noise is not None:
        log_noise = log_noise.detach().clone().to(reference).requires_grad_(True)
        variables.append(log_noise)
    optimizer = torch.optim.Adam(variables, lr=lr)
    history = History("laplace_marglik", metrics={"neg_log_marglik": []})
    for _ in range(steps):
        optimizer.zero_grad()
        loss = -log_marglik(log_precision.exp(), None if log_noise is None else log_noise.exp())
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
        history.record(neg_log_marglik=float(loss.detach()))
    best_noise = None if log_noise is None else log_noise.detach()
    return log_precision.detach().exp(), best_noise, history


def search_grid(
    score: Callable[[float, float | None], float],
    values: list[float],
    noises: list[float | None],
) -> tuple[float, float | None, History]:
    """The ``(δ, σ)`` pair of ``values × noises`` with the lowest ``score`` (the first of
    equals).

    Returns:
        ``(δ, σ, history)``: ``val_nll`` per pair, ``δ``-major, the pairs in
        ``extras["grid"]``.
    """
    history = History("laplace_validation", metrics={"val_nll": []}, extras={"grid": []})
    scores = []
    for value in values:
        for noise in noises:
            nll = score(value, noise)
            scores.append(nll)
            history.record(val_nll=nll)
            history.extras["grid"].append((value, noise))
    best_value, best_noise = history.extras["grid"][int(torch.tensor(scores).argmin())]
    return best_value, best_noise, history


def glm_nll(mean: Tensor, covariance: Tensor, y: Tensor, likelihood: Likelihood | None) -> float:
    """Mean negative log predictive density of ``y`` under the linearised predictive."""
    if isinstance(likelihood, Categorical):
        variance = covariance.diagonal(dim1=-2, dim2=-1)
        probs = (mean / (1 + math.pi / 8 * variance).sqrt()).log_softmax(-1)
        return float(-probs.gather(-1, y.long().reshape(-1, 1)).mean())
    noise = likelihood.std.detach().to(mean) ** 2 if isinstance(likelihood, Gaussian) else 0.0
    flat = mean.reshape(mean.shape[0], -1)
    eye = torch.eye(flat.shape[1], dtype=mean.dtype, device=mean.device)
    normal = torch.distributions.MultivariateNormal(flat, covariance + noise * eye)
    log_density: Tensor = normal.log_prob(y.reshape(flat.shape))  # type: ignore[no-untyped-call]
    return float(-log_density.mean())
