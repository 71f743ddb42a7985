"""Sweeps, ensembles, tuning and benchmark splits on any ``concurrent.futures.Executor``.

See ``bnn._jobs`` for the contract (results in order and bit-identical whatever the executor,
threads per job, failures named, never dropped). ``local_pool`` is the process pool that
``tune(n_jobs=k)`` and ``bnn benchmark --jobs k`` start when no executor is given.

Example:
    >>> from concurrent.futures import ProcessPoolExecutor
from multiprocessing.context import BaseContext
    >>> with ProcessPoolExecutor(2) as pool:
    ...     results = run_jobs(train_split, splits, executor=pool)
"""

from __future__ import annotations

import contextlib
import multiprocessing
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from multiprocessing.context import BaseContext

from bnn._jobs import JobError, run_jobs

__all__ = ["JobError", "local_pool", "run_jobs"]


@contextlib.contextmanager
def local_pool(workers: int) -> Iterator[ProcessPoolExecutor]:
    """A process pool of ``workers`` fresh processes on this machine, for one ``with`` block.

    Workers come from a fork server that has imported ``bnn`` (and so torch) once: they start
    in about a second instead of each importing torch, and no worker inherits a parent's
    threads or OpenMP state. Where there is no fork server (Windows) they are spawned. On
    leaving the block the pool is shut down without waiting for the workers to exit (every
    result has been collected by then).

    Example:
        >>> with local_pool(2) as pool:
        ...     results = run_jobs(train_split, splits, executor=pool)
    """
    context: BaseContext
    if "forkserver" in multiprocessing.get_all_start_methods():
        server = multiprocessing.get_context("forkserver")
        server.set_forkserver_preload(["bnn"])
        context = server
    else:
        context = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(workers, mp_context=context)
    try:
        yield pool
    except BaseException:
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=False, cancel_futures=True)
