"""The stages of `bnn.infer.boost`: the loss and its starting output per likelihood, one base
learner fitted to the negative gradient, the line search of its step, and the final noise stage.
"""

from __future__ import annotations

import copy
import functools
import math
from collections.abc import Callable, Mapping

import torch
from torch import Tensor, nn

from bnn._checks import check_int, check_positive
from bnn.infer.history import History
from bnn.infer.training._loop import NonFiniteLossError, build_in_init_stream
from bnn.likelihoods import (
    Bernoulli,
    Categorical,
    Gaussian,
    HeteroscedasticGaussian,
    Likelihood,
)
from bnn.random.rng import RNG

__all__ = [
    "check_arguments",
    "final_stage",
    "fit_learner",
    "line_search",
    "objective",
    "subsample_rows",
]

_LIKELIHOODS = (Gaussian, HeteroscedasticGaussian, Categorical, Bernoulli)
_NEWTON_STEPS = 50


def check_arguments(
    factory: object,
    data: object,
    likelihood: object,
    shrinkage: object,
    subsample: object,
    lr: object,
    counts: Mapping[str, object],
    optimizer: object,
) -> tuple[Tensor, Tensor, Likelihood]:
    """Refuse bad arguments of ``boost`` (``counts``: ``num_stages``, ``epochs``,
    ``noise_epochs``); ``(x, y, likelihood)`` ready for the stages."""
    if not callable(factory):
        raise TypeError("factory must be a callable returning an nn.Module (one weak learner).")
    if not isinstance(likelihood, _LIKELIHOODS):
        raise TypeError(
            "likelihood must be bnn.Gaussian, bnn.HeteroscedasticGaussian, bnn.Categorical or "
            f"bnn.Bernoulli, got {type(likelihood).__name__}."
        )
    if not (
        isinstance(data, tuple) and len(data) == 2 and all(isinstance(t, Tensor) for t in data)
    ):
        raise TypeError("data must be a pair (x, y) of tensors.")
    x, y = data
    if x.dim() == 0 or x.shape[0] == 0 or y.dim() == 0 or x.shape[0] != y.shape[0]:
        raise ValueError(
            f"x has shape {tuple(x.shape)} and y {tuple(y.shape)}; they need the same number "
            "of rows (at least one)."
        )
    if not all(bool(torch.isfinite(t).all()) for t in (x, y) if t.is_floating_point()):
        raise ValueError("x or y contains NaN or inf; clean or impute the data first.")
    check_positive("shrinkage", shrinkage)
    check_positive("subsample", subsample)
    check_positive("lr", lr)
    assert isinstance(shrinkage, float | int) and isinstance(subsample, float | int)
    if shrinkage > 1 or subsample > 1:
        raise ValueError(
            f"shrinkage and subsample must lie in (0, 1], got {shrinkage} and {subsample}."
        )
    for name, value in counts.items():
        check_int(name, value, minimum=0 if name == "noise_epochs" else 1)
    if isinstance(likelihood, HeteroscedasticGaussian) and counts["noise_epochs"] == 0:
        raise ValueError(
            "noise_epochs=0 would leave the heteroscedastic noise head untrained (its std a "
            "random function of x); pass noise_epochs >= 1 (default 300), or a bnn.Gaussian "
            "to learn one noise std."
        )
    if optimizer not in ("adam", "lbfgs"):
        raise ValueError(f"optimizer must be 'adam' or 'lbfgs', got {optimizer!r}.")
    return x, y, likelihood


