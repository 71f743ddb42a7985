"""The chain mechanics of ``bnn.infer.mcmc.sgmcmc``: settings and step-size schedules, mini-batch
order, one chain's state, its steps (SGLD and SGHMC updates) and its checkpointable segments."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor

from bnn._checks import check_int
from bnn._progress import progress_bar
from bnn.infer._indexed_data import IndexedData
from bnn.infer._log_joint import LogJoint
from bnn.infer.checkpoint import UNSAVED_SEGMENT
from bnn.infer.training._loop import NonFiniteLossError
from bnn.parallel.distributed import TrainingStrategy
from bnn.random.draws import standard_normal
from bnn.random.rng import RNG


@dataclass(frozen=True)
class StepSchedule:
    """How long an SG-MCMC chain runs and which steps become draws.

    Attributes:
        kind: ``"constant"`` step size, or ``"cyclical"`` (cosine cycles; then ``cycles`` and
            ``exploration``; ``burn_in`` is ignored: the exploration stage of each cycle plays
            its role).
        steps: steps per chain (≥ 1).
        burn_in: steps discarded first (constant schedule; < ``steps``).
        thin: keep every ``thin``-th step after burn-in.
        cycles: cycles of the cyclical schedule.
        exploration: fraction of each cycle spent in noise-free optimisation, in ``[0, 1)``.
    """

    kind: Literal["constant", "cyclical"] = "constant"
    steps: int = 10_000
    burn_in: int = 1_000
    thin: int = 10
    cycles: int = 4
    exploration: float = 0.5

    def __post_init__(self) -> None:
        check_int("steps", self.steps)
        check_int("burn_in", self.burn_in, minimum=0)
        check_int("thin", self.thin)
        check_int("cycles", self.cycles)
        if self.kind not in ("constant", "cyclical"):
            raise ValueError(f"schedule kind must be 'constant' or 'cyclical', got {self.kind!r}.")
        if self.kind == "constant" and self.burn_in >= self.steps:
            raise ValueError(f"burn_in ({self.burn_in}) must be smaller than steps ({self.steps}).")
        if not 0.0 <= self.exploration < 1.0:
            raise ValueError(f"exploration must be in [0, 1), got {self.exploration!r}.")


@dataclass(frozen=True)
class _Settings:
    method: str
    lr: float
    friction: float
    temperature: float
    batch_size: int | None  # None until the data are known (then the global batch)
    schedule: StepSchedule

    # the schedule's fields, read by the update loop
    @property
    def steps(self) -> int:
        return self.schedule.steps

    @property
    def burn_in(self) -> int:
        return self.schedule.burn_in

    @property
    def thin(self) -> int:
        return self.schedule.thin


def _step_size(settings: _Settings, step: int) -> tuple[float, bool]:
    """``(ε_k, keep_noise_and_draws)`` for step ``k``."""
    schedule = settings.schedule
    if schedule.kind == "constant":
        return settings.lr, step >= schedule.burn_in
    length = math.ceil(schedule.steps / schedule.cycles)
    position = (step % length) / length
    return settings.lr / 2 * (math.cos(math.pi * position) + 1), position >= schedule.exploration


class _BatchOrder:
    """Mini-batch indices: a fresh permutation (generator ``"data"``) whenever one runs out.

    Only whole batches are used; the state (permutation, position) is checkpointable.
    """

    def __init__(self, n: int, batch: int, rng: RNG) -> None:
        self.n, self.batch = n, batch
        self.generator = rng.torch_generator("data")
        self.order: Tensor | None = None
        self.position = 0

    def next(self) -> Tensor:
        if self.order is None or self.position + self.batch > self.n:
            full = self.batch >= self.n
            self.order = (
                torch.arange(self.n) if full else torch.randperm(self.n, generator=self.generator)
            )
            self.position = 0
        index = self.order[self.position : self.position + self.batch]
        self.position += self.batch
        return index


@dataclass
class _Chain:
    """A chain in progress: its current weights and momentum, and what it recorded so far."""

    weights: dict[str, Tensor]
    momentum: dict[str, Tensor]
    draws: list[dict[str, Tensor]] = field(default_factory=list)
    potential: list[float] = field(default_factory=list)
    step_size: list[float] = field(default_factory=list)
    step: int = 0
    seconds: float = 0.0

    @classmethod
    def start(cls, log_joint: LogJoint, init: str, rng: RNG) -> _Chain:
        weights = {
            k: v.detach().clone().requires_grad_(True)
            for k, v in log_joint.initial_weights(init, rng).items()
        }
        return cls(weights, {k: torch.zeros_like(v) for k, v in weights.items()})

    @classmethod
    def resume(cls, saved: dict[str, Any], rng: RNG, batches: _BatchOrder) -> _Chain:
        """The chain of a checkpoint's ``current`` entry; restores ``rng`` and ``batches``."""
        rng.load_state_dict(saved["rng"])
        batches.order, batches.position = saved["order"], int(saved["position"])
        kept = saved["draws"]
        count = 0 if kept is None else len(next(iter(kept.values())))
        return cls(
            weights={k: v.clone().requires_grad_(True) for k, v in saved["weights"].items()},
            momentum={k: v.clone() for k, v in saved["momentum"].items()},
            draws=[{k: v[i] for k, v in kept.items()} for i in range(count)],
            potential=list(saved["potential"]),
            step_size=list(saved["step_size"]),
            step=int(saved["step"]),
            seconds=float(saved["seconds"]),
        )

    def result(self) -> dict[str, Any]:
        """Draws (name -> ``[draw, ...]``, ``None`` if none), ``potential``, ``step_size``,
        ``seconds``."""
        return {
            "draws": _stacked(self.draws),
            "potential": self.potential,
            "step_size": self.step_size,
            "seconds": self.seconds,
        }

    def state_dict(self, batches: _BatchOrder, rng: RNG) -> dict[str, Any]:
        """``result()`` plus everything the next step depends on (a checkpoint entry)."""
        return self.result() | {
            "step": self.step,
            "weights": {k: v.detach() for k, v in self.weights.items()},
            "momentum": self.momentum,
            "order": batches.order,
            "position": batches.position,
            "rng": rng.state_dict(),
        }


