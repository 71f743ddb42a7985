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

Example:
    >>> samples, history = bnn.infer.sgld(net, (x, y), likelihood=bnn.Gaussian(0.1), lr=1e-4,
    ...     schedule=bnn.infer.StepSchedule(steps=5000, burn_in=1000, thin=10), rng=0)

"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bnn._checks import check_int, check_positive
from bnn._threads import Threads, check_threads, training_threads
from bnn.infer._indexed_data import IndexedSource, indexed_data
from bnn.infer._log_joint import LogJoint, PriorSpec
from bnn.infer.checkpoint import Checkpoint
from bnn.infer.history import History
from bnn.infer.mcmc._sgmcmc_chain import (
    StepSchedule,
    _run_chain,
    _Settings,
)
from bnn.likelihoods import Likelihood
from bnn.parallel.distributed import TrainingStrategy, training_strategy
from bnn.posterior.samples import SampleSet
from bnn.random.default import RNGLike, resolve_rng
from bnn.random.rng import RNG

__all__ = ["StepSchedule", "sghmc", "sgld"]


def sgld(
    model: nn.Module,
    data: IndexedSource,
    *,
    likelihood: Likelihood,
    prior: PriorSpec = None,
    lr: float = 1e-4,
    schedule: StepSchedule | None = None,
    batch_size: int | None = None,
    num_chains: int = 1,
    temperature: float = 1.0,
    init: str = "current",
    rng: RNGLike = None,
    distributed: bool = False,
    checkpoint: str | Path | None = None,
    threads: Threads = "auto",
    progress: bool = True,
) -> tuple[SampleSet, History]:
    """Stochastic gradient Langevin dynamics.

    Args:
        model: any network; Bayesian layers contribute their weights and priors.
        data: ``(x, y)``: inputs ``[N, ...]`` and targets ``[N, ...]``; or a map-style
            ``Dataset`` of ``(x, y)`` pairs, or a ``DataLoader`` over one (its dataset, batch
            size and ``collate_fn`` are used; the batch order is drawn from ``rng``).
        likelihood: observation model with fixed parameters.
        prior: as in ``bnn.infer.nuts``.
        lr: step size ``ε`` (the peak ``ε_0`` for the cyclical schedule).
        schedule: steps, burn-in, thinning and the step-size schedule (`StepSchedule`).
        batch_size: mini-batch size (default: a ``DataLoader``'s, else the full batch).
        num_chains: chains, run one after another.
        temperature: ``T`` scaling the injected noise variance.
        init: ``"current"`` (model weights) or ``"prior"`` (a prior draw per chain).
        rng: randomness; chain ``c`` uses ``rng.spawn(c)``.
        distributed: data-parallel over the initialised ``torch.distributed`` process group:
            every rank passes the same ``x, y`` and seed; ``batch_size`` is per rank, rank ``r``
            evaluates elements ``r, r+R, ...`` of each global batch of ``R·batch_size``, and the
            gradient of the potential is averaged over ranks (log prior counted once), so ``R``
            ranks follow the one-process chain with ``batch_size=R·b``. See
            ``bnn.parallel.distributed``.
        checkpoint: a file to resume from and to save the chains' whole state to after every
            pass over the data (``bnn.infer.checkpoint``): rerun an interrupted call with the
            same path and arguments to continue it; the result equals an uninterrupted run bit
            for bit (the injected noise continues, it is not replayed).
        threads: torch intra-op threads while sampling: ``"auto"`` (one thread for small
            models, see `bnn.fit`), an int, or ``None`` (torch's setting).
        progress: show a tqdm bar.

    Returns:
        ``(SampleSet, History)``; per chain, ``history.chains[c].potential`` and ``step_size``
        hold the potential estimate and the step size ``ε`` of every step, ``seconds`` the wall
        time.
    """
    settings = _settings("sgld", lr, 0.0, temperature, batch_size, schedule)
    return _run(
        model,
        data,
        likelihood,
        prior,
        settings,
        num_chains,
        init,
        rng,
        distributed,
        progress,
        checkpoint,
        threads,
    )


