"""Seed sweeps: run the same experiment under many seeds and report the spread.

One seed shows one draw from the distribution of outcomes that initialisation, shuffling and
dropout induce. ``seed_sweep`` runs ``fn(rng)`` once per seed and summarises every metric with
mean, sample standard deviation, standard error, min, max and a 95% Student-t interval for the
mean, so a result can be reported as "0.91 ± 0.02 (95% CI over 10 seeds)".

Example:
    >>> def run(rng):
    ...     with rng.stream("init"):
    ...         return {"loss": float(torch.rand(()))}
    >>> result = bnn.seed_sweep(run, seeds=5, progress=False)
    >>> result.table["loss"]["mean"]  # doctest: +SKIP
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field

import torch

from bnn._jobs import run_jobs
from bnn._progress import progress_bar
from bnn.random.default import RNGLike, resolve_rng, use_rng
from bnn.random.rng import RNG

__all__ = ["SweepResult", "seed_sweep", "student_t_quantile", "summarise_values"]

STATISTICS = ("mean", "std", "sem", "min", "max", "ci95_low", "ci95_high")


@dataclass(frozen=True)
class SweepResult:
    """Per-seed metrics and their summary.

    Attributes:
        seeds: the seeds, in run order.
        runs: one metric dict per seed.
        table: ``{metric: {"mean", "std", "sem", "min", "max", "ci95_low", "ci95_high", "n"}}``;
            ``std`` uses ``n - 1``; the interval is ``mean ± t_{0.975, n-1} · sem`` (NaN for n=1).
    """

    seeds: tuple[int, ...]
    runs: tuple[dict[str, float], ...]
    table: dict[str, dict[str, float]] = field(repr=False)

    def to_markdown(self, digits: int = 4) -> str:
        """The table as markdown: one row per metric."""
        header = "| metric | " + " | ".join(STATISTICS) + " | n |"
        rule = "|---" * (len(STATISTICS) + 2) + "|"
        rows = [
            f"| {name} | "
            + " | ".join(f"{row[s]:.{digits}g}" for s in STATISTICS)
            + f" | {int(row['n'])} |"
            for name, row in self.table.items()
        ]
        return "\n".join([header, rule, *rows])

    def __str__(self) -> str:
        return self.to_markdown()

    def _repr_markdown_(self) -> str:
        return self.to_markdown()


def seed_sweep(
    fn: Callable[[RNG], Mapping[str, float | torch.Tensor]],
    seeds: int | Iterable[int],
    *,
    rng: RNGLike = None,
    executor: Executor | None = None,
    threads_per_job: int | None = None,
    progress: bool = True,
    verbose: bool = False,
) -> SweepResult:
    """Call ``fn(rng_i)`` for each seed and summarise the metrics it returns.

    Each run gets its own child ``rng_i = rng.spawn(seed_i)``. During the run it is the default
    `RNG` (so library calls with ``rng=None`` use it) and the global generators are seeded from
    it; the caller's default and global state are restored afterwards. Run ``i`` is therefore
    reproduced exactly by ``fn(rng.spawn(seed_i))`` inside ``bnn.random.use_rng``.

    Args:
        fn: the experiment; returns a mapping of metric name to a finite scalar (float, int or
            one-element tensor). Every run must return the same metric names.
        seeds: a number of seeds (``5`` means seeds ``0..4``) or an iterable of seeds.
        rng: the parent `RNG` the runs are spawned from (an int seed or ``None`` for default).
        executor: run the seeds on any ``concurrent.futures.Executor`` (a process pool, a
            Dask client's ``get_executor()``); ``fn`` must then be picklable. The results are
            identical to the serial run with the same ``threads_per_job``
            (``bnn.parallel.executors``).
        threads_per_job: torch intra-op threads per run (default: unchanged serially, 1 on an
            executor).
        progress: show a tqdm bar (serial runs).
        verbose: print the summary table when done.

    Returns:
        A ``SweepResult``.

    Raises:
        ValueError: no seeds, duplicate seeds, a non-finite metric, or runs disagreeing on names.
        TypeError: ``fn`` returning something that is not a mapping of scalars.
    """
    if not callable(fn):
        raise TypeError(f"fn must be a function rng -> dict of metrics, got {type(fn).__name__}.")
    seed_list = _seed_list(seeds)
    parent = resolve_rng(rng)
    items: Iterable[tuple[int, RNG]] = [(seed, parent.spawn(seed)) for seed in seed_list]
    if executor is None:
        items = progress_bar(items, desc="seed sweep", disable=not progress)
    outputs = run_jobs(
        functools.partial(_run_seed, fn),
        items,
        executor=executor,
        threads_per_job=threads_per_job,
        describe=lambda index: f"seed {seed_list[index]}",
    )
    runs: list[dict[str, float]] = []
    for seed, metrics in zip(seed_list, outputs, strict=True):
        runs.append(_check_metrics(metrics, seed, expected=runs[0].keys() if runs else None))
    table = {name: summarise_values([run[name] for run in runs]) for name in runs[0]}
    result = SweepResult(seeds=tuple(seed_list), runs=tuple(runs), table=table)
    if verbose:
        print(result.to_markdown())
    return result


def _run_seed(
    fn: Callable[[RNG], Mapping[str, float | torch.Tensor]], item: tuple[int, RNG]
) -> Mapping[str, float | torch.Tensor]:
    """One run: ``fn(rng)`` with ``rng`` the default and the globals seeded from it."""
    _, run_rng = item
    with use_rng(run_rng):
        return fn(run_rng)


def _seed_list(seeds: int | Iterable[int]) -> list[int]:
    if isinstance(seeds, bool):
        raise TypeError("seeds must be a count or an iterable of ints, got a bool.")
    if isinstance(seeds, int):
        if seeds < 1:
            raise ValueError(f"seeds must be a positive count, got {seeds}.")
        return list(range(seeds))
    seed_list = list(seeds)
    if not seed_list:
        raise ValueError("seeds is empty: pass a count (e.g. 10) or a list of seeds.")
    for seed in seed_list:
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise TypeError(f"every seed must be a non-negative int, got {seed!r}.")
    if len(set(seed_list)) != len(seed_list):
        raise ValueError(f"seeds contain duplicates: {seed_list}; each seed should run once.")
    return seed_list


def _check_metrics(metrics: object, seed: int, expected: Iterable[str] | None) -> dict[str, float]:
    if not isinstance(metrics, Mapping) or not metrics:
        raise TypeError(
            f"fn must return a non-empty dict of metric name -> number; for seed {seed} it "
            f"returned {type(metrics).__name__}."
        )
    checked: dict[str, float] = {}
    for name, value in metrics.items():
        if isinstance(value, torch.Tensor):
            if value.numel() != 1:
                raise TypeError(
                    f"metric {name!r} for seed {seed} is a tensor of shape {tuple(value.shape)}; "
                    "return a scalar (e.g. loss.item())."
                )
            value = value.item()
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError(
                f"metric {name!r} for seed {seed} is {type(value).__name__}, not a number."
            )
        if not math.isfinite(value):
            raise ValueError(
                f"metric {name!r} is {value} for seed {seed}; the run diverged or failed. "
                "Fix the run or leave that seed out."
            )
        checked[str(name)] = float(value)
    if expected is not None and set(checked) != set(expected):
        raise ValueError(
            f"seed {seed} returned metrics {sorted(checked)}, earlier seeds {sorted(expected)}; "
            "every run must return the same names."
        )
    return checked


def summarise_values(values: Sequence[float]) -> dict[str, float]:
    """Mean, std, standard error, min, max, Student-t 95 % interval of the mean and ``n``."""
    n = len(values)
    mean = math.fsum(values) / n
    if n > 1:
        std = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
        sem = std / math.sqrt(n)
        half_width = student_t_quantile(0.975, n - 1) * sem
    else:
        std = sem = half_width = math.nan
    return {
        "mean": mean,
        "std": std,
        "sem": sem,
        "min": min(values),
        "max": max(values),
        "ci95_low": mean - half_width,
        "ci95_high": mean + half_width,
        "n": float(n),
    }


def student_t_quantile(probability: float, dof: int) -> float:
    """Quantile of Student's t distribution (bisection on its CDF; accurate to ~1e-12)."""
    if not 0.0 < probability < 1.0 or dof < 1:
        raise ValueError("need 0 < probability < 1 and dof >= 1.")
    if probability < 0.5:
        return -student_t_quantile(1.0 - probability, dof)
    low, high = 0.0, 1.0
    while _student_t_cdf(high, dof) < probability:
        high *= 2.0
    for _ in range(200):
        middle = 0.5 * (low + high)
        if _student_t_cdf(middle, dof) < probability:
            low = middle
        else:
            high = middle
    return 0.5 * (low + high)


def _student_t_cdf(t: float, dof: int) -> float:
    """CDF of Student's t for ``t >= 0`` via the regularised incomplete beta function."""
    x = dof / (dof + t * t)
    return 1.0 - 0.5 * _regularised_incomplete_beta(0.5 * dof, 0.5, x)


def _regularised_incomplete_beta(a: float, b: float, x: float) -> float:
    """I_x(a, b) by Lentz's continued fraction (Press et al., Numerical Recipes, §6.4)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    if x > (a + 1.0) / (a + b + 2.0):
        return 1.0 - _regularised_incomplete_beta(b, a, 1.0 - x)
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    fraction = d
    for m in range(1, 500):
        for numerator in (
            m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
            -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1)),
        ):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            fraction *= c * d
        if abs(c * d - 1.0) < 1e-15:
            break
    return math.exp(log_front) * fraction / a
