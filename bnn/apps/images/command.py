"""``bnn benchmark images``: train each method on one image set, evaluate it on the test set,
on every out-of-distribution set and under rotation, for several seeds.

Seed ``k`` is the run of `bnn.RNG` ``(seed + k)``: its validation split, every initialisation,
shuffle and prediction draw from it, so one seed's numbers do not depend on the others, on the
methods chosen beside it, or on ``--jobs`` (seeds run in parallel processes, one torch thread
each, when ``jobs > 1``).

Example (from a shell):
    bnn benchmark images --train fashion-mnist --data-dir benchdata/images \\
        --method map --method ensemble --method laplace --seeds 3 --output images-results
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from bnn._progress import progress_bar
from bnn.apps.datasets.images import ImageData, ImageSet, load_image_data, load_images
from bnn.apps.images.evaluation import Evaluation, PeakMemory, evaluate
from bnn.apps.images.methods import TRAIN, SeedRun, Trained, validation_halves, with_temperature
from bnn.apps.images.network import METHODS, Settings
from bnn.parallel.executors import local_pool, run_jobs
from bnn.random.rng import RNG

__all__ = ["Benchmark", "SeedResult", "run_images"]


@dataclass(frozen=True)
class Benchmark:
    """What to run: the training folder, the OOD folders, the methods and settings."""

    train_name: str
    train_dir: Path
    ood_dirs: dict[str, Path]
    methods: tuple[str, ...]
    settings: Settings
    seed: int = 0
    figures: Path | None = None
    device: str = "cpu"

    def __post_init__(self) -> None:
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown or not self.methods:
            raise ValueError(f"methods must be among {METHODS}, got {list(self.methods)}.")
        if self.settings.temperature_on_top and self.settings.validation < 4:
            raise ValueError(
                "temperature_on_top fits on one half of the validation split and chooses on "
                f"the other: validation must be at least 4 images, got {self.settings.validation}."
            )


SeedResult = dict[str, dict[str, Any]]
"""``{method: {"metrics": ..., "ood": ..., "shift": ..., "memory_gb": ...}}`` of one seed."""


def _ordered(methods: Sequence[str]) -> list[str]:
    return [m for m in METHODS if m in methods]


def run_seed(benchmark: Benchmark, index: int, *, progress: bool = True) -> SeedResult:
    """Every method of the benchmark on seed ``benchmark.seed + index``."""
    rng = RNG(benchmark.seed + index)
    settings = benchmark.settings
    data = load_image_data(benchmark.train_dir, validation=settings.validation, rng=rng)
    if settings.train_images is not None:
        kept = ImageSet(
            data.train.x[: settings.train_images], data.train.y[: settings.train_images]
        )
        data = replace(data, train=kept)
    ood_sets = {name: load_images(path, "test").x for name, path in benchmark.ood_dirs.items()}
    run = SeedRun(data, settings, rng, progress)
    results: SeedResult = {}
    methods = _ordered(benchmark.methods)
    calibration, choice = validation_halves(data.validation, settings)
    figures = benchmark.figures if index == 0 else None
    for method in progress_bar(methods, desc=f"seed {index}", disable=not progress):
        with PeakMemory() as peak:
            trained = TRAIN[method](run)
            evaluation = _evaluated(method, trained, run, choice, ood_sets, figures is not None)
        results[method] = _row(evaluation, trained, peak.bytes)
        if figures is not None:
            _method_figures(figures, method, evaluation, data.test.y)
        if not settings.temperature_on_top or method in ("map", "temperature"):
            continue
        name = f"{method}+T"
        with PeakMemory() as peak:
            scaled = with_temperature(
                trained,
                calibration,
                rng.spawn(f"temperature {method}"),
                pooled=settings.pooled_temperature,
            )
            evaluation = _evaluated(name, scaled, run, choice, ood_sets, figures is not None)
        results[name] = _row(evaluation, scaled, peak.bytes)
        if figures is not None:
            _method_figures(figures, name, evaluation, data.test.y)
    return results


def _evaluated(
    name: str,
    trained: Trained,
    run: SeedRun,
    choice: ImageSet,
    ood_sets: dict[str, torch.Tensor],
    keep_predictions: bool,
) -> Evaluation:
    """One row's evaluation, its validation NLL on ``choice``."""
    return evaluate(
        trained,
        choice,
        run.data.test,
        ood_sets,
        run.settings,
        run.rng.spawn(f"evaluate {name}"),
        keep_predictions=keep_predictions,
        progress=run.progress,
    )


def _row(evaluation: Evaluation, trained: Trained, peak_bytes: int) -> dict[str, Any]:
    return {**evaluation.as_dict(), "extras": trained.extras, "memory_gb": peak_bytes / 2**30}


def _on(data: ImageData, device: torch.device) -> ImageData:
    def moved(part: ImageSet) -> ImageSet:
        return ImageSet(part.x.to(device), part.y.to(device))

    return ImageData(moved(data.train), moved(data.validation), moved(data.test))


def _method_figures(folder: Path, method: str, evaluation: Evaluation, y: torch.Tensor) -> None:
    """The reliability diagram and the OOD entropy histogram of one method (seed 0)."""
    from bnn.evaluate.plots import ood_histogram, reliability_diagram

    folder.mkdir(parents=True, exist_ok=True)
    test = evaluation.predictions.pop("test")
    reliability_diagram(test, y).savefig(folder / f"{method}-reliability.png", dpi=100)
    if evaluation.predictions:
        figure = ood_histogram(test, evaluation.predictions, title=f"{method}: predictive entropy")
        figure.savefig(folder / f"{method}-ood.png", dpi=100)
    evaluation.predictions.clear()


def run_images(benchmark: Benchmark, *, seeds: int = 1, jobs: int = 1) -> list[SeedResult]:
    """Run the benchmark for ``seeds`` seeds; seed results in order.

    With ``jobs > 1`` the seeds run in that many processes (one torch thread each); with
    ``jobs = 1`` in this process with torch's threads.
    """
    if seeds < 1 or jobs < 1:
        raise ValueError(f"seeds and jobs must be at least 1, got {seeds} and {jobs}.")
    job = functools.partial(_seed_job, benchmark)
    if jobs == 1:
        return [job(index) for index in range(seeds)]
    with local_pool(min(jobs, seeds)) as pool:
        return run_jobs(
            functools.partial(_seed_job, benchmark, progress=False),
            range(seeds),
            executor=pool,
            threads_per_job=1,
            describe=lambda index: f"seed {index}",
        )


def _seed_job(benchmark: Benchmark, index: int, *, progress: bool = True) -> SeedResult:
    return run_seed(benchmark, index, progress=progress)
