"""Stochastic-gradient MCMC in plain torch: SGLD, SGHMC and their cyclical variants.

For networks too big for NUTS. With mini-batch ``B`` of a data set of size ``N``, the
potential is estimated as ``U(w) = -log p(w) - (N/|B|) Σ_{i∈B} log p(y_i | x_i, w)``.

* **SGLD** (Welling & Teh 2011): ``w ← w - (ε/2) ∇U + N(0, ε T)``.
* **SGHMC** (Chen, Fox & Guestrin 2014, eq. 15, with ``β̂ = 0``):
  ``v ← (1 - α) v - ε ∇U + N(0, 2 α ε T)``, ``w ← w + v``; ``α`` is the friction.
* **cyclical** schedules (Zhang et al. 2020, "cSG-MCMC"): the step size follows
  ``ε_k = ε_0/2 · (cos(π · (k mod L)/L) + 1)`` over ``cycles`` cycles of length ``L``; the first
  ``exploration`` fraction of each cycle is noise-free optimisation, draws are kept only in the
  rest.

``T`` is the temperature (``T < 1``: a cold posterior). Chains run one after another, chain
``c`` from ``rng.spawn(c)`` (its own shuffling and noise), so adding chains never changes the
first ones. Results are `SampleSet`s.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Literal

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from bnn.default_rng import RNGLike, resolve_rng
from bnn.distributed import DistributedContext, resolve_distributed
from bnn.infer.joint import LogJoint, PriorSpec, check_data
from bnn.likelihoods import Likelihood
from bnn.noise import standard_normal
from bnn.rng import RNG
from bnn.sample_set import SampleSet
from bnn.validation import check_int, check_positive

__all__ = ["SGMCMCHistory", "sghmc", "sgld"]

Schedule = Literal["constant", "cyclical"]


@dataclass
class SGMCMCHistory:
    """Per chain: the potential estimate ``U`` at every step, and the wall time."""

    potential: list[list[float]] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class _Settings:
    method: str
    lr: float
    friction: float
    temperature: float
    steps: int
    burn_in: int
    thin: int
    batch_size: int
    schedule: Schedule
    cycles: int
    exploration: float


def sgld(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    likelihood: Likelihood,
    prior: PriorSpec = None,
    lr: float = 1e-4,
    steps: int = 10_000,
    burn_in: int = 1_000,
    thin: int = 10,
    batch_size: int | None = None,
    num_chains: int = 1,
    temperature: float = 1.0,
    schedule: Schedule = "constant",
    cycles: int = 4,
    exploration: float = 0.5,
    init: str = "current",
    rng: RNGLike = None,
    distributed: bool = False,
    progress: bool = True,
) -> tuple[SampleSet, SGMCMCHistory]:
    """Stochastic gradient Langevin dynamics.

    Args:
        model: any network; Bayesian layers contribute their weights and priors.
        x: inputs ``[N, ...]``; y: targets ``[N, ...]``.
        likelihood: observation model with fixed parameters.
        prior: as in :func:`bnn.infer.nuts`.
        lr: step size ``ε`` (the peak ``ε_0`` for the cyclical schedule).
        steps: steps per chain. burn_in: steps discarded first (constant schedule).
        thin: keep every ``thin``-th step after burn-in.
        batch_size: mini-batch size (default: full batch).
        num_chains: chains, run one after another.
        temperature: ``T`` scaling the injected noise variance.
        schedule: ``"constant"`` or ``"cyclical"`` (then ``cycles`` and ``exploration``;
            ``burn_in`` is ignored: the exploration stage of each cycle plays its role).
        init: ``"current"`` (model weights) or ``"prior"`` (a prior draw per chain).
        rng: randomness; chain ``c`` uses ``rng.spawn(c)``.
        distributed: data-parallel over the initialised ``torch.distributed`` process group:
            every rank passes the same ``x, y`` and seed; ``batch_size`` is per rank, rank ``r``
            evaluates elements ``r, r+R, ...`` of each global batch of ``R·batch_size``, and the
            gradient of the potential is averaged over ranks (log prior counted once), so ``R``
            ranks follow the one-process chain with ``batch_size=R·b``. See
            :mod:`bnn.distributed`.
        progress: show a tqdm bar.

    Returns:
        ``(SampleSet, SGMCMCHistory)``.
    """
    settings = _settings(
        "sgld",
        lr,
        0.0,
        temperature,
        steps,
        burn_in,
        thin,
        batch_size,
        x,
        schedule,
        cycles,
        exploration,
    )
    return _run(
        model, x, y, likelihood, prior, settings, num_chains, init, rng, distributed, progress
    )


def sghmc(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    likelihood: Likelihood,
    prior: PriorSpec = None,
    lr: float = 1e-4,
    friction: float = 0.1,
    steps: int = 10_000,
    burn_in: int = 1_000,
    thin: int = 10,
    batch_size: int | None = None,
    num_chains: int = 1,
    temperature: float = 1.0,
    schedule: Schedule = "constant",
    cycles: int = 4,
    exploration: float = 0.5,
    init: str = "current",
    rng: RNGLike = None,
    distributed: bool = False,
    progress: bool = True,
) -> tuple[SampleSet, SGMCMCHistory]:
    """Stochastic gradient Hamiltonian Monte Carlo with friction ``friction`` (``α`` in (0, 1]).

    Arguments as :func:`sgld`; ``lr`` is ``ε`` in the update ``v ← (1-α)v - ε∇U + N(0, 2αεT)``.
    """
    if not 0.0 < friction <= 1.0:
        raise ValueError(f"friction must be in (0, 1], got {friction!r}.")
    settings = _settings(
        "sghmc",
        lr,
        friction,
        temperature,
        steps,
        burn_in,
        thin,
        batch_size,
        x,
        schedule,
        cycles,
        exploration,
    )
    return _run(
        model, x, y, likelihood, prior, settings, num_chains, init, rng, distributed, progress
    )


def _settings(
    method: str,
    lr: float,
    friction: float,
    temperature: float,
    steps: int,
    burn_in: int,
    thin: int,
    batch_size: int | None,
    x: Tensor,
    schedule: Schedule,
    cycles: int,
    exploration: float,
) -> _Settings:
    check_positive("lr", lr)
    check_positive("temperature", temperature)
    check_int("steps", steps)
    check_int("burn_in", burn_in, minimum=0)
    check_int("thin", thin)
    check_int("cycles", cycles)
    if schedule not in ("constant", "cyclical"):
        raise ValueError(f"schedule must be 'constant' or 'cyclical', got {schedule!r}.")
    if schedule == "constant" and burn_in >= steps:
        raise ValueError(f"burn_in ({burn_in}) must be smaller than steps ({steps}).")
    if not 0.0 <= exploration < 1.0:
        raise ValueError(f"exploration must be in [0, 1), got {exploration!r}.")
    n = x.shape[0] if isinstance(x, Tensor) and x.dim() > 0 else 1
    batch = n if batch_size is None else check_int("batch_size", batch_size)
    return _Settings(
        method,
        float(lr),
        float(friction),
        float(temperature),
        steps,
        burn_in,
        thin,
        min(batch, n),
        schedule,
        cycles,
        float(exploration),
    )


def _run(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    likelihood: Likelihood,
    prior: PriorSpec,
    settings: _Settings,
    num_chains: int,
    init: str,
    rng: RNGLike,
    distributed: bool,
    progress: bool,
) -> tuple[SampleSet, SGMCMCHistory]:
    check_int("num_chains", num_chains)
    model, context = resolve_distributed(model, distributed)
    x, y = check_data(model, x, y)
    parent = resolve_rng(rng)
    if context is not None:
        context.check_same_seed(parent)
        context.broadcast_state(model)
        settings = replace(
            settings, batch_size=min(settings.batch_size * context.world_size, x.shape[0])
        )
    log_joint = LogJoint(model, likelihood, prior)
    history = SGMCMCHistory()
    chains = [
        _run_chain(log_joint, x, y, settings, init, parent.spawn(c), context, progress, history)
        for c in range(num_chains)
    ]
    if not chains[0]:
        raise ValueError("no draws kept: increase steps or reduce burn_in/thin.")
    samples = {
        name: torch.stack([torch.stack([d[name] for d in chain]) for chain in chains])
        for name in chains[0][0]
    }
    return SampleSet(model, samples, is_mcmc=True), history


def _step_size(settings: _Settings, step: int) -> tuple[float, bool]:
    """``(ε_k, keep_noise_and_draws)`` for step ``k``."""
    if settings.schedule == "constant":
        return settings.lr, step >= settings.burn_in
    length = math.ceil(settings.steps / settings.cycles)
    position = (step % length) / length
    return settings.lr / 2 * (math.cos(math.pi * position) + 1), position >= settings.exploration


def _batches(n: int, batch: int, rng: RNG) -> Iterator[Tensor]:
    generator = rng.torch_generator("data")
    while True:
        order = torch.randperm(n, generator=generator) if batch < n else torch.arange(n)
        for start in range(0, n - batch + 1, batch):
            yield order[start : start + batch]


def _run_chain(
    log_joint: LogJoint,
    x: Tensor,
    y: Tensor,
    settings: _Settings,
    init: str,
    rng: RNG,
    context: DistributedContext | None,
    progress: bool,
    history: SGMCMCHistory,
) -> list[dict[str, Tensor]]:
    weights = {
        k: v.detach().clone().requires_grad_(True)
        for k, v in log_joint.initial_weights(init, rng).items()
    }
    momentum = {k: torch.zeros_like(v) for k, v in weights.items()}
    n = x.shape[0]
    scale = n / settings.batch_size
    batches = _batches(n, settings.batch_size, rng)
    draws: list[dict[str, Tensor]] = []
    potentials: list[float] = []
    start = time.perf_counter()
    with rng.stream("sgmcmc"):
        for step in tqdm(range(settings.steps), desc=settings.method, disable=not progress):
            index = next(batches).to(x.device)
            potential, gradients = _potential_and_gradients(
                log_joint, weights, x, y, index, scale, context
            )
            if not bool(torch.isfinite(potential)):
                raise FloatingPointError(
                    f"non-finite potential at step {step} of {settings.method}; lower lr."
                )
            epsilon, sampling = _step_size(settings, step)
            with torch.no_grad():
                for (name, w), g in zip(weights.items(), gradients, strict=True):
                    _update(settings, w, momentum[name], g, epsilon, sampling)
            potentials.append(float(potential.detach()))
            if settings.schedule == "constant":
                keep = sampling and (step - settings.burn_in) % settings.thin == 0
            else:
                keep = sampling and step % settings.thin == 0
            if keep:
                draws.append({k: v.detach().clone() for k, v in weights.items()})
    history.potential.append(potentials)
    history.seconds.append(time.perf_counter() - start)
    return draws


def _potential_and_gradients(
    log_joint: LogJoint,
    weights: dict[str, Tensor],
    x: Tensor,
    y: Tensor,
    index: Tensor,
    scale: float,
    context: DistributedContext | None,
) -> tuple[Tensor, list[Tensor]]:
    """``U`` on the global batch ``index`` and ``∇U`` (averaged over ranks when distributed)."""
    if context is None:
        potential = -log_joint(weights, x[index], y[index], scale)
        return potential, list(torch.autograd.grad(potential, list(weights.values())))
    local = context.local_part(index)
    # Averaging over R ranks: the prior term is kept whole, the data term is R × this rank's share.
    rank_potential = -(
        log_joint.log_prior(weights)
        + scale * context.world_size * log_joint.log_likelihood(weights, x[local], y[local])
    )
    gradients = torch.autograd.grad(rank_potential, list(weights.values()))
    averaged = context.average([rank_potential.detach().reshape(1), *gradients])
    return averaged[0].reshape(()), averaged[1:]


def _update(
    settings: _Settings, w: Tensor, v: Tensor, g: Tensor, epsilon: float, noisy: bool
) -> None:
    noise_scale = 0.0
    if settings.method == "sgld":
        if noisy:
            noise_scale = math.sqrt(epsilon * settings.temperature)
        w.add_(g, alpha=-0.5 * epsilon)
        if noise_scale:
            w.add_(standard_normal(w.shape, dtype=w.dtype, device=w.device), alpha=noise_scale)
        return
    alpha = settings.friction
    v.mul_(1.0 - alpha).add_(g, alpha=-epsilon)
    if noisy:
        noise = standard_normal(v.shape, dtype=v.dtype, device=v.device)
        v.add_(noise, alpha=math.sqrt(2.0 * alpha * epsilon * settings.temperature))
    w.add_(v)
