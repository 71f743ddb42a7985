"""Hamiltonian Monte Carlo with a fixed trajectory length on a network's weights (Pyro's kernel).

Example:
    >>> samples, history = bnn.infer.hmc(net, (x, y), likelihood=bnn.Gaussian(0.1), rng=0)
"""

from __future__ import annotations

import functools

from pyro.infer.mcmc import HMC
from torch import nn

from bnn._checks import check_positive
from bnn.infer._indexed_data import WholeData
from bnn.infer._log_joint import PriorSpec
from bnn.infer.history import History
from bnn.infer.mcmc._pyro_mcmc import (
    Adaptation,
    check_chains,
    resolve_adaptation,
    run_pyro_chains,
)
from bnn.likelihoods import Likelihood
from bnn.posterior.samples import SampleSet
from bnn.random.default import RNGLike

__all__ = ["MAX_LEAPFROG_STEPS", "hmc"]

MAX_LEAPFROG_STEPS = 1024
"""Cap on the leapfrog steps of one HMC draw (as NUTS's default tree depth 10 caps its own).

Without it, a step size that adaptation shrinks towards 0 (e.g. next to a region where the
model's output is NaN) makes ``trajectory_length / step_size`` steps per draw: a run that
never ends. A capped draw is a shorter trajectory; its acceptance and divergences show why.
"""


class _CappedHMC(HMC):
    """Pyro's HMC with at most ``MAX_LEAPFROG_STEPS`` leapfrog steps per draw."""

    @property
    def num_steps(self) -> int:
        return min(MAX_LEAPFROG_STEPS, max(1, int(self.trajectory_length / self.step_size)))


def hmc(
    model: nn.Module,
    data: WholeData,
    *,
    likelihood: Likelihood,
    prior: PriorSpec = None,
    num_chains: int = 4,
    warmup: int = 500,
    draws: int = 500,
    trajectory_length: float = 1.0,
    step_size: float = 0.1,
    adaptation: Adaptation | None = None,
    init: str = "prior",
    jit_compile: bool = False,
    rng: RNGLike = None,
    progress: bool = True,
) -> tuple[SampleSet, History]:
    """Hamiltonian Monte Carlo with a fixed trajectory length (Neal 2011).

    Arguments as ``bnn.infer.nuts``, plus ``trajectory_length`` (integration time) and the
    initial ``step_size``; the step size adapts during warm-up (``warmup > 0``) and each draw
    takes ``trajectory_length / step_size`` leapfrog steps (at most ``MAX_LEAPFROG_STEPS``).
    Runs Pyro's HMC kernel, chain after chain (chain ``c`` from ``rng.spawn(c)``).

    Returns:
        ``(SampleSet, History)`` as ``bnn.infer.nuts``.

    Example:
        >>> samples, history = bnn.infer.hmc(net, (x, y), likelihood=bnn.Gaussian(0.1),
        ...                                  trajectory_length=1.0, step_size=0.05, rng=0)
    """
    settings = resolve_adaptation(adaptation)
    check_chains(num_chains, warmup, draws)
    check_positive("trajectory_length", trajectory_length)
    check_positive("step_size", step_size)

    kernel = functools.partial(
        _CappedHMC,
        step_size=step_size,
        trajectory_length=trajectory_length,
        adapt_step_size=warmup > 0,
        target_accept_prob=settings.target_accept,
        full_mass=settings.full_mass,
        jit_compile=jit_compile,
        ignore_jit_warnings=True,
    )
    lengths = (num_chains, warmup, draws)
    return run_pyro_chains(
        "hmc", model, data, likelihood, prior, kernel, lengths, init, rng, progress
    )
