"""Seed-aware hyperparameter tuning on Optuna: rank configurations by many seeds, not one.

Every tuner ranks configurations by one run each, so a lucky seed wins. ``tune`` evaluates each
trial's configuration under ``seeds`` seeds derived from the RNG manager — the *same* seeds for
every trial (common random numbers), so trials differ by their configuration, not by their luck
— and optimises ``mean + risk · std`` of the objective over the seeds (``mean − risk · std``
when maximising): ``risk > 0`` prefers configurations whose result the seed moves less.

After the trials, **racing** (``race=Race(...)``) keeps adding seeds to the two leading
configurations until the difference between them is resolved — a paired Student-t interval
for the mean difference over their common seeds excludes zero — or the seed budget is spent;
``TuneResult.separated`` and ``TuneResult.message`` then say honestly whether the best
configuration is distinguishable from the runner-up under seed noise.

Optuna does the search: its sampler (TPE by default) is seeded from the manager, so a study is
reproducible; a ``MedianPruner`` (``pruner=True``) stops a trial after any seed whose running
mean is worse than the median of earlier trials after as many seeds; ``storage`` (e.g.
``"sqlite:///study.db"``, or PostgreSQL on a cluster) lets several processes or machines work
on one study; ``executor`` runs a trial's seeds on any ``concurrent.futures.Executor``
(``bnn.parallel.executors``). A seed whose run raises or returns NaN is recorded as failed for
that trial (``failed`` in the table); a trial whose every seed fails is marked failed in Optuna
and the study goes on.

Needs Optuna: ``pip install 'bnn-torch[tune]'``.

Example:
    >>> def objective(params, rng):
    ...     return train_and_score(dropout=params["dropout"], rng=rng)   # lower is better
    >>> result = bnn.tune.tune(objective, {"dropout": bnn.tune.Float(0.0, 0.5)},
    ...                        seeds=5, n_trials=20, risk=1.0, rng=0)
    >>> result.best_params, result.message
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
from collections.abc import Iterator
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from bnn._checks import check_int
from bnn._progress import progress_bar
from bnn.parallel.executors import local_pool
from bnn.random.default import RNGLike, resolve_rng
from bnn.tune._optuna import import_optuna, open_study, pruner_of, quiet, warn_about_failures
from bnn.tune._seeds import Objective
from bnn.tune._statistics import seed_noise_share
from bnn.tune._trials import (
    AllSeedsFailed,
    TrialSettings,
    run_trial,
    run_trials_at_once,
    table,
)
from bnn.tune.racing import Race, distinct_leaders, race_leaders, unraced_message
from bnn.tune.space import Space, check_space

if TYPE_CHECKING:
    import optuna
    from matplotlib.figure import Figure

__all__ = ["TuneResult", "tune"]


@dataclass(frozen=True)
class TuneResult:
    """What ``tune`` found, with the seed spread of every trial.

    Attributes:
        best_params: the chosen configuration (after racing, the better of the two leaders by
            their mean over all their seeds).
        best_score: its optimised value ``mean ± risk · std`` over the trial's seeds.
        trials: one row per completed trial: ``number``, ``params``, ``mean``, ``std``,
            ``sem``, ``ci95_low``, ``ci95_high``, ``score``, ``n`` (finite seeds), ``failed``.
        separated: whether racing resolved the best from the runner-up (``None``: no race).
        message: the decision in words.
        seed_noise_share: the share of the variance of all per-seed results (over completed
            trials) that is variation between seeds of one configuration, not between
            configurations: near 1, the tuning mostly ranks seed noise.
        race: per raced configuration (trial number), its values over all its seeds.
        study: the Optuna study.
    """

    best_params: dict[str, Any]
    best_score: float
    trials: list[dict[str, Any]]
    separated: bool | None
    message: str
    seed_noise_share: float
    race: dict[int, list[float]] = field(default_factory=dict)
    study: Any = field(default=None, repr=False)

    def to_markdown(self, digits: int = 4) -> str:
        """The trials as a markdown table, best score first."""
        header = "| trial | params | mean | std | 95% CI | score | seeds | failed |"
        rule = "|---" * 8 + "|"
        rows = [
            f"| {row['number']} | {row['params']} | {row['mean']:.{digits}g} | "
            f"{row['std']:.{digits}g} | [{row['ci95_low']:.{digits}g}, "
            f"{row['ci95_high']:.{digits}g}] | {row['score']:.{digits}g} | {row['n']} | "
            f"{row['failed']} |"
            for row in sorted(self.trials, key=lambda r: r["rank"])
        ]
        return "\n".join([header, rule, *rows, "", self.message])

    def __str__(self) -> str:
        return self.to_markdown()

    def _repr_markdown_(self) -> str:
        return self.to_markdown()

    def plot(self) -> Figure:
        """Trial means with 95% intervals over the seeds, in trial order, and the best so far."""
        from bnn.evaluate.plots import plot_tuning_history

        return plot_tuning_history(self.trials, self.study.direction.name.lower())

    def importance(self, seed: int = 0) -> dict[str, float]:
        """Shares of the variance of all per-seed results: seed noise and each parameter.

        ``"seed noise"`` is `seed_noise_share` (variation between seeds of one
        configuration); the rest, ``1 − seed noise``, is split among the parameters by their
        fANOVA importances for the trial means (Hutter et al. 2014, Optuna's
        ``FanovaImportanceEvaluator(seed=seed)``; needs scikit-learn, part of the ``tune``
        extra). A parameter's share *without* seed noise is its value divided by
        ``1 − result["seed noise"]``.

        Raises:
            ValueError: fewer than two completed trials with ≥ 2 seeds, or a space with no
                parameter that varies.
        """
        noise = self.seed_noise_share
        if not math.isfinite(noise):
            raise ValueError("importance needs at least two completed trials with seeds >= 2 each.")
        optuna = import_optuna()
        try:
            evaluator = optuna.importance.FanovaImportanceEvaluator(seed=seed)
            shares = optuna.importance.get_param_importances(
                self.study, evaluator=evaluator, target=lambda trial: trial.user_attrs["mean"]
            )
        except ImportError as error:
            raise ImportError(
                "parameter importances need scikit-learn: pip install 'bnn-torch[tune]'."
            ) from error
        if not shares:
            raise ValueError("no parameter varies over the completed trials.")
        result = {"seed noise": noise}
        result.update({name: (1.0 - noise) * float(share) for name, share in shares.items()})
        return result

    def plot_importance(self, seed: int = 0) -> Figure:
        """Bars of `importance`: how much of the spread is each parameter, how much seed noise."""
        from bnn.evaluate.plots import plot_tuning_importance

        return plot_tuning_importance(self.importance(seed))


def tune(
    objective: Objective,
    space: Space,
    *,
    seeds: int = 5,
    n_trials: int = 20,
    direction: Literal["minimize", "maximize"] = "minimize",
    risk: float = 0.0,
    race: Race | None = None,
    sampler: optuna.samplers.BaseSampler | None = None,
    pruner: bool | optuna.pruners.BasePruner = False,
    storage: str | None = None,
    study_name: str | None = None,
    executor: Executor | None = None,
    n_jobs: int = 1,
    threads_per_job: int | None = None,
    rng: RNGLike = None,
    progress: bool = True,
) -> TuneResult:
    """Tune ``space`` for ``objective(params, rng)`` under ``seeds`` common seeds per trial.

    Args:
        objective: returns one number for a configuration ``params`` (a dict) and a run's
            randomness ``rng`` (a `bnn.RNG`, also the default inside the run); it must draw
            every random number from ``rng`` (streams, generators, ``rng=`` of bnn calls).
        space: ``{name: Float | Int | Categorical}``, or a function ``trial -> params`` using
            Optuna's ``trial.suggest_*``.
        seeds: runs per trial; seed ``i`` is ``rng.spawn(f"seed-{i}")`` in every trial.
        n_trials: trials to run in this call (a stored study continues with more).
        direction: ``"minimize"`` or ``"maximize"`` the objective.
        risk: the score is ``mean + risk · std`` (minimising) or ``mean − risk · std``
            (maximising); ``0`` ranks by the mean alone. Needs ``seeds ≥ 2`` when positive.
        race: add seeds to the two leaders until they separate (`Race`); ``None``: no race.
        sampler: an Optuna sampler (default: TPE seeded from ``rng``).
        pruner: ``True`` for a ``MedianPruner`` over the per-seed running means, or an Optuna
            pruner; pruning checks after every seed: with ``n_jobs=1`` the seeds run here
            one by one (``executor=None``), with ``n_jobs > 1`` in waves, seed ``i`` of every
            trial of the batch at once.
        storage: an Optuna storage URL shared by several workers; ``study_name`` then names
            the study (loaded if it exists).
        study_name: the study's name.
        executor: runs a trial's seeds on any ``concurrent.futures.Executor`` (``objective``
            must be picklable); results identical to the serial run with the same
            ``threads_per_job``.
        n_jobs: trials run at once: the study asks for ``n_jobs`` configurations (TPE with
            Optuna's constant liar, so they differ), all their seeds run as one set of jobs on
            ``executor`` (default: a process pool of ``n_jobs`` workers, one torch thread
            each; ``objective`` must then be picklable, e.g. a module-level function), and
            the results are told in the order asked: the same study for the same ``n_jobs``.
            With ``n_jobs=2`` on 2 cores a 12-trial study ran 1.8x as fast (docs/benchmarks.md).
        threads_per_job: torch threads per seed run (default: unchanged serially, 1 on an
            executor).
        rng: the parent randomness of the seeds and of the default sampler.
        progress: show a tqdm bar over trials.

    Returns:
        A `TuneResult`.

    Raises:
        ImportError: Optuna is missing (``pip install 'bnn-torch[tune]'``).
        ValueError: invalid ``seeds``/``n_trials``/``risk``/``direction``, an empty space, or
            pruning with an executor and ``n_jobs=1``.
    """
    optuna = import_optuna()
    _check_tuning(objective, direction, risk, seeds, n_trials, n_jobs, pruner, executor, space)
    parent = resolve_rng(rng)
    sign = 1.0 if direction == "minimize" else -1.0
    with quiet(optuna):
        study = open_study(
            optuna,
            direction=direction,
            sampler=sampler
            if sampler is not None
            else optuna.samplers.TPESampler(
                seed=parent.derive_seed("sampler") % 2**32, constant_liar=n_jobs > 1
            ),
            pruner=pruner_of(optuna, pruner),
            storage=storage,
            study_name=study_name,
            load_if_exists=storage is not None,
        )
        settings = TrialSettings(
            objective, space, parent, seeds, sign, risk, executor, threads_per_job
        )
        _run_trials(study, settings, n_trials, n_jobs, pruner, progress)
    rows = table(study, optuna)
    if not rows:
        first = next(
            (t.user_attrs["errors"][0] for t in study.trials if t.user_attrs.get("errors")), ""
        )
        raise RuntimeError(
            "no trial completed: every seed of every trial failed (the first error: "
            f"{first or 'not recorded'}); run the objective once by hand to debug it."
        )
    warn_about_failures(study)
    best = min(rows, key=lambda row: sign * row["score"])
    separated: bool | None = None
    message = unraced_message(rows, sign)
    raced: dict[int, list[float]] = {}
    if race is not None and len(distinct_leaders(rows, sign)) > 1:
        best, separated, message, raced = race_leaders(
            objective, rows, parent, seeds, race, sign, executor, threads_per_job
        )
    return TuneResult(
        best_params=dict(best["params"]),
        best_score=float(best["score"]),
        trials=rows,
        separated=separated,
        message=message,
        seed_noise_share=seed_noise_share(rows),
        race=raced,
        study=study,
    )


def _run_trials(
    study: optuna.Study,
    settings: TrialSettings,
    n_trials: int,
    n_jobs: int,
    pruner: object,
    progress: bool,
) -> None:
    """``n_trials`` trials, one at a time (``study.optimize``) or ``n_jobs`` at once."""
    bar = progress_bar(range(n_trials), desc="tune", disable=not progress)
    if n_jobs == 1:
        evaluate = functools.partial(run_trial, settings, pruner)
        for _ in bar:
            study.optimize(evaluate, n_trials=1, catch=(AllSeedsFailed,))
    else:
        with _pool(settings.executor, n_jobs) as pool:
            on_pool = dataclasses.replace(settings, executor=pool)
            for start in range(0, n_trials, n_jobs):
                count = min(n_jobs, n_trials - start)
                run_trials_at_once(study, count, on_pool, pruning=pruner is not False)
                bar.update(count)
    bar.close()


@contextlib.contextmanager
def _pool(executor: Executor | None, n_jobs: int) -> Iterator[Executor]:
    """``executor``, or a local process pool of ``n_jobs`` workers for the call."""
    if executor is not None:
        yield executor
        return
    with local_pool(n_jobs) as pool:
        yield pool


def _check_tuning(
    objective: object,
    direction: str,
    risk: float,
    seeds: int,
    n_trials: int,
    n_jobs: int,
    pruner: object,
    executor: object,
    space: object,
) -> None:
    if not callable(objective):
        raise TypeError(
            f"objective must be a function (params, rng) -> float, got {type(objective).__name__}."
        )
    check_int("seeds", seeds)
    check_int("n_trials", n_trials)
    check_int("n_jobs", n_jobs)
    if direction not in ("minimize", "maximize"):
        raise ValueError(f"direction must be 'minimize' or 'maximize', got {direction!r}.")
    if isinstance(risk, bool) or not isinstance(risk, int | float) or not math.isfinite(risk):
        raise TypeError(f"risk must be a finite number, got {risk!r}.")
    if risk < 0:
        raise ValueError(f"risk must be >= 0 (0: rank by the mean), got {risk}.")
    if risk > 0 and seeds < 2:
        raise ValueError(
            f"risk > 0 penalises the spread over seeds, which needs seeds >= 2 (got {seeds})."
        )
    if pruner is not False and executor is not None and n_jobs == 1:
        raise ValueError(
            "pruning checks a trial after every seed, so one trial at a time runs its seeds "
            "here one by one; with an executor, prune with n_jobs > 1 (the trials' seeds run in "
            "waves, one seed of every trial at once) or use pruner=False."
        )
    check_space(space)
