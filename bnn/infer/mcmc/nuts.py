"""No-U-Turn sampling of a network's weights, several chains at once.

Two backends with the same result type: ``backend="bnn"`` advances all chains in lock-step,
one vmapped gradient per leapfrog step (``bnn.infer.mcmc._vectorised_nuts``); ``backend="pyro"``
runs Pyro's NUTS kernel chain after chain (dense mass matrix and JIT available). Each chain
draws from ``rng.spawn(chain)``, so a chain does not depend on how many chains run.

Example:
    >>> samples, history = bnn.infer.nuts(net, (x, y), likelihood=bnn.Gaussian(0.1),
    ...                                   num_chains=4, warmup=500, draws=500, rng=0)
    >>> bnn.predict_with_uncertainty(samples, x_test, likelihood=bnn.Gaussian(0.1))
"""

from __future__ import annotations

import functools
import time

import torch
from pyro.infer.mcmc import NUTS
from torch import nn

from bnn.infer._indexed_data import WholeData, model_device, whole_data
from bnn.infer._log_joint import LogJoint, PriorSpec, check_data, check_deterministic
from bnn.infer.history import History
from bnn.infer.mcmc._pyro_mcmc import (
    Adaptation,
    check_chains,
    resolve_adaptation,
    run_pyro_chains,
)
from bnn.infer.mcmc._vectorised_nuts import run_vectorised_nuts
from bnn.likelihoods import Likelihood
from bnn.posterior.samples import SampleSet
from bnn.random.default import RNGLike, resolve_rng

__all__ = ["Adaptation", "nuts"]


def nuts(
    model: nn.Module,
    data: WholeData,
    *,
    likelihood: Likelihood,
    prior: PriorSpec = None,
    num_chains: int = 4,
    warmup: int = 500,
    draws: int = 500,
    adaptation: Adaptation | None = None,
    max_tree_depth: int = 10,
    init: str = "prior",
    jit_compile: bool = False,
    backend: str = "bnn",
    rng: RNGLike = None,
    progress: bool = True,
) -> tuple[SampleSet, History]:
    """No-U-Turn sampling (Hoffman & Gelman 2014) of the model's weights.

    Args:
        model: any network; Bayesian layers contribute their weights and priors.
        data: ``(x, y)``: inputs ``[N, ...]`` and targets ``[N, ...]`` (full batch); a
            ``Dataset`` or ``DataLoader`` is read whole once.
        likelihood: observation model with fixed parameters.
        prior: a `Prior` for all weights, ``(name, template) -> Prior``, or ``None`` (each
            Bayesian layer's prior, ``Normal(0, 1)`` for plain weights).
        num_chains: independent chains (≥ 1).
        warmup: adaptation iterations (step size, diagonal or dense mass matrix) (≥ 0).
        draws: kept iterations per chain (≥ 1).
        adaptation: target acceptance and mass matrix (`Adaptation`; dense mass needs
            ``backend="pyro"``).
        max_tree_depth: cap on trajectory doubling.
        init: ``"prior"`` (each chain from a prior draw) or ``"current"`` (model weights).
        jit_compile: compile the log density's gradient. ``backend="bnn"``:
            one leapfrog of all chains together with its tree bookkeeping, traced once and
            compiled by Inductor (``torch.compile``'s compiler; about 20 s on CPU the first
            time, ~4 s from the compile cache, a C++ compiler needed; then about 9× less
            time per leapfrog than eager on the toy BNN of ``benchmarks/nuts_toy_bnn.py``).
            ``backend="pyro"``: Pyro traces the potential with the PyTorch JIT.
        backend: ``"bnn"`` advances all chains in lock-step with one vmapped gradient per
            leapfrog (diagonal mass); ``"pyro"`` runs Pyro's NUTS kernel chain after chain
            (dense mass and JIT available; chains bit-independent of the chain count).
        rng: randomness (chain ``c`` uses ``rng.spawn(c)``).
        progress: show a progress bar (per iteration; per chain with ``backend="pyro"``).

    Returns:
        A `SampleSet` ``(chain, draw, ...)`` with sample stats ``diverging``, ``step_size``,
        ``n_steps``, ``tree_depth``, ``acceptance_rate``; and a `History` with the same
        ``sample_stats`` and per chain ``seconds``, ``gradient_evaluations``, ``divergences``
        and ``step_size`` (``history.per_chain("divergences")``). Divergences are never
        dropped.
    """
    settings = resolve_adaptation(adaptation)
    check_chains(num_chains, warmup, draws)
    if backend not in ("bnn", "pyro"):
        raise ValueError(f"backend must be 'bnn' or 'pyro', got {backend!r}.")
    if backend == "bnn":
        if settings.full_mass:
            raise ValueError("full_mass needs backend='pyro'.")
        return _run_vectorised(
            model,
            data,
            likelihood,
            prior,
            (num_chains, warmup, draws),
            settings,
            max_tree_depth,
            init,
            jit_compile,
            rng,
            progress,
        )

    kernel = functools.partial(
        NUTS,
        target_accept_prob=settings.target_accept,
        max_tree_depth=max_tree_depth,
        full_mass=settings.full_mass,
        jit_compile=jit_compile,
        ignore_jit_warnings=True,
    )
    lengths = (num_chains, warmup, draws)
    return run_pyro_chains(
        "nuts", model, data, likelihood, prior, kernel, lengths, init, rng, progress
    )


def _run_vectorised(
    model: nn.Module,
    data: WholeData,
    likelihood: Likelihood,
    prior: PriorSpec,
    lengths: tuple[int, int, int],
    adaptation: Adaptation,
    max_tree_depth: int,
    init: str,
    compile_gradient: bool,
    rng: RNGLike,
    progress: bool,
) -> tuple[SampleSet, History]:
    num_chains, warmup, draws = lengths
    x, y = check_data(model, whole_data(data, model_device(model)))
    log_joint = LogJoint(model, likelihood, prior)
    check_deterministic(log_joint, x, y, "nuts")
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
        target_accept=adaptation.target_accept,
        max_tree_depth=max_tree_depth,
        compile_gradient=compile_gradient,
        progress=progress,
    )
    seconds = time.perf_counter() - start
    chains = [
        History(
            "nuts",
            extras={
                "seconds": seconds,
                "gradient_evaluations": gradients,
                "divergences": int(stats["diverging"][chain].sum()),
                "step_size": float(stats["step_size"][chain, -1]),
            },
        )
        for chain in range(num_chains)
    ]
    history = History("nuts", chains=chains, sample_stats=stats)
    samples = SampleSet(model, log_joint.unflatten(flat), sample_stats=stats, is_mcmc=True)
    return samples, history
