"""Sweeps, ensembles, tuning and benchmark splits on any ``concurrent.futures.Executor``.

See ``bnn._jobs`` for the contract (results in order and bit-identical whatever the executor,
threads per job, failures named, never dropped).

Example:
    >>> from concurrent.futures import ProcessPoolExecutor
    >>> with ProcessPoolExecutor(2) as pool:
    ...     results = run_jobs(train_split, splits, executor=pool)
"""

from bnn._jobs import JobError, run_jobs

__all__ = ["JobError", "run_jobs"]