def _run_chain(
    log_joint: LogJoint,
    data: IndexedData,
    settings: _Settings,
    init: str,
    rng: RNG,
    strategy: TrainingStrategy,
    progress: bool,
    resume: dict[str, Any] | None = None,
    save: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """One chain, in segments of one pass over the data; ``save`` is called after each.

    Without ``save``, segments of at least ``UNSAVED_SEGMENT`` steps: entering the RNG stream
    swaps every global generator, which costs more than a step of a small model.

    Returns ``_Chain.result()``.
    """
    n, batch_size = len(data), _batch_size(settings)
    batches = _BatchOrder(n, batch_size, rng)
    chain = (
        _Chain.start(log_joint, init, rng)
        if resume is None
        else _Chain.resume(resume, rng, batches)
    )
    segment = max(1, n // batch_size)
    if save is None:  # no checkpoint to write after each pass: fewer stream switches
        segment = max(segment, UNSAVED_SEGMENT)
    bar = progress_bar(
        range(chain.step, settings.steps), desc=settings.method, disable=not progress
    )
    while chain.step < settings.steps:
        start, stop = time.perf_counter(), min(chain.step + segment, settings.steps)
        with rng.stream("sgmcmc"):
            for k in range(chain.step, stop):
                _step(log_joint, chain, data, batches.next(), settings, k, strategy)
                if progress and k % 50 == 0:
                    bar.set_postfix(
                        potential=f"{chain.potential[-1]:.4g}", step=f"{chain.step_size[-1]:.3g}"
                    )
        bar.update(stop - chain.step)
        chain.step = stop
        chain.seconds += time.perf_counter() - start
        if save is not None and chain.step < settings.steps:
            save(chain.state_dict(batches, rng))
    bar.close()
    return chain.result()


def _step(
    log_joint: LogJoint,
    chain: _Chain,
    data: IndexedData,
    index: Tensor,
    settings: _Settings,
    k: int,
    strategy: TrainingStrategy,
) -> None:
    """Step ``k`` of ``chain`` on the mini-batch ``index``; records potential, step and draw."""
    potential, gradients = _potential_and_gradients(
        log_joint, chain.weights, data, index, len(data) / _batch_size(settings), strategy
    )
    if not bool(torch.isfinite(potential)):
        raise NonFiniteLossError(
            f"non-finite potential at step {k} of {settings.method}; lower lr."
        )
    epsilon, sampling = _step_size(settings, k)
    with torch.no_grad():
        for (name, w), g in zip(chain.weights.items(), gradients, strict=True):
            _update(settings, w, chain.momentum[name], g, epsilon, sampling)
    chain.potential.append(float(potential.detach()))
    chain.step_size.append(epsilon)
    if _keeps(settings, k, sampling):
        chain.draws.append({name: w.detach().clone() for name, w in chain.weights.items()})


def _batch_size(settings: _Settings) -> int:
    """The global batch size (set by ``sgmcmc._run`` once the data are known)."""
    if settings.batch_size is None:
        raise RuntimeError("the batch size is resolved before a chain runs.")
    return settings.batch_size


def _keeps(settings: _Settings, step: int, sampling: bool) -> bool:
    if settings.schedule.kind == "constant":
        return sampling and (step - settings.burn_in) % settings.thin == 0
    return sampling and step % settings.thin == 0


def _stacked(draws: list[dict[str, Tensor]]) -> dict[str, Tensor] | None:
    if not draws:
        return None
    return {name: torch.stack([d[name] for d in draws]) for name in draws[0]}


def _potential_and_gradients(
    log_joint: LogJoint,
    weights: dict[str, Tensor],
    data: IndexedData,
    index: Tensor,
    scale: float,
    strategy: TrainingStrategy,
) -> tuple[Tensor, list[Tensor]]:
    """``U`` on the global batch ``index`` and ``∇U`` (averaged over processes).

    Averaging over ``R`` processes: the prior term is kept whole, the data term is ``R`` times
    this process's share of the global batch (``R = 1``: the plain potential).
    """
    x, y = data.batch(strategy.local_part(index))
    rank_potential = -(
        log_joint.log_prior(weights)
        + scale * strategy.world_size * log_joint.log_likelihood(weights, x, y)
    )
    gradients = torch.autograd.grad(rank_potential, list(weights.values()))
    averaged = strategy.average([rank_potential.detach().reshape(1), *gradients])
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
