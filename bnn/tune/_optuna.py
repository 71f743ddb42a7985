"""Optuna plumbing of ``bnn.tune``: importing it, opening a study, its pruner, its log, and
the warning about failed seed runs."""

from __future__ import annotations

import time
import warnings
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import optuna

__all__ = ["import_optuna", "open_study", "pruner_of", "quiet", "warn_about_failures"]


RACES = ("IntegrityError", "OperationalError")
"""SQLAlchemy's errors when processes create or lock one fresh database at the same moment
(two workers both creating the schema, SQLite's "database is locked")."""
ATTEMPTS = 5


def open_study(module: Any, **options: Any) -> optuna.Study:
    """``optuna.create_study(**options)``; a storage that cannot be opened is named.

    Workers started together on one new storage race to create its tables: the loser's
    ``IntegrityError`` (or SQLite's lock) is retried, up to ``ATTEMPTS`` times with a growing
    pause, before it is reported.
    """
    for attempt in range(ATTEMPTS):
        try:
            study: optuna.Study = module.create_study(**options)
        except Exception as error:  # SQLAlchemy, drivers and Optuna raise their own kinds
            if options["storage"] is None:
                raise
            if _raced(error) and attempt + 1 < ATTEMPTS:
                time.sleep(0.1 * 2**attempt)
                continue
            raise ValueError(
                f"storage {options['storage']!r} cannot be opened ({type(error).__name__}: "
                f"{error}); pass an Optuna storage URL such as 'sqlite:///study.db' or "
                "'postgresql://user:password@host/db' (its driver installed), or a storage "
                "object."
            ) from error
        return study
    raise AssertionError("unreachable: the last attempt returns or raises")


def _raced(error: BaseException) -> bool:
    """Whether ``error`` (or what caused it) is a race between processes on the database."""
    seen: BaseException | None = error
    while seen is not None:
        if type(seen).__name__ in RACES:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def warn_about_failures(study: optuna.Study) -> None:
    """Say how many seed runs failed (raised or returned NaN/inf), with the first error."""
    failed = runs = 0
    first = ""
    for trial in study.trials:
        if "failed" not in trial.user_attrs:
            continue
        failed += int(trial.user_attrs["failed"])
        runs += int(trial.user_attrs["failed"]) + len(trial.user_attrs.get("values", []))
        first = first or next(iter(trial.user_attrs.get("errors", [])), "")
    if failed:
        warnings.warn(
            f"{failed} of {runs} seed runs failed and were left out of their trials' scores "
            f"(see trials[i]['failed']); the first error: {first}. A configuration that fails "
            "on some seeds is less reliable than its score says: fix the objective or narrow "
            "the search space.",
            RuntimeWarning,
            stacklevel=3,
        )


def pruner_of(optuna: Any, pruner: object) -> Any:
    if pruner is True:
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=0)
    if pruner is False:
        return optuna.pruners.NopPruner()
    return pruner


def import_optuna() -> Any:
    try:
        import optuna
    except ImportError as error:
        raise ImportError(
            "bnn.tune needs Optuna, an optional extra: pip install 'bnn-torch[tune]'."
        ) from error
    return optuna


class quiet:
    """Optuna's INFO log lines (one per trial) off for the call; the setting restored."""

    def __init__(self, optuna: Any) -> None:
        self.logging = optuna.logging

    def __enter__(self) -> None:
        self.previous = self.logging.get_verbosity()
        self.logging.set_verbosity(self.logging.WARNING)

    def __exit__(self, *exc: object) -> None:
        self.logging.set_verbosity(self.previous)
