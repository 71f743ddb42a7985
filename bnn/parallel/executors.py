"""Sweeps, ensembles, tuning and benchmark splits on any ``concurrent.futures.Executor``.

See ``bnn._jobs`` for the contract (results in order and bit-identical whatever the executor,
threads per job, failures named, never dropped). ``local_pool`` is the process pool that
``tune(n_jobs=k)`` and ``bnn benchmark --jobs k`` start when no executor is given.

Example:
    >>> from concurrent.futures import ProcessPoolExecutor
    >>> with ProcessPoolExecutor(2) as pool:
    ...     results = run_jobs(train_split, splits, executor=pool)
"""

from __future__ import annotations

import contextlib
import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from multiprocessing.context import BaseContext
from types import FrameType

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

    The workers never outlive the work: an exception in the block (``Ctrl-C`` included) or a
    ``SIGTERM`` to this process (``kill``, a batch scheduler's time limit; unless the caller
    handles ``SIGTERM`` itself) terminates them at once, running jobs included, and a worker
    whose parent process is gone (``kill -9``) exits at once. What a job finished is the
    caller's (``bnn benchmark`` journals every split, so ``--resume`` picks up from there).
    Each worker runs one extra thread for that watch (a job that forks a process, such as a
    ``DataLoader``'s workers with the fork start method, may be warned about threads).

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
    pool = ProcessPoolExecutor(workers, mp_context=context, initializer=_exit_with_parent)
    try:
        with _sigterm_raises():
            yield pool
    except BaseException:
        _terminate_workers(pool)
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=False, cancel_futures=True)


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    """Within the block, ``SIGTERM`` raises ``SystemExit(143)`` (the shell's code for it), so
    that the pool's clean-up runs: only where it would otherwise end the process at once
    (the default action, in the main thread); a handler of the caller's is left alone."""
    if (
        threading.current_thread() is not threading.main_thread()
        or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
    ):
        yield
        return

    def raise_exit(signum: int, _frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, raise_exit)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _terminate_workers(pool: ProcessPoolExecutor) -> None:
    """Stop every worker process of ``pool`` now (``ProcessPoolExecutor.terminate_workers``
    from Python 3.14; its process table before)."""
    terminate = getattr(pool, "terminate_workers", None)
    if terminate is not None:
        terminate()
        return
    processes = getattr(pool, "_processes", None) or {}
    for process in list(processes.values()):
        if process.is_alive():
            process.terminate()


def _exit_with_parent() -> None:
    """A worker's initializer: a daemon thread that ends the worker once the process that
    made the pool is gone (a fork server's workers are not that process's children, so
    nothing else stops them). It waits on the parent's sentinel (a pipe end, or a process
    handle on Windows), so it costs nothing while the parent runs."""
    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch() -> None:
        multiprocessing.connection.wait([parent.sentinel])
        os._exit(1)

    threading.Thread(target=watch, name="bnn-exit-with-parent", daemon=True).start()
