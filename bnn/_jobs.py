"""Independent work items on any ``concurrent.futures.Executor``: one machine or a cluster.

Public as ``bnn.parallel.executors``; it lives on the ground floor so that ``bnn.random``
(``seed_sweep``) can use it too.

Seed sweeps, tuning trials' seeds, ensemble members and benchmark splits are independent jobs.
``run_jobs`` runs them in order in this process (``executor=None``), or submits them to any
``concurrent.futures.Executor``: a ``ProcessPoolExecutor`` on one machine, or a Dask cluster's
``Client(...).get_executor()``. No scheduler of our own: the executor decides where and when.

Every job carries its randomness explicitly (a child `bnn.RNG` or a seed), so its result does
not depend on the executor, the number of workers or the order in which jobs finish. Results
come back in submission order.

Threads: a worker sets torch's intra-op threads to ``threads_per_job`` while it runs a job (1
by default on an executor): two processes each running torch with 2 threads on 2 cores make
small networks up to 100× slower (OpenMP threads spinning against each other). Floating-point
sums depend on the thread count, so compare runs with the same ``threads_per_job``.

A job that raises makes ``run_jobs`` raise ``JobError`` naming it (after the other jobs
finished); a worker that dies (``BrokenExecutor``, a lost Dask worker after its retries) is
reported the same way: no item is ever silently dropped.

Example:
    >>> from concurrent.futures import ProcessPoolExecutor
    >>> with ProcessPoolExecutor(2) as pool:
    ...     result = bnn.seed_sweep(experiment, seeds=10, executor=pool)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import Executor, Future, as_completed
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import torch

__all__ = ["JobError", "run_jobs"]

Item = TypeVar("Item")
Result = TypeVar("Result")


class JobError(RuntimeError):
    """One or more jobs failed; ``failures`` maps each failed job's index to its exception."""

    def __init__(self, message: str, failures: dict[int, BaseException]) -> None:
        super().__init__(message)
        self.failures = failures


@dataclass(frozen=True)
class _Job(Generic[Item, Result]):
    """One item with its function and thread count: picklable when ``fn`` and ``item`` are."""

    fn: Callable[[Item], Result]
    item: Item
    threads: int | None

    def __call__(self) -> Result:
        if self.threads is None:
            return self.fn(self.item)
        previous = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            return self.fn(self.item)
        finally:
            torch.set_num_threads(previous)


def run_jobs(
    fn: Callable[[Item], Result],
    items: Iterable[Item],
    *,
    executor: Executor | None = None,
    threads_per_job: int | None = None,
    describe: Callable[[int], str] = lambda index: f"job {index}",
    on_done: Callable[[], object] | None = None,
    on_result: Callable[[int, Result], object] | None = None,
) -> list[Result]:
    """``[fn(item) for item in items]``, in this process or on ``executor``; results in order.

    Args:
        fn: the work; for a process pool or a cluster it must be picklable (a module-level
            function or a ``functools.partial`` of one).
        items: one per job; each should carry its own randomness (an `RNG` child or a seed).
            Serially, each item is fetched when its job starts (a progress bar over ``items``
            then advances with the work).
        executor: any ``concurrent.futures.Executor``; ``None`` runs the jobs here, in order.
        threads_per_job: torch intra-op threads while a job runs (``None``: unchanged here,
            1 on an executor).
        describe: names job ``i`` in error messages (e.g. ``"seed 3"``).
        on_done: called in this process each time a job finishes (failed or not), in the
            order they finish: e.g. a progress bar's ``update(1)``.
        on_result: called in this process with ``(index, result)`` of each job that succeeds,
            as it finishes (before ``on_done``): e.g. to save it, so that an interrupted run
            keeps what it finished. If a callback raises, jobs not yet started are cancelled
            and the error propagates.

    Raises:
        JobError: a job raised or its worker was lost; the message names every such job and
            the first error, ``failures`` holds them all.
    """
    if threads_per_job is not None and (
        isinstance(threads_per_job, bool) or not isinstance(threads_per_job, int)
    ):
        raise TypeError(f"threads_per_job must be a positive int, got {threads_per_job!r}.")
    if threads_per_job is not None and threads_per_job < 1:
        raise ValueError(f"threads_per_job must be a positive int, got {threads_per_job}.")
    if executor is not None and not isinstance(executor, Executor):
        raise TypeError(
            "executor must be a concurrent.futures.Executor (e.g. ProcessPoolExecutor(2) or a "
            f"Dask client's get_executor()), got {type(executor).__name__}."
        )
    if executor is None:  # one job after another, fetching each item when its turn comes
        done = []
        for index, item in enumerate(items):
            done.append(_completed(_Job(fn, item, threads_per_job)))
            _report(index, done[-1], on_done, on_result)
        return _collect(done, describe)
    threads = 1 if threads_per_job is None else threads_per_job
    futures = [executor.submit(_Job(fn, item, threads)) for item in items]
    if on_done is not None or on_result is not None:
        index_of = {id(future): index for index, future in enumerate(futures)}
        try:
            for future in as_completed(futures):
                _report(index_of[id(future)], future, on_done, on_result)
        except BaseException:  # a callback failed (or an interrupt): start no further job
            for future in futures:
                future.cancel()
            raise
    return _collect(futures, describe)


def _report(
    index: int,
    future: Future[Result],
    on_done: Callable[[], object] | None,
    on_result: Callable[[int, Result], object] | None,
) -> None:
    """Tell the callbacks that job ``index`` finished (``on_result`` only if it succeeded)."""
    if on_result is not None and not future.cancelled() and future.exception() is None:
        on_result(index, future.result())
    if on_done is not None:
        on_done()


def _completed(job: _Job[Any, Any]) -> Future[Any]:
    """Run ``job`` here; its result or exception in a finished ``Future``."""
    future: Future[Any] = Future()
    try:
        future.set_result(job())
    except Exception as error:  # reported by _collect with the job's name
        future.set_exception(error)
    return future


def _collect(futures: list[Future[Result]], describe: Callable[[int], str]) -> list[Result]:
    results: list[Result] = []
    failures: dict[int, BaseException] = {}
    for index, future in enumerate(futures):
        try:
            results.append(future.result())
        except Exception as error:  # noqa: PERF203 - every failure is reported
            failures[index] = error
    if failures:
        first = min(failures)
        names = ", ".join(describe(i) for i in sorted(failures))
        raise JobError(
            f"{len(failures)} of {len(futures)} jobs failed ({names}); the first, "
            f"{describe(first)}: {type(failures[first]).__name__}: {failures[first]}",
            failures,
        ) from failures[first]
    return results
