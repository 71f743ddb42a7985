"""The trials of ``bnn.tune.tune``: one configuration under every seed, a reused result for a
configuration already scored, and several trials at once (Optuna's ask/tell).

Every trial runs its configuration under the same seeds (``rng.spawn(f"seed-{i}")``), so a
configuration the study has already completed would give the same values again: its result is
copied instead (``reused_from`` names the trial). With ``n_jobs > 1`` the study asks for
``n_jobs`` configurations, runs all their seeds as one set of jobs on the executor, and tells
the results in the order it asked: the same study for the same ``n_jobs``, whatever the executor
or the order in which jobs finish. TPE then uses the constant liar (Optuna), so the
configurations asked together differ.
"""

from __future__ import annotations

import functools
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bnn._jobs import JobError, run_jobs
from bnn.random.rng import RNG
from bnn.tune._optuna import import_optuna
from bnn.tune._seeds import Objective, one_seed, record
from bnn.tune._statistics import average, seed_summary
from bnn.tune.space import Space, suggest

if TYPE_CHECKING:
    import optuna

__all__ = ["AllSeedsFailed", "TrialSettings", "run_trial", "run_trials_at_once", "table"]

ATTRIBUTES = (
    "mean",
    "std",
    "sem",
    "ci95_low",
    "ci95_high",
    "score",
    "n",
    "values",
    "failed",
    "errors",
)


@dataclass(frozen=True)
class TrialSettings:
    """What every trial of one study shares: the objective, the space, the seeds' parent, the
    score's direction (``sign``) and ``risk``, and where the seeds run."""

    objective: Objective
    space: Space
    parent: RNG
    seeds: int
    sign: float
    risk: float
    executor: Executor | None
    threads_per_job: int | None


class AllSeedsFailed(RuntimeError):
    """Every seed of a trial failed (Optuna marks the trial failed; the study goes on)."""


def run_trial(settings: TrialSettings, pruner: object, trial: optuna.Trial) -> float:
    """One trial (``study.optimize``'s objective): its configuration under every seed, pruned
    between seeds when ``pruner`` is set and the seeds run here."""
    objective, space, parent, seeds = (
        settings.objective,
        settings.space,
        settings.parent,
        settings.seeds,
    )
    sign, risk, executor = settings.sign, settings.risk, settings.executor
    params = suggest(trial, space)
    reused = reuse_result(trial)
    if reused is not None:
        return reused
    # fresh children for every trial: each starts its streams and generators anew, so every
    # trial sees the same random numbers (common random numbers), here or on an executor
    children = [parent.spawn(f"seed-{i}") for i in range(seeds)]
    values: list[float] = []
    errors: list[str] = []
    if pruner is not False and executor is None:  # one seed at a time, pruned between seeds
        for step, child in enumerate(children):
            value, error = one_seed(objective, (params, child))
            record(values, errors, value, error)
            if values:
                trial.report(average(values), step)
                if trial.should_prune():
                    set_attributes(trial, values, errors, sign, risk)
                    raise import_optuna().TrialPruned(f"pruned after {step + 1} seeds")
    else:
        for value, error in _run_seeds(settings, [params], children):
            record(values, errors, value, error)
    score = set_attributes(trial, values, errors, sign, risk)
    if not values:
        raise AllSeedsFailed(f"every seed failed; the first error: {errors[0]}")
    return score


def set_attributes(
    trial: optuna.Trial, values: list[float], errors: list[str], sign: float, risk: float
) -> float:
    """Store the seed statistics on the trial; return its score."""
    summary = seed_summary(values)
    score = summary["mean"] + sign * risk * (summary["std"] if len(values) > 1 else 0.0)
    summary["score"] = score
    for key, value in summary.items():
        trial.set_user_attr(key, value)
    trial.set_user_attr("values", list(values))
    trial.set_user_attr("failed", len(errors))
    trial.set_user_attr("errors", errors[:5])
    return score


def table(study: optuna.Study, optuna: Any) -> list[dict[str, Any]]:
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    rows = [
        {
            "number": t.number,
            "params": dict(t.params) if t.params else {},
            **{
                key: t.user_attrs[key]
                for key in ("mean", "std", "sem", "ci95_low", "ci95_high", "score")
            },
            "n": int(t.user_attrs["n"]),
            "failed": int(t.user_attrs["failed"]),
            "values": list(t.user_attrs["values"]),
        }
        for t in complete
    ]
    sign = 1.0 if study.direction == optuna.study.StudyDirection.MINIMIZE else -1.0
    for rank, row in enumerate(sorted(rows, key=lambda r: sign * r["score"])):
        row["rank"] = rank
    return rows