def sghmc(
    model: nn.Module,
    data: IndexedSource,
    *,
    likelihood: Likelihood,
    prior: PriorSpec = None,
    lr: float = 1e-4,
    friction: float = 0.1,
    schedule: StepSchedule | None = None,
    batch_size: int | None = None,
    num_chains: int = 1,
    temperature: float = 1.0,
    init: str = "current",
    rng: RNGLike = None,
    distributed: bool = False,
    checkpoint: str | Path | None = None,
    threads: Threads = "auto",
    progress: bool = True,
) -> tuple[SampleSet, History]:
    """Stochastic gradient Hamiltonian Monte Carlo with friction ``friction`` (``α`` in (0, 1]).

    Arguments as ``sgld``; ``lr`` is ``ε`` in the update ``v ← (1-α)v - ε∇U + N(0, 2αεT)``.

    Example:
        >>> samples, history = bnn.infer.sghmc(net, (x, y), likelihood=bnn.Gaussian(0.1),
        ...                                    lr=1e-4, friction=0.1, rng=0)
    """
    if not 0.0 < friction <= 1.0:
        raise ValueError(f"friction must be in (0, 1], got {friction!r}.")
    settings = _settings("sghmc", lr, friction, temperature, batch_size, schedule)
    return _run(
        model,
        data,
        likelihood,
        prior,
        settings,
        num_chains,
        init,
        rng,
        distributed,
        progress,
        checkpoint,
        threads,
    )


def _settings(
    method: str,
    lr: float,
    friction: float,
    temperature: float,
    batch_size: int | None,
    schedule: StepSchedule | None,
) -> _Settings:
    check_positive("lr", lr)
    check_positive("temperature", temperature)
    chosen = StepSchedule() if schedule is None else schedule
    if not isinstance(chosen, StepSchedule):
        raise TypeError(f"schedule must be a bnn.infer.StepSchedule, got {type(chosen).__name__}.")
    batch = None if batch_size is None else check_int("batch_size", batch_size)
    return _Settings(method, float(lr), float(friction), float(temperature), batch, chosen)


def _run(
    model: nn.Module,
    data: IndexedSource,
    likelihood: Likelihood,
    prior: PriorSpec,
    settings: _Settings,
    num_chains: int,
    init: str,
    rng: RNGLike,
    distributed: bool,
    progress: bool,
    checkpoint: str | Path | None = None,
    threads: Threads = "auto",
) -> tuple[SampleSet, History]:
    check_int("num_chains", num_chains)
    check_threads(threads)
    model, strategy = training_strategy(model, distributed)
    source = indexed_data(model, data)
    n = len(source)
    parent = resolve_rng(rng)
    strategy.prepare(parent, model)  # the injected noise is shared: the parent rng drives it
    batch = min(settings.batch_size or source.loader_batch_size or n, n)
    global_batch = min(batch * strategy.world_size, n)
    settings = replace(settings, batch_size=global_batch)
    run = _checkpoint(checkpoint, settings, parent, num_chains, init, n, strategy)
    saved = run.load() if run is not None else None
    done: list[dict[str, Any]] = [] if saved is None else list(saved["chains_done"])
    log_joint = LogJoint(model, likelihood, prior)
    with training_threads(threads, model, global_batch):
        for c in range(len(done), num_chains):
            resume = saved["current"] if saved is not None and saved["chain"] == c else None

            def save(current: dict[str, Any], chain_index: int = c) -> None:
                assert run is not None
                run.save({"chain": chain_index, "chains_done": done, "current": current})

            chain = _run_chain(
                log_joint,
                source,
                settings,
                init,
                parent.spawn(c),
                strategy,
                progress,
                resume,
                save if run is not None else None,
            )
            done.append(chain)
            if run is not None:
                run.save({"chain": c + 1, "chains_done": done, "current": None})
    return _results(model, settings.method, done)


def _checkpoint(
    path: str | Path | None,
    settings: _Settings,
    parent: RNG,
    num_chains: int,
    init: str,
    n: int,
    strategy: TrainingStrategy,
) -> Checkpoint | None:
    if path is None:
        return None
    fingerprint = {
        "seed": parent.seed,
        "rng_path": repr(parent),
        "lr": settings.lr,
        "friction": settings.friction,
        "temperature": settings.temperature,
        "batch_size": settings.batch_size,
        "schedule": repr(settings.schedule),
        "num_chains": num_chains,
        "init": init,
        "dataset_size": n,
        "ranks": strategy.world_size,
    }
    return Checkpoint(path, method=settings.method, settings=fingerprint, rank=strategy.rank)


def _results(
    model: nn.Module, method: str, chains: list[dict[str, Any]]
) -> tuple[SampleSet, History]:
    """The `SampleSet` ``[chain, draw, ...]`` and `History` of finished chains."""
    if any(chain["draws"] is None for chain in chains):
        raise ValueError("no draws kept: increase steps or reduce burn_in/thin.")
    history = History(method)
    for chain in chains:
        history.chains.append(
            History(
                method,
                metrics={"potential": chain["potential"], "step_size": chain["step_size"]},
                extras={"seconds": chain["seconds"]},
            )
        )
    names = chains[0]["draws"].keys()
    samples = {name: torch.stack([chain["draws"][name] for chain in chains]) for name in names}
    return SampleSet(model, samples, is_mcmc=True), history