def objective(
    likelihood: Likelihood, x: Tensor, y: Tensor
) -> tuple[Callable[[Tensor], Tensor], Tensor, Tensor]:
    """The boosting loss of an output ``F`` ``[N, D]``, the checked targets and ``F_0``."""
    dtype = x.dtype if x.is_floating_point() else torch.get_default_dtype()
    if isinstance(likelihood, Categorical):
        if y.dim() != 1:
            raise ValueError(
                f"Categorical targets must be class indices [N], got {tuple(y.shape)}."
            )
        num_classes = int(y.max()) + 1
        labels = likelihood.check_targets(torch.zeros(y.shape[0], num_classes), y)
        counts = torch.bincount(labels, minlength=num_classes).to(dtype)
        initial = torch.log(counts.clamp_min(0.5) / counts.sum())  # empirical log-frequencies

        def categorical(output: Tensor) -> Tensor:
            return -likelihood.log_density(output, labels).mean()

        return categorical, labels, initial.to(x.device)
    targets = y.unsqueeze(-1) if y.dim() == 1 else y.reshape(y.shape[0], -1)
    targets = targets.to(dtype)
    if isinstance(likelihood, Bernoulli):
        targets = likelihood.check_targets(targets, targets)
        rate = targets.mean().clamp(1e-6, 1 - 1e-6)
        initial = torch.log(rate / (1 - rate)).reshape(1)

        def bernoulli(output: Tensor) -> Tensor:
            return -likelihood.log_density(output, targets).mean()

        return bernoulli, targets, initial

    def squared(output: Tensor) -> Tensor:
        return 0.5 * ((output - targets) ** 2).sum(-1).mean()

    return squared, targets, targets.mean(0)


def subsample_rows(n: int, fraction: float, rng: RNG) -> Tensor:
    """Sorted indices of ``⌈fraction·n⌉`` rows without replacement (all rows when ``≥ 1``)."""
    if fraction >= 1:
        return torch.arange(n)
    size = max(1, math.ceil(fraction * n))
    return torch.randperm(n, generator=rng.torch_generator("subsample"))[:size].sort().values


LEARNER_CHUNK = 65_536
"""Rows per forward/backward pass of a weak learner's full-batch step (more: accumulated)."""


def fit_learner(
    learner: nn.Module,
    x: Tensor,
    target: Tensor,
    *,
    epochs: int,
    lr: float,
    optimizer: str,
    rng: RNG,
    stage: object,
) -> None:
    """Full-batch Adam or L-BFGS on the mean squared error to ``target``."""
    parameters = list(learner.parameters())
    method: torch.optim.Optimizer
    if optimizer == "lbfgs":
        method = torch.optim.LBFGS(
            parameters,
            lr=lr,
            max_iter=epochs,
            tolerance_grad=1e-12,
            tolerance_change=1e-15,
            line_search_fn="strong_wolfe",
        )
    else:
        method = torch.optim.Adam(parameters, lr=lr)

    def closure() -> Tensor:
        method.zero_grad()
        loss = _backward_in_chunks(functools.partial(_squared_error, learner), x, target)
        if not bool(torch.isfinite(loss)):
            raise NonFiniteLossError(
                f"non-finite loss fitting the learner of stage {stage}; lower lr."
            )
        return loss

    learner.train()
    with rng.stream("boost"):
        for _ in range(1 if optimizer == "lbfgs" else epochs):
            method.step(closure)  # type: ignore[no-untyped-call]


def _backward_in_chunks(
    share: Callable[[Tensor, Tensor, int], Tensor], x: Tensor, target: Tensor
) -> Tensor:
    """Backpropagate a full-batch mean loss; return its value (detached above one chunk).

    ``share(x_rows, target_rows, total)`` is those rows' share of the mean over all ``total``
    rows. Up to ``LEARNER_CHUNK`` rows it is one pass; above, the same gradient is accumulated
    chunk by chunk, so memory does not grow with the rows.
    """
    if x.shape[0] <= LEARNER_CHUNK:
        loss = share(x, target, x.shape[0])
        loss.backward()  # type: ignore[no-untyped-call]
        return loss
    loss = torch.zeros((), dtype=target.dtype, device=target.device)
    for inputs, targets in zip(
        torch.split(x, LEARNER_CHUNK), torch.split(target, LEARNER_CHUNK), strict=True
    ):
        part = share(inputs, targets, x.shape[0])
        part.backward()  # type: ignore[no-untyped-call]
        loss = loss + part.detach()
    return loss


