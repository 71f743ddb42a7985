"""NUTS and HMC on a network's weights, through Pyro's kernels, with several chains.

Pyro's ``NUTS``/``HMC`` kernels run the dynamics; ``bnn`` hands them a ``potential_fn`` built
with ``torch.func.functional_call`` (:class:`~bnn.infer.joint.LogJoint`) instead of a Pyro
model, so no model is traced per step. Each chain runs in its own process-independent stream
``rng.spawn(chain)``: a chain's draws do not depend on how many chains run, and the same seed
gives bit-identical chains (CPU).

Example:
    >>> samples, history = bnn.infer.nuts(net, x, y, likelihood=bnn.Gaussian(0.1),
    ...                                   num_chains=4, warmup=500, draws=500, rng=0)
    >>> bnn.predict_with_uncertainty(samples, x_test, likelihood=bnn.Gaussian(0.1))
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch
from pyro.infer.mcmc import HMC, MCMC, NUTS
from torch import Tensor, nn

from bnn.default_rng import RNGLike, resolve_rng
from bnn.infer.joint import LogJoint, PriorSpec, check_data
from bnn.infer.vnuts import run_vectorised_nuts
from bnn.likelihoods import Likelihood
from bnn.rng import RNG
from bnn.sample_set import SampleSet
from bnn.validation import check_int, check_positive

__all__ = ["MCMCHistory", "hmc", "nuts"]


@dataclass
class MCMCHistory:
    """What happened in each chain.

    Attributes:
        seconds: wall time per chain (warm-up included).
        gradient_evaluations: potential/gradient evaluations per chain (warm-up included).
        divergences: divergent transitions after warm-up, per chain.
        step_size: adapted step size per chain.
    """

    seconds: list[float] = field(default_factory=list)
    gradient_evaluations: list[int] = field(default_factory=list)
    divergences: list[int] = field(default_factory=list)
    step_size: list[float] = field(default_factory=list)


def nuts(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    likelihood: Likelihood,
    prior: PriorSpec = None,
    num_chains: int = 4,
    warmup: int = 500,
    draws: int = 500,
    target_accept: float = 0.8,
    max_tree_depth: int = 10,
    full_mass: bool = False,
    init: str = "prior",
    jit_compile: bool = False,
    backend: str = "bnn",
    rng: RNGLike = None,
    progress: bool = True,
) -> tuple[SampleSet, MCMCHistory]:
    """No-U-Turn sampling (Hoffman & Gelman 2014) of the model's weights.

    Args:
        model: any network; Bayesian layers contribute their weights and priors.
        x: inputs ``[N, ...]``; y: targets ``[N, ...]`` (full batch).
        likelihood: observation model with fixed parameters.
        prior: a `Prior` for all weights, ``(name, template) -> Prior``, or ``None`` (each
            Bayesian layer's prior, ``Normal(0, 1)`` for plain weights).
        num_chains: independent chains (≥ 1), run one after another.
        warmup: adaptation iterations (step size, diagonal or dense mass matrix) (≥ 0).
        draws: kept iterations per chain (≥ 1).
        target_accept: dual-averaging target acceptance in (0, 1).
        max_tree_depth: cap on trajectory doubling.
        full_mass: adapt a dense mass matrix instead of a diagonal one.
        init: ``"prior"`` (each chain from a prior draw) or ``"current"`` (model weights).
        jit_compile: compile the gradient of the log density. ``backend="bnn"``:
            ``torch.compile`` of the vmapped gradient of all chains (a one-off compilation of
            about 15 s on CPU, which needs a C++ compiler; then about 7× less time per
            gradient on the toy BNN of ``benchmarks/nuts_toy_bnn.py``). ``backend="pyro"``:
            Pyro traces the potential with the PyTorch JIT.
        backend: ``"bnn"`` advances all chains in lock-step with one vmapped gradient per
            leapfrog (:mod:`bnn.infer.vnuts`; diagonal mass); ``"pyro"`` runs Pyro's NUTS kernel
            chain after chain (dense mass and JIT available; chains bit-independent of the
            chain count).
        rng: randomness (chain ``c`` uses ``rng.spawn(c)``).
        progress: Pyro's progress bar per chain.

    Returns:
        A `SampleSet` ``(chain, draw, ...)`` with sample stats ``diverging``, ``step_size``,
        ``n_steps``, ``tree_depth``, ``acceptance_rate``; and an :class:`MCMCHistory`.
        Divergences are also reported in the history; they are never dropped.
    """
    _check_mcmc(num_chains, warmup, draws)
    if not 0.0 < target_accept < 1.0:
        raise ValueError(f"target_accept must be in (0, 1), got {target_accept!r}.")
    if backend not in ("bnn", "pyro"):
        raise ValueError(f"backend must be 'bnn' or 'pyro', got {backend!r}.")
    if backend == "bnn":
        if full_mass:
            raise ValueError("full_mass needs backend='pyro'.")
        return _run_vectorised(
            model,
            x,
            y,
            likelihood,
            prior,
            num_chains,
            warmup,
            draws,
            target_accept,
            max_tree_depth,
            init,
            jit_compile,
            rng,
        )

    def kernel(potential: Any) -> Any:
        return NUTS(
            potential_fn=potential,
            target_accept_prob=target_accept,
            max_tree_depth=max_tree_depth,
            full_mass=full_mass,
            jit_compile=jit_compile,
            ignore_jit_warnings=True,
        )

    return _run(
        model, x, y, likelihood, prior, kernel, num_chains, warmup, draws, init, rng, progress
    )


def hmc(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    likelihood: Likelihood,
    prior: PriorSpec = None,
    num_chains: int = 4,
    warmup: int = 500,
    draws: int = 500,
    trajectory_length: float = 1.0,
    step_size: float = 0.1,
    target_accept: float = 0.8,
    full_mass: bool = False,
    init: str = "prior",
    jit_compile: bool = False,
    rng: RNGLike = None,
    progress: bool = True,
) -> tuple[SampleSet, MCMCHistory]:
    """Hamiltonian Monte Carlo with a fixed trajectory length (Neal 2011).

    Arguments as :func:`nuts`, plus ``trajectory_length`` (integration time) and the initial
    ``step_size``; the step size adapts during warm-up (``warmup > 0``) and each draw takes
    ``ceil(trajectory_length / step_size)`` leapfrog steps.
    """
    _check_mcmc(num_chains, warmup, draws)
    check_positive("trajectory_length", trajectory_length)
    check_positive("step_size", step_size)

    def kernel(potential: Any) -> Any:
        return HMC(
            potential_fn=potential,
            step_size=step_size,
            trajectory_length=trajectory_length,
            adapt_step_size=warmup > 0,
            target_accept_prob=target_accept,
            full_mass=full_mass,
            jit_compile=jit_compile,
            ignore_jit_warnings=True,
        )

    return _run(
        model, x, y, likelihood, prior, kernel, num_chains, warmup, draws, init, rng, progress
    )


def _run_vectorised(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    likelihood: Likelihood,
    prior: PriorSpec,
    num_chains: int,
    warmup: int,
    draws: int,
    target_accept: float,
    max_tree_depth: int,
    init: str,
    compile_gradient: bool,
    rng: RNGLike,
) -> tuple[SampleSet, MCMCHistory]:
    x, y = check_data(model, x, y)
    log_joint = LogJoint(model, likelihood, prior)
    parent = resolve_rng(rng)
    rngs = [parent.spawn(chain) for chain in range(num_chains)]
    initial = torch.stack([log_joint.flatten(log_joint.initial_weights(init, r)) for r in rngs])
    start = time.perf_counter()
    flat, stats, gradients = run_vectorised_nuts(
        log_joint,
        x,
        y,
        initial,
        rngs,
        warmup=warmup,
        draws=draws,
        target_accept=target_accept,
        max_tree_depth=max_tree_depth,
        compile_gradient=compile_gradient,
    )
    seconds = time.perf_counter() - start
    history = MCMCHistory(
        seconds=[seconds] * num_chains,
        gradient_evaluations=[gradients] * num_chains,
        divergences=[int(d) for d in stats["diverging"].sum(1)],
        step_size=[float(s) for s in stats["step_size"][:, -1]],
    )
    return SampleSet(model, log_joint.unflatten(flat), sample_stats=stats, is_mcmc=True), history


def _check_mcmc(num_chains: int, warmup: int, draws: int) -> None:
    check_int("num_chains", num_chains)
    check_int("warmup", warmup, minimum=0)
    check_int("draws", draws)


SITE = "weights"
"""Pyro sees one site: all weights as one flat vector (fewer per-site operations per step)."""


class _Counter:
    """The potential ``-log p(w, D)`` on the flat weight vector; counts its evaluations."""

    def __init__(self, log_joint: LogJoint, x: Tensor, y: Tensor) -> None:
        self.log_joint, self.x, self.y, self.count = log_joint, x, log_joint.prepare(x, y), 0

    def __call__(self, sites: dict[str, Tensor]) -> Tensor:
        self.count += 1
        return -self.log_joint.log_density_flat(sites[SITE], self.x, self.y)


def _run(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    likelihood: Likelihood,
    prior: PriorSpec,
    make_kernel: Any,
    num_chains: int,
    warmup: int,
    draws: int,
    init: str,
    rng: RNGLike,
    progress: bool,
) -> tuple[SampleSet, MCMCHistory]:
    x, y = check_data(model, x, y)
    log_joint = LogJoint(model, likelihood, prior)
    parent = resolve_rng(rng)
    history = MCMCHistory()
    chains: list[dict[str, Tensor]] = []
    stats: list[dict[str, Tensor]] = []
    for chain in range(num_chains):
        samples, chain_stats = _run_chain(
            log_joint,
            x,
            y,
            make_kernel,
            warmup,
            draws,
            init,
            parent.spawn(chain),
            progress,
            history,
        )
        chains.append(samples)
        stats.append(chain_stats)
    stacked = {name: torch.stack([c[name] for c in chains]) for name in chains[0]}
    stacked_stats = {name: torch.stack([s[name] for s in stats]) for name in stats[0]}
    return SampleSet(model, stacked, sample_stats=stacked_stats, is_mcmc=True), history


def _run_chain(
    log_joint: LogJoint,
    x: Tensor,
    y: Tensor,
    make_kernel: Any,
    warmup: int,
    draws: int,
    init: str,
    rng: RNG,
    progress: bool,
    history: MCMCHistory,
) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    potential = _Counter(log_joint, x, y)
    kernel = make_kernel(potential)
    recorder = _StatsRecorder(potential)
    initial = {SITE: log_joint.flatten(log_joint.initial_weights(init, rng))}
    start = time.perf_counter()
    with rng.stream("mcmc"):
        mcmc = MCMC(
            kernel,
            num_samples=draws,
            warmup_steps=warmup,
            initial_params=initial,
            num_chains=1,
            disable_progbar=not progress,
            hook_fn=recorder,
        )
        mcmc.run()
    history.seconds.append(time.perf_counter() - start)
    history.gradient_evaluations.append(potential.count)
    flat = mcmc.get_samples()[SITE].detach()
    samples = log_joint.unflatten(flat)
    stats = recorder.stats(flat.dtype)
    history.divergences.append(int(stats["diverging"].sum()))
    history.step_size.append(float(stats["step_size"][-1]))
    return samples, stats


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
