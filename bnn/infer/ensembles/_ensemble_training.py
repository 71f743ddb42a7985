"""Training the members of a `DeepEnsemble`: one after another, in worker processes, on an
executor, or spread over the ranks of ``torch.distributed``, with identical results.
"""

from __future__ import annotations

import copy
from concurrent.futures import Executor
from pathlib import Path
from typing import Any

import torch
import torch.multiprocessing as mp
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, RandomSampler, Subset

from bnn._checks import check_int
from bnn._jobs import run_jobs
from bnn.infer.history import History
from bnn.infer.training._loop import TrainData
from bnn.infer.training.fit import fit
from bnn.likelihoods import Likelihood
from bnn.parallel.distributed import job_strategy
from bnn.random.rng import RNG

__all__ = ["train_members"]


def train_members(
    members: nn.ModuleList,
    parent_rng: RNG,
    train_data: TrainData,
    *,
    likelihood: Likelihood,
    bagging: bool,
    workers: int,
    threads_per_member: int | None,
    distributed: bool,
    progress: bool,
    fit_options: dict[str, Any],
    executor: Executor | None = None,
) -> tuple[list[Likelihood], list[History]]:
    """Train ``members`` in place (member ``i`` from ``parent_rng.spawn(i)``; see
    ``deep_ensemble``): each member's likelihood and `History`."""
    _check_train_data(train_data, bagging)
    check_int("workers", workers, minimum=0)
    if workers and executor is not None:
        raise ValueError("give workers= (a process pool of its own) or executor=, not both.")
    remote = bool(workers) or executor is not None
    strategy = job_strategy(distributed)
    mine = [i for i in range(len(members)) if strategy.owns(i)]
    jobs = [
        (
            copy.deepcopy(member).cpu() if remote else member,
            copy.deepcopy(likelihood),
            train_data,
            bagging,
            parent_rng.spawn(i),
            threads_per_member if threads_per_member or not remote else 1,
            progress,
            _member_options(fit_options, i),
        )
        for i, member in enumerate(members)
    ]
    strategy.check_same_seed(parent_rng)
    try:
        trained, failure = _train_all([jobs[i] for i in mine], workers, executor), None
    except Exception as error:  # raised on every process by share_results
        trained, failure = [], error
    results = strategy.share_results(
        dict(zip(mine, trained, strict=False)), len(jobs), failure, portable=_to_cpu
    )
    for i, member in enumerate(members):
        member.load_state_dict(results[i][0])
    likelihoods = []
    histories = []
    for job, (_, likelihood_state, history) in zip(
        jobs, (results[i] for i in range(len(jobs))), strict=True
    ):
        member_likelihood = job[1]
        member_likelihood.load_state_dict(likelihood_state)
        likelihoods.append(member_likelihood)
        histories.append(history)
    return likelihoods, histories


def _member_options(fit_options: dict[str, Any], index: int) -> dict[str, Any]:
    """``fit`` options of member ``index``: a ``checkpoint`` path becomes ``<path>.member<i>``."""
    path = fit_options.get("checkpoint")
    if path is None:
        return fit_options
    if not isinstance(path, str | Path):
        raise TypeError(f"checkpoint must be a file path, got {type(path).__name__}.")
    return fit_options | {"checkpoint": Path(path).with_name(f"{Path(path).name}.member{index}")}


def _to_cpu(result: Any) -> Any:
    """A member's trained states on the CPU, to send to other ranks."""
    member_state, likelihood_state, history = result
    return (
        {k: v.cpu() for k, v in member_state.items()},
        {k: v.cpu() for k, v in likelihood_state.items()},
        history,
    )


def _train_all(
    jobs: list[tuple[Any, ...]], workers: int, executor: Executor | None = None
) -> list[Any]:
    """Every job's result, in order: on ``executor``, in ``workers`` spawned processes, or
    here one after another."""
    if executor is not None:  # each job sets its own thread count (job[5])
        return run_jobs(
            _train_member,
            jobs,
            executor=executor,
            threads_per_job=None,
            describe=lambda index: f"member {index}",
        )
    if workers and jobs:
        with mp.get_context("spawn").Pool(workers) as pool:
            return pool.map(_train_member, jobs)
    return [_train_member(job) for job in jobs]


def _train_member(job: tuple[Any, ...]) -> tuple[dict[str, Tensor], dict[str, Tensor], History]:
    """Fit one member (a bootstrap resample first with ``bagging``) with its own thread count:
    its trained state, its likelihood's state and its `History`."""
    member, likelihood, data, bagging, rng, threads, progress, fit_options = job
    previous = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        if bagging:
            data = _bootstrap(data, rng)
        _, history = fit(
            member, data, likelihood=likelihood, rng=rng, progress=progress, **fit_options
        )
    finally:
        torch.set_num_threads(previous)
    return member.state_dict(), likelihood.state_dict(), history


def _check_train_data(data: TrainData, bagging: bool) -> None:
    """Tensors, a Dataset or a DataLoader; bagging needs rows it can resample."""
    if isinstance(data, tuple):
        if len(data) != 2 or not all(isinstance(t, Tensor) for t in data):
            raise TypeError("data as a tuple must be (x, y) tensors.")
    elif isinstance(data, DataLoader):
        if isinstance(data.sampler, RandomSampler):
            raise ValueError(
                "every member would read this one shuffling loader, whose generator moves on "
                "from member to member (and is copied as it stands to worker processes), so "
                "the members would depend on the order they train in; pass its Dataset (each "
                "member then shuffles with its own seeded generator) or an unshuffled loader."
            )
        if bagging:
            raise ValueError(
                "bagging resamples the rows of the data, which a DataLoader does not expose; "
                "pass its Dataset (each member then gets its own seeded loader)."
            )
    elif not isinstance(data, Dataset):
        raise TypeError(
            f"data must be (x, y) tensors, a Dataset or a DataLoader, got {type(data).__name__}."
        )
    elif bagging and not hasattr(data, "__len__"):
        raise ValueError("bagging needs a Dataset with a length (__len__) to resample.")


def _bootstrap(data: TrainData, rng: RNG) -> TrainData:
    """A bootstrap resample of the rows, drawn from ``rng``'s generator ``"bootstrap"``."""
    size = data[0].shape[0] if isinstance(data, tuple) else len(data)  # type: ignore[arg-type]
    index = torch.randint(0, size, (size,), generator=rng.torch_generator("bootstrap"))
    if isinstance(data, tuple):
        return data[0][index], data[1][index]
    return Subset(data, index.tolist())  # type: ignore[arg-type]
