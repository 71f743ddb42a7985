"""The image benchmark's report: mean ± standard error over seeds, as markdown, JSON and the
rotation figure."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bnn.apps.images.command import Benchmark, SeedResult
from bnn.apps.images.network import METHODS

__all__ = ["chosen_on_validation", "rows", "summarise", "write_report"]

_TEST = (("accuracy", 100.0), ("nll", 1.0), ("ece", 100.0), ("brier", 1.0))
_OOD = ("auroc", "aupr", "fpr95", "confidence_out")
_ANGLES = (0.0, 45.0, 90.0, 135.0, 180.0)


def _mean_se(values: Sequence[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, float("nan")
    variance = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
    return mean, math.sqrt(variance / len(values))


def _cell(values: Sequence[float], scale: float = 1.0, digits: int = 4) -> str:
    mean, se = _mean_se([v * scale for v in values])
    return f"{mean:.{digits}f}" if math.isnan(se) else f"{mean:.{digits}f} ± {se:.{digits}f}"


def rows(results: list[SeedResult]) -> list[str]:
    """The methods of a run in benchmark order, each followed by its ``"+T"`` row if any."""
    names = [[m, f"{m}+T"] for m in METHODS]
    return [name for pair in names for name in pair if name in results[0]]


def summarise(results: list[SeedResult]) -> dict[str, Any]:
    """``{method: {metric: [mean, se]}}`` over seeds, for test, OOD and rotation metrics."""
    summary: dict[str, Any] = {}
    for method in rows(results):
        runs = [seed[method] for seed in results]
        entry: dict[str, Any] = {
            name: _mean_se([run["metrics"][name] for run in runs]) for name in runs[0]["metrics"]
        }
        entry["memory_gb"] = _mean_se([run["memory_gb"] for run in runs])
        for ood_name in runs[0]["ood"]:
            entry[ood_name] = {
                key: _mean_se([run["ood"][ood_name][key] for run in runs])
                for key in runs[0]["ood"][ood_name]
                if key != "score"
            }
        entry["shift"] = {
            key: [_mean_se([run["shift"][key][i] for run in runs])[0] for i in range(len(angles))]
            for key, angles in ((k, runs[0]["shift"]["angles"]) for k in runs[0]["shift"])
        }
        summary[method] = entry
    return summary


def chosen_on_validation(results: list[SeedResult], temperature_on_top: bool = False) -> str | None:
    """The method with the lowest mean validation NLL (``None`` without validation data).

    Without ``temperature_on_top``, ``temperature`` is left out: its temperature was fitted
    on the validation split, so its validation NLL is in-sample. With it, every temperature
    was fitted on the first half of the split and every NLL is on the second: all compete.
    """
    candidates = {
        method: _mean_se([seed[method]["metrics"]["val_nll"] for seed in results])[0]
        for method in rows(results)
        if (temperature_on_top or method != "temperature")
        and "val_nll" in results[0][method]["metrics"]
    }
    return min(candidates, key=candidates.__getitem__) if candidates else None


def _markdown(benchmark: Benchmark, results: list[SeedResult]) -> str:
    methods = rows(results)
    lines = [
        f"# {benchmark.train_name}: {len(methods)} rows, {len(results)} seed(s) (mean ± s.e.)",
        "",
        *_test_table(methods, results),
    ]
    on_top = benchmark.settings.temperature_on_top
    pooled = " to the pooled predictives" if benchmark.settings.pooled_temperature else ""
    chosen = chosen_on_validation(results, on_top)
    if chosen is not None:
        rule = (
            f"temperatures fitted on its first half{pooled}, every NLL measured on its second half"
            if on_top
            else "`temperature` excluded: it was fitted there"
        )
        lines += [
            "",
            f"Chosen on the validation split (lowest mean validation NLL, {rule}): **{chosen}**.",
        ]
    for ood_name in results[0][methods[0]]["ood"]:
        lines += ["", *_ood_table(methods, results, ood_name)]
    lines += ["", *_shift_table(methods, results, benchmark.settings.shift_images)]
    return "\n".join(lines) + "\n"


def _test_table(methods: list[str], results: list[SeedResult]) -> list[str]:
    lines = [
        "| method | accuracy (%) | NLL | ECE (%) | Brier | train (s) | predict 10k (s) | peak GB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for method in methods:
        runs = [seed[method] for seed in results]
        cells = [
            _cell([r["metrics"][k] for r in runs], scale, 2 if scale > 1 else 4)
            for k, scale in _TEST
        ]
        cost = [
            _cell([r["metrics"]["train_seconds"] for r in runs], digits=1),
            _cell([r["metrics"]["predict_seconds"] for r in runs], digits=2),
            _cell([r["memory_gb"] for r in runs], digits=2),
        ]
        lines.append(f"| {method} | " + " | ".join(cells + cost) + " |")
    return lines


def _ood_table(methods: list[str], results: list[SeedResult], ood_name: str) -> list[str]:
    lines = [
        f"Out of distribution: {ood_name} (score: predictive entropy)",
        "",
        "| method | AUROC | AUPR | FPR95 | confidence on OOD |",
        "|---|---:|---:|---:|---:|",
    ]
    for method in methods:
        runs = [seed[method]["ood"][ood_name] for seed in results]
        lines.append(
            f"| {method} | " + " | ".join(_cell([r[k] for r in runs]) for k in _OOD) + " |"
        )
    return lines


def _shift_table(methods: list[str], results: list[SeedResult], images: int) -> list[str]:
    angles = results[0][methods[0]]["shift"]["angles"]
    shown = [a for a in _ANGLES if a in angles]
    lines = [
        f"Rotated test images ({images} per angle): accuracy (%) / ECE (%)",
        "",
        "| method | " + " | ".join(f"{a:.0f}°" for a in shown) + " |",
        "|---|" + "---:|" * len(shown),
    ]
    for method in methods:
        runs = [seed[method]["shift"] for seed in results]
        cells = []
        for angle in shown:
            i = angles.index(angle)
            acc = _mean_se([100 * r["accuracy"][i] for r in runs])[0]
            ece = _mean_se([100 * r["ece"][i] for r in runs])[0]
            cells.append(f"{acc:.1f} / {ece:.1f}")
        lines.append(f"| {method} | " + " | ".join(cells) + " |")
    return lines


def write_report(benchmark: Benchmark, results: list[SeedResult], output: Path) -> str:
    """Write ``images.md``, ``images.json`` and (with matplotlib) ``figures/shift.png``."""
    output.mkdir(parents=True, exist_ok=True)
    text = _markdown(benchmark, results)
    (output / "images.md").write_text(text)
    record = {
        "train": benchmark.train_name,
        "ood": {name: str(path) for name, path in benchmark.ood_dirs.items()},
        "settings": {
            k: list(v) if isinstance(v, tuple) else v for k, v in vars(benchmark.settings).items()
        },
        "seed": benchmark.seed,
        "summary": summarise(results),
        "chosen_on_validation": chosen_on_validation(
            results, benchmark.settings.temperature_on_top
        ),
        "seeds": results,
    }
    (output / "images.json").write_text(json.dumps(record, indent=1))
    if benchmark.figures is not None:
        _shift_figure(results, benchmark.figures / "shift.png")
    return text


def _shift_figure(results: list[SeedResult], path: Path) -> None:
    from bnn.evaluate.plots import shift_plot
    from bnn.evaluate.shift import ShiftCurve

    summary = summarise(results)
    curves = {method: ShiftCurve(**entry["shift"]) for method, entry in summary.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    variants = {name: name.removesuffix("+T") for name in curves if name.endswith("+T")}
    shift_plot(curves, variants=variants).savefig(path, dpi=100)