def _squared_error(learner: nn.Module, x: Tensor, target: Tensor, total: int) -> Tensor:
    """``Σ (learner(x) − target)² / (total · D)``: the rows' share of the mean squared error."""
    output = learner(x)
    if output.shape != target.shape:
        raise ValueError(
            f"the weak learner outputs {tuple(output.shape)} but the pseudo-residuals "
            f"are {tuple(target.shape)}; give the factory's network that many outputs."
        )
    squared: Tensor = (output - target) ** 2
    if x.shape[0] == total:
        return squared.mean()
    return squared.sum() / (total * target[0].numel())


def line_search(loss_fn: Callable[[Tensor], Tensor], output: Tensor, direction: Tensor) -> float:
    """``argmin_ρ L(output + ρ · direction)`` by damped Newton steps on the scalar ``ρ``.

    ``L`` is convex in ``ρ``; the direction is normalised to unit RMS first so that the
    stopping rule does not depend on its size. Each accepted step decreases ``L``.
    """
    size = float(direction.pow(2).mean().sqrt())
    if not math.isfinite(size) or size == 0.0:
        return 0.0
    unit = direction / size
    rho = 0.0
    value = float(loss_fn(output))
    for _ in range(_NEWTON_STEPS):
        point = torch.tensor(rho, dtype=output.dtype, device=output.device, requires_grad=True)
        loss = loss_fn(output + point * unit)
        (first,) = torch.autograd.grad(loss, point, create_graph=True)
        (second,) = torch.autograd.grad(first, point)
        slope, curvature = float(first.detach()), float(second)
        if not (math.isfinite(slope) and math.isfinite(curvature)) or curvature <= 0:
            break
        change = -slope / curvature
        while True:  # halve the Newton step until L decreases (it does for small steps)
            trial = float(loss_fn(output + (rho + change) * unit))
            if trial <= value or abs(change) <= 1e-15 * (1 + abs(rho)):
                break
            change /= 2
        if trial > value:
            break
        rho, value = rho + change, trial
        if abs(change) <= 1e-12 * (1 + abs(rho)):
            break
    return rho / size


def final_stage(
    factory: Callable[[], nn.Module],
    likelihood: Likelihood,
    x: Tensor,
    targets: Tensor,
    output: Tensor,
    epochs: int,
    lr: float,
    rng: RNG,
    history: History,
) -> tuple[nn.Module | None, Likelihood]:
    """The probabilistic final stage of a regression (see the module docstring)."""
    if isinstance(likelihood, Gaussian) and likelihood.learn_std:
        fitted = copy.deepcopy(likelihood)
        squared = (targets - output) ** 2  # one RMS per output for one std per output
        rms = (squared.mean(0) if fitted.log_std.dim() else squared.mean()).sqrt().clamp_min(1e-12)
        with torch.no_grad():
            fitted.log_std.copy_(rms.log().to(fitted.log_std))
        return None, fitted
    if not isinstance(likelihood, HeteroscedasticGaussian):
        return None, likelihood
    child = rng.spawn("noise")
    noise = build_in_init_stream(factory, child)
    optimizer = torch.optim.Adam(noise.parameters(), lr=lr)
    residual = (targets - output).detach()
    value = math.nan
    noise.train()
    share = functools.partial(_noise_nll, noise, likelihood)
    with child.stream("boost"):
        for _ in range(epochs):
            optimizer.zero_grad()
            nll = _backward_in_chunks(share, x, residual)
            if not bool(torch.isfinite(nll)):
                raise NonFiniteLossError("non-finite NLL fitting the noise head; lower lr.")
            optimizer.step()
            value = float(nll.detach())
    history.extras["noise_nll"] = value
    return noise.eval(), likelihood


def _noise_nll(
    noise: nn.Module, likelihood: Likelihood, x: Tensor, residual: Tensor, total: int
) -> Tensor:
    """The rows' share of the noise head's mean NLL of the residuals (zero mean)."""
    raw = noise(x)
    mean = torch.zeros_like(residual)
    log_density = likelihood.log_density(torch.cat([mean, raw], -1), residual)
    if x.shape[0] == total:
        return -log_density.mean()
    return -log_density.sum() / total
