"""Choosing a Laplace posterior's prior precision ``δ`` and noise ``σ``.

Two ways, both behind `LaplacePosterior.optimize_prior_precision`: the Laplace marginal
likelihood maximised by Adam over ``log δ`` and ``log σ`` (Immer et al. 2021), or a grid search
for the best log predictive density of a validation set under the linearised predictive.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from bnn.infer.history import History
from bnn.likelihoods import Categorical, Gaussian, Likelihood
from bnn.posterior._glm import check_glm_likelihood
from bnn.posterior._linearise import output_jacobians
from bnn.posterior.protocol import check_memory_budget

if TYPE_CHECKING:
    from bnn.infer.laplace import LaplacePosterior

__all__ = ["optimize_marglik", "optimize_on_validation"]


def optimize_marglik(
    posterior: LaplacePosterior, per_layer: bool, optimize_noise: bool, steps: int, lr: float
) -> History:
    """Maximise the Laplace log marginal likelihood over ``log δ`` (and ``log σ``) by Adam."""
    size = len(posterior.groups) if per_layer else 1
    log_precision = posterior._prior_precision.detach().log().expand(size).clone()
    log_precision = log_precision.reshape(()) if size == 1 and not per_layer else log_precision
    log_precision.requires_grad_(True)
    variables = [log_precision]
    log_noise = None
    if posterior._log_noise is not None and optimize_noise:
        log_noise = posterior._log_noise.detach().clone().to(posterior.mean).requires_grad_(True)
        variables.append(log_noise)
    optimizer = torch.optim.Adam(variables, lr=lr)
    history = History("laplace_marglik", metrics={"neg_log_marglik": []})
    for _ in range(steps):
        optimizer.zero_grad()
        loss = -posterior.log_marginal_likelihood(
            log_precision.exp(), None if log_noise is None else log_noise.exp()
        )
        loss.backward()  # type: ignore[no-untyped-call]
        optimizer.step()
        history.record(neg_log_marglik=float(loss.detach()))
    posterior._prior_precision = log_precision.detach().exp()
    if log_noise is not None:
        posterior._log_noise = log_noise.detach()
    posterior._rebuild()
    return history


def optimize_on_validation(
    posterior: LaplacePosterior,
    validation: tuple[Tensor, Tensor] | None,
    grid: Tensor | None,
    noise_grid: Tensor | None,
) -> History:
    """The scalar ``δ`` on ``grid`` (and ``σ`` among ``noise_grid`` × the current ``σ``) with the
    best log predictive density of ``validation`` under the linearised predictive."""
    if not (isinstance(validation, tuple) and len(validation) == 2):
        raise ValueError("method='validation' needs validation=(x_val, y_val).")
    check_glm_likelihood(posterior.likelihood)
    x, y = validation
    values = torch.logspace(-4, 4, 41, dtype=torch.float64) if grid is None else grid
    noises: list[float | None] = [None]  # None: keep the current σ
    current = posterior.noise_std
    if current is not None and noise_grid is not None:
        noises = [current * float(factor) for factor in noise_grid]
    budget = check_memory_budget(None, x.device)
    outputs, jacobian = output_jacobians(posterior.model, posterior.names, x, budget)
    history = History("laplace_validation", metrics={"val_nll": []}, extras={"grid": []})
    scores = []
    for value in values.tolist():
        for noise in noises:
            log_noise = (
                posterior._log_noise
                if noise is None
                else posterior.mean.new_tensor(math.log(noise))
            )
            likelihood = posterior.likelihood if noise is None else Gaussian(noise)
            factor = posterior._factor(posterior.mean.new_tensor(value), log_noise)
            nll = _glm_nll(outputs.detach(), factor.functional(jacobian.detach()), y, likelihood)
            scores.append(nll)
            history.record(val_nll=nll)
            history.extras["grid"].append((value, noise))
    best_value, best_noise = history.extras["grid"][int(torch.tensor(scores).argmin())]
    if best_noise is not None:
        posterior._log_noise = posterior.mean.new_tensor(math.log(best_noise))
    posterior.prior_precision = float(best_value)
    return history


def _glm_nll(mean: Tensor, covariance: Tensor, y: Tensor, likelihood: Likelihood | None) -> float:
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