def _run_seeds(
    settings: TrialSettings, configurations: list[dict[str, Any]], children: list[RNG]
) -> list[tuple[float, str]]:
    """Every configuration under every seed, as one set of jobs: ``(value, error)`` in order
    (configuration-major)."""
    jobs = [(params, child) for params in configurations for child in children]
    try:
        return run_jobs(
            functools.partial(one_seed, settings.objective),
            jobs,
            executor=settings.executor,
            threads_per_job=settings.threads_per_job,
            describe=lambda index: (
                f"configuration {index // len(children)}, seed {index % len(children)}"
            ),
        )
    except JobError as failed:  # a wrong return type is the objective's bug: say so as is
        wrong = [e for e in failed.failures.values() if isinstance(e, TypeError)]
        if wrong:
            raise wrong[0] from None
        raise


def reuse_result(trial: optuna.Trial) -> float | None:
    """The score of a completed trial with this trial's configuration, copied onto it (the same
    seeds would give the same values again); ``None`` when the configuration is new."""
    optuna = import_optuna()
    complete = optuna.trial.TrialState.COMPLETE
    for earlier in trial.study.get_trials(deepcopy=False, states=(complete,)):
        if earlier.params == trial.params and "score" in earlier.user_attrs:
            for key in ATTRIBUTES:
                trial.set_user_attr(key, earlier.user_attrs[key])
            trial.set_user_attr("reused_from", earlier.number)
            return float(earlier.user_attrs["score"])
    return None


def run_trials_at_once(
    study: optuna.Study, count: int, settings: TrialSettings, pruning: bool = False
) -> None:
    """Ask ``count`` configurations, run the new ones' seeds on the executor, tell every result
    in the order asked (a configuration asked twice in the batch runs once).

    Without ``pruning`` all seeds of all new configurations are one set of jobs. With it they
    run in waves, seed ``i`` of every configuration still running at once; after each wave a
    configuration whose running mean the pruner stops is told as pruned. Nothing of the batch
    is told before its end, so the pruner sees the same history whatever the completion order.
    """
    states = import_optuna().trial.TrialState
    trials = [study.ask() for _ in range(count)]
    params = [suggest(trial, settings.space) for trial in trials]
    reused = [reuse_result(trial) for trial in trials]
    first: dict[str, optuna.Trial] = {}
    configurations: dict[str, dict[str, Any]] = {}
    for trial, configuration, score in zip(trials, params, reused, strict=True):
        if score is None and _key(trial) not in first:
            first[_key(trial)] = trial
            configurations[_key(trial)] = configuration
    children = [settings.parent.spawn(f"seed-{i}") for i in range(settings.seeds)]
    outcomes, pruned = (
        _run_in_waves(settings, configurations, first, children)
        if pruning
        else (_run_all(settings, configurations, children), set())
    )
    for trial, score in zip(trials, reused, strict=True):
        if score is None:
            values: list[float] = []
            errors: list[str] = []
            for value, error in outcomes[_key(trial)]:
                record(values, errors, value, error)
            score = set_attributes(trial, values, errors, settings.sign, settings.risk)
            if _key(trial) in pruned:
                study.tell(trial, state=states.PRUNED)
                continue
            if not values:
                study.tell(trial, state=states.FAIL)
                continue
        study.tell(trial, score)


def _key(trial: optuna.Trial) -> str:
    return repr(sorted(trial.params.items()))


def _run_all(
    settings: TrialSettings, configurations: dict[str, dict[str, Any]], children: list[RNG]
) -> dict[str, list[tuple[float, str]]]:
    """Every seed of every configuration as one set of jobs."""
    outcomes = _run_seeds(settings, list(configurations.values()), children)
    seeds = len(children)
    return {
        key: outcomes[index * seeds : (index + 1) * seeds]
        for index, key in enumerate(configurations)
    }


def _run_in_waves(
    settings: TrialSettings,
    configurations: dict[str, dict[str, Any]],
    trials: dict[str, optuna.Trial],
    children: list[RNG],
) -> tuple[dict[str, list[tuple[float, str]]], set[str]]:
    """Seed by seed, every running configuration at once; the pruner asked after each seed.
    Returns the outcomes per configuration and the keys of the pruned ones."""
    outcomes: dict[str, list[tuple[float, str]]] = {key: [] for key in configurations}
    running = list(configurations)
    pruned: set[str] = set()
    for step, child in enumerate(children):
        results = _run_seeds(settings, [configurations[key] for key in running], [child])
        for key, outcome in zip(running, results, strict=True):
            outcomes[key].append(outcome)
            values = [value for value, error in outcomes[key] if not error]
            if values:
                trials[key].report(average(values), step)
                if trials[key].should_prune():
                    pruned.add(key)
        running = [key for key in running if key not in pruned]
        if not running:
            break
    return outcomes, pruned
