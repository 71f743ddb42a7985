"""Pyro's NUTS/HMC kernels on a network's weights, one chain after another.

Pyro's kernels run the dynamics; ``bnn`` hands them a ``potential_fn`` built with
``torch.func.functional_call`` (``LogJoint``) instead of a Pyro model, so no model is traced per
step. Chain ``c`` runs in its own stream ``rng.spawn(c)``: a chain's draws do not depend on how
many chains run, and the same seed gives bit-identical chains (CPU).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from pyro.infer.mcmc import MCMC
from torch import Tensor, nn
from torch.func import grad_and_value

from bnn._checks import check_int
from bnn._progress import progress_enabled
from bnn.infer._indexed_data import WholeData, model_device, whole_data
from bnn.infer._log_joint import (
    LogJoint,
    PriorSpec,
    check_data,
    check_deterministic,
    check_start,
)
from bnn.infer.history import History
from bnn.likelihoods import Likelihood
from bnn.posterior.samples import SampleSet
from bnn.random.default import RNGLike, resolve_rng
from bnn.random.rng import RNG

__all__ = ["Adaptation", "check_chains", "resolve_adaptation", "run_pyro_chains"]


@dataclass(frozen=True)
class Adaptation:
    """Warm-up adaptation of NUTS/HMC: the step size by dual averaging towards
    ``target_accept`` (Hoffman & Gelman 2014), and a diagonal or dense (``full_mass``) mass
    matrix in Stan's expanding windows.
    """

    target_accept: float = 0.8
    full_mass: bool = False

    def __post_init__(self) -> None:
        target = self.target_accept
        if isinstance(target, bool) or not isinstance(target, int | float):
            raise ValueError(f"target_accept must be in (0, 1), got {target!r}.")
        if not 0.0 < target < 1.0:
            raise ValueError(f"target_accept must be in (0, 1), got {target!r}.")


def resolve_adaptation(adaptation: object) -> Adaptation:
    """``adaptation`` itself, or the default `Adaptation` for ``None``."""
    if adaptation is None:
        return Adaptation()
    if not isinstance(adaptation, Adaptation):
        raise TypeError(
            f"adaptation must be a bnn.infer.Adaptation, got {type(adaptation).__name__}."
        )
    return adaptation


def check_chains(num_chains: int, warmup: int, draws: int) -> None:
    """Validate the chain count, warm-up and kept iterations."""
    check_int("num_chains", num_chains)
    check_int("warmup", warmup, minimum=0)
    check_int("draws", draws)


def run_pyro_chains(
    method: str,
    model: nn.Module,
    data: WholeData,
    likelihood: Likelihood,
    prior: PriorSpec,
    make_kernel: Callable[..., Any],
    lengths: tuple[int, int, int],
    init: str,
    rng: RNGLike,
    progress: bool,
) -> tuple[SampleSet, History]:
    """Run ``num_chains`` chains of a Pyro kernel; chain ``c`` from ``rng.spawn(c)``.

    ``make_kernel(potential_fn=...)`` builds the kernel; ``lengths`` is
    ``(num_chains, warmup, draws)``.
    """
    num_chains, warmup, draws = lengths
    x, y = check_data(model, whole_data(data, model_device(model)))
    log_joint = LogJoint(model, likelihood, prior)
    check_deterministic(log_joint, x, y, method)
    parent = resolve_rng(rng)
    history = History(method)
    chains: list[dict[str, Tensor]] = []
    stats: list[dict[str, Tensor]] = []
    for chain in range(num_chains):
        samples, chain_stats, chain_history = _run_chain(
            method,
            log_joint,
            x,
            y,
            make_kernel,
            warmup,
            draws,
            init,
            parent.spawn(chain),
            progress,
            chain=chain,
        )
        chains.append(samples)
        stats.append(chain_stats)
        history.chains.append(chain_history)
    stacked = {name: torch.stack([c[name] for c in chains]) for name in chains[0]}
    history.sample_stats = {name: torch.stack([s[name] for s in stats]) for name in stats[0]}
    samples_set = SampleSet(model, stacked, sample_stats=history.sample_stats, is_mcmc=True)
    return samples_set, history


SITE = "weights"
"""Pyro sees one site: all weights as one flat vector (fewer per-site operations per step)."""


class _Counter:
    """The potential ``-log p(w, D)`` on the flat weight vector; counts its evaluations."""

    def __init__(self, log_joint: LogJoint, x: Tensor, y: Tensor) -> None:
        self.log_joint, self.x, self.y, self.count = log_joint, x, log_joint.prepare(x, y), 0

    def __call__(self, sites: dict[str, Tensor]) -> Tensor:
        self.count += 1
        potential = -self.log_joint.log_density_flat(sites[SITE], self.x, self.y)
        # A NaN region is infinitely unlikely: Pyro counts a divergence there (a NaN
        # potential at the start of a trajectory would reach torch.bernoulli as a NaN weight).
        return torch.where(torch.isnan(potential), torch.full_like(potential, math.inf), potential)

    def value_and_gradient(self, vector: Tensor) -> tuple[Tensor, Tensor]:
        """``log p(w, D)`` and its gradient at flat weights ``vector`` (not counted)."""

        def log_density(v: Tensor) -> Tensor:
            return self.log_joint.log_density_flat(v, self.x, self.y)

        gradient, value = grad_and_value(log_density)(vector.detach())
        return value.detach(), gradient.detach()


def _run_chain(
    method: str,
    log_joint: LogJoint,
    x: Tensor,
    y: Tensor,
    make_kernel: Callable[..., Any],
    warmup: int,
    draws: int,
    init: str,
    rng: RNG,
    progress: bool,
    *,
    chain: int = 0,
) -> tuple[dict[str, Tensor], dict[str, Tensor], History]:
    potential = _Counter(log_joint, x, y)
    kernel = make_kernel(potential_fn=potential)
    recorder = _StatsRecorder(potential)
    initial = {SITE: log_joint.flatten(log_joint.initial_weights(init, rng))}
    check_start(*potential.value_and_gradient(initial[SITE]), first_chain=chain)
    start = time.perf_counter()
    with rng.stream("mcmc"):
        mcmc = MCMC(
            kernel,
            num_samples=draws,
            warmup_steps=warmup,
            initial_params=initial,
            num_chains=1,
            disable_progbar=not progress_enabled(progress),
            hook_fn=recorder,
        )
        mcmc.run()
    seconds = time.perf_counter() - start
    flat = mcmc.get_samples()[SITE].detach()
    samples = log_joint.unflatten(flat)
    stats = recorder.stats(flat.dtype)
    history = History(
        method,
        extras={
            "seconds": seconds,
            "gradient_evaluations": potential.count,
            "divergences": int(stats["diverging"].sum()),
            "step_size": float(stats["step_size"][-1]),
        },
    )
    return samples, stats, history


class _StatsRecorder:
    """Pyro ``hook_fn``: per kept draw, step size, leapfrog steps, acceptance, divergence."""

    def __init__(self, potential: _Counter) -> None:
        self.potential = potential
        self.last_count = 0
        self.last_divergences = 0
        self.last_accept = 0.0
        self.rows: list[tuple[float, int, float, bool]] = []

    def __call__(self, kernel: Any, _samples: Any, stage: str, index: int) -> None:
        steps = self.potential.count - self.last_count
        self.last_count = self.potential.count
        if stage != "Sample":
            return
        # Pyro keeps a running mean of the acceptance probability; undo it to get this draw's.
        mean_accept = float(kernel._mean_accept_prob)
        accept = (index + 1) * mean_accept - index * self.last_accept if index else mean_accept
        self.last_accept = mean_accept
        divergences = len(getattr(kernel, "_divergences", []))
        diverging = divergences > self.last_divergences
        self.last_divergences = divergences
        self.rows.append((float(kernel.step_size), steps, accept, diverging))

    def stats(self, dtype: torch.dtype) -> dict[str, Tensor]:
        step_size, n_steps, accept, diverging = zip(*self.rows, strict=True)
        steps = torch.tensor(n_steps)
        return {
            "step_size": torch.tensor(step_size, dtype=dtype),
            "n_steps": steps,
            "tree_depth": torch.tensor([max(int(s), 1).bit_length() for s in n_steps]),
            "acceptance_rate": torch.tensor(accept, dtype=dtype).clamp(0.0, 1.0),
            "diverging": torch.tensor(diverging),
        }
