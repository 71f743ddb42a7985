"""Racing: add common seeds to the two leading configurations until they separate."""

from __future__ import annotations

import functools
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

from bnn._checks import check_int
from bnn._jobs import run_jobs
from bnn.random.rng import RNG
from bnn.tune._seeds import Objective, one_seed
from bnn.tune._statistics import average, paired_interval

__all__ = ["Race", "distinct_leaders", "race_leaders", "unraced_message"]


@dataclass(frozen=True)
class Race:
    """Adaptive seeds for the two leading configurations after the trials.

    Attributes:
        max_seeds: seeds per configuration at most (including the trial's own ``seeds``).
        step: seeds added to both per round.
        level: confidence of the paired interval that must exclude zero difference.
    """

    max_seeds: int = 20
    step: int = 2
    level: float = 0.95

    def __post_init__(self) -> None:
        check_int("race max_seeds", self.max_seeds, minimum=2)
        check_int("race step", self.step)
        if not 0.5 <= self.level < 1.0:
            raise ValueError(f"race level must be in [0.5, 1), e.g. 0.95, got {self.level!r}.")


def race_leaders(
    objective: Objective,
    rows: list[dict[str, Any]],
    parent: RNG,
    seeds: int,
    race: Race,
    sign: float,
    executor: Executor | None,
    threads_per_job: int | None,
) -> tuple[dict[str, Any], bool, str, dict[int, list[float]]]:
    """Seeds for the two leaders until a paired interval excludes 0, or ``max_seeds``."""
    leaders = distinct_leaders(rows, sign)
    values = {row["number"]: list(row["values"]) for row in leaders}
    used = seeds
    while True:
        low, high = paired_interval(
            values[leaders[0]["number"]], values[leaders[1]["number"]], race.level
        )
        if low > 0 or high < 0 or used >= race.max_seeds:
            break
        extra = range(used, min(used + race.step, race.max_seeds))
        for row in leaders:
            outcomes = run_jobs(
                functools.partial(one_seed, objective),
                [(row["params"], parent.spawn(f"seed-{i}")) for i in extra],
                executor=executor,
                threads_per_job=threads_per_job,
            )
            values[row["number"]] += [v for v, error in outcomes if not error]
        used = extra.stop
    means = {number: average(v) for number, v in values.items()}
    winner = min(leaders, key=lambda row: sign * means[row["number"]])
    separated = low > 0 or high < 0
    other = leaders[1] if winner is leaders[0] else leaders[0]
    if separated:
        message = (
            f"trial {winner['number']} beats trial {other['number']} over {used} common seeds "
            f"(paired {race.level:.0%} interval of the difference [{low:.4g}, {high:.4g}] "
            "excludes 0)."
        )
    else:
        message = (
            f"trials {winner['number']} and {other['number']} are indistinguishable under seed "
            f"noise after {used} common seeds (paired {race.level:.0%} interval of the "
            f"difference [{low:.4g}, {high:.4g}] contains 0): either is as good as the data "
            "can tell."
        )
    return winner, separated, message, values


def distinct_leaders(rows: list[dict[str, Any]], sign: float) -> list[dict[str, Any]]:
    """The two best-scoring trials with different configurations (a sampler may repeat one)."""
    leaders: list[dict[str, Any]] = []
    for row in sorted(rows, key=lambda row: sign * row["score"]):
        if all(row["params"] != leader["params"] for leader in leaders):
            leaders.append(row)
    return leaders[:2]


def unraced_message(rows: list[dict[str, Any]], sign: float) -> str:
    ranked = distinct_leaders(rows, sign)
    if len(ranked) < 2:
        return f"trial {ranked[0]['number']} is the only configuration completed."
    best, runner = ranked[:2]
    if best["n"] < 2 or runner["n"] < 2:
        return (
            f"trial {best['number']} scores best on one seed per trial: there is no interval, "
            "so the ranking may be seed luck; tune with seeds >= 2 to see the spread."
        )
    overlap = best["ci95_low"] <= runner["ci95_high"] and runner["ci95_low"] <= best["ci95_high"]
    if overlap:
        return (
            f"trial {best['number']} scores best, but its 95% interval over seeds overlaps "
            f"trial {runner['number']}'s: the two may be indistinguishable under seed noise "
            "(race=bnn.tune.Race() adds seeds until they separate)."
        )
    return (
        f"trial {best['number']} scores best; its 95% interval over seeds does not overlap "
        f"the runner-up's (trial {runner['number']})."
    )
