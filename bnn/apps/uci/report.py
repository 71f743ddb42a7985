"""The UCI benchmark's report: per-split results, their mean ± standard error per (data set,
method) beside the published MC dropout row, and the markdown and JSON files."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bnn._io import write_text_atomically

__all__ = [
    "PUBLISHED",
    "PUBLISHED_SPLITS",
    "SplitResult",
    "SummaryRow",
    "format_table",
    "summarise",
    "write_report",
]

# Gal & Ghahramani (2016), corrected arXiv v6, Table 1: MC dropout (mean, standard error).
PUBLISHED = {
    "boston": {"rmse": (2.97, 0.19), "log_likelihood": (-2.46, 0.06)},
    "concrete": {"rmse": (5.23, 0.12), "log_likelihood": (-3.04, 0.02)},
    "energy": {"rmse": (1.66, 0.04), "log_likelihood": (-1.99, 0.02)},
    "yacht": {"rmse": (1.11, 0.09), "log_likelihood": (-1.55, 0.03)},
    "kin8nm": {"rmse": (0.10, 0.00), "log_likelihood": (0.95, 0.01)},
}
PUBLISHED_SPLITS = 20
"""The published rows are means over 20 splits: fewer splits are not compared with them."""


@dataclass(frozen=True)
class SplitResult:
    dataset: str
    method: str
    split: int
    rmse: float
    log_likelihood: float
    coverage_95: float
    seconds: float
    conformal_coverage_90: float | None = None
    conformal_coverage_95: float | None = None
    conformal_width_90: float | None = None
    conformal_width_95: float | None = None
    recalibration: str | None = None  # "split conformal", "CV+ (normalized)" or "isotonic"
    stack_weights: list[float] | None = None
    tuned: dict[str, Any] | None = None
    tuned_seed_std: float | None = None  # the chosen configuration's std over tuning seeds
    duplicated_test_inputs: int = 0  # test inputs equal to a training input


def _mean_se(values: list[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, math.nan
    variance = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
    return mean, math.sqrt(variance / len(values))


@dataclass(frozen=True)
class SummaryRow:
    """Mean ± standard error over splits for one (dataset, method)."""

    dataset: str
    method: str
    splits: int
    rmse: tuple[float, float]
    log_likelihood: tuple[float, float]
    coverage_95: tuple[float, float]
    seconds: tuple[float, float]
    published_rmse: tuple[float, float] | None
    published_log_likelihood: tuple[float, float] | None
    conformal_coverage_90: tuple[float, float] | None = None
    conformal_coverage_95: tuple[float, float] | None = None
    conformal_width_90: tuple[float, float] | None = None
    conformal_width_95: tuple[float, float] | None = None
    recalibration: str | None = None
    stack_weights: list[float] | None = None  # mean over splits
    tuned: str | None = None  # the tuned parameters over splits, and their seed spread

    @property
    def reaches_published(self) -> bool | None:
        """Both RMSE and log-likelihood at least as good as the published MC dropout row
        (``None`` without a published row, or over fewer splits than it averages)."""
        if self.published_rmse is None or self.published_log_likelihood is None:
            return None
        if self.splits < PUBLISHED_SPLITS:
            return None
        return (
            self.rmse[0] <= self.published_rmse[0]
            and self.log_likelihood[0] >= self.published_log_likelihood[0]
        )


def summarise(results: list[SplitResult]) -> list[SummaryRow]:
    """One row per (dataset, method) next to the published MC dropout numbers."""
    rows = []
    for dataset, method in dict.fromkeys((r.dataset, r.method) for r in results):
        group = [r for r in results if (r.dataset, r.method) == (dataset, method)]
        published = PUBLISHED.get(dataset, {})
        rows.append(
            SummaryRow(
                dataset=dataset,
                method=method,
                splits=len(group),
                rmse=_mean_se([r.rmse for r in group]),
                log_likelihood=_mean_se([r.log_likelihood for r in group]),
                coverage_95=_mean_se([r.coverage_95 for r in group]),
                seconds=_mean_se([r.seconds for r in group]),
                published_rmse=published.get("rmse"),
                published_log_likelihood=published.get("log_likelihood"),
                conformal_coverage_90=_optional_mean_se([r.conformal_coverage_90 for r in group]),
                conformal_coverage_95=_optional_mean_se([r.conformal_coverage_95 for r in group]),
                conformal_width_90=_optional_mean_se([r.conformal_width_90 for r in group]),
                conformal_width_95=_optional_mean_se([r.conformal_width_95 for r in group]),
                recalibration=group[0].recalibration,
                stack_weights=_mean_weights([r.stack_weights for r in group]),
                tuned=_describe_tuned(group),
            )
        )
    return rows


def _describe_tuned(group: list[SplitResult]) -> str | None:
    """``"lr 0.003 ± 0.001, dropout 0.02 ± 0.01; seed std 0.04"``: each tuned parameter's
    mean ± standard deviation over splits (a categorical one: its values and counts), and the
    chosen configurations' mean standard deviation over the tuning seeds."""
    tuned = [r.tuned for r in group if r.tuned is not None]
    if not tuned:
        return None
    parts = []
    for name in tuned[0]:
        values = [t[name] for t in tuned]
        if all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
            mean = sum(values) / len(values)
            spread = math.sqrt(sum((v - mean) ** 2 for v in values) / max(len(values) - 1, 1))
            parts.append(f"{name} {mean:.3g} ± {spread:.2g}")
        else:
            counts = {str(v): values.count(v) for v in dict.fromkeys(values)}
            parts.append(f"{name} " + "/".join(f"{v}×{c}" for v, c in counts.items()))
    stds = [r.tuned_seed_std for r in group if r.tuned_seed_std is not None]
    seed = f"; seed std {sum(stds) / len(stds):.3g}" if stds else ""
    return ", ".join(parts) + seed


def _optional_mean_se(values: list[float | None]) -> tuple[float, float] | None:
    """Mean ± standard error of a metric every split reports, else ``None``."""
    present = [v for v in values if v is not None]
    return _mean_se(present) if present and len(present) == len(values) else None


def _mean_weights(weights: list[list[float] | None]) -> list[float] | None:
    present = [w for w in weights if w is not None]
    if not present or len(present) != len(weights):
        return None
    return [sum(column) / len(present) for column in zip(*present, strict=True)]


def _pm(value: tuple[float, float] | None) -> str:
    """``mean ± standard error``; the mean alone when one split gives no standard error."""
    if value is None:
        return "—"
    mean, error = value
    return f"{mean:.3f}" if math.isnan(error) else f"{mean:.3f} ± {error:.3f}"


def format_table(rows: list[SummaryRow]) -> str:
    """Markdown table: ours (mean ± s.e.) next to the published MC dropout row.

    Conformal coverage columns appear when some row has them, stacking weights (in the order
    of ``bnn.apps.uci.methods.STACKED``) when some row is a stack.
    """
    conformal = any(row.conformal_coverage_90 is not None for row in rows)
    stacked = any(row.stack_weights is not None for row in rows)
    tuned = any(row.tuned is not None for row in rows)
    header = "| dataset | method | splits | RMSE | test log-lik | 95% coverage "
    if conformal:
        header += "| recalibration | recalibrated 90% coverage | recalibrated 95% coverage "
        header += "| 90% width | 95% width "
    if stacked:
        header += "| stack weights "
    if tuned:
        header += "| tuned (mean ± sd over splits) "
    header += "| s/split | published MC-dropout RMSE | published log-lik | reaches published |"
    lines = [header, "|---" * (header.count("|") - 1) + "|"]
    for row in rows:
        reaches = {True: "yes", False: "no", None: "—"}[row.reaches_published]
        if row.published_rmse is not None and row.splits < PUBLISHED_SPLITS:
            reaches = f"n/a ({row.splits} of {PUBLISHED_SPLITS} splits)"
        line = (
            f"| {row.dataset} | {row.method} | {row.splits} | {_pm(row.rmse)} | "
            f"{_pm(row.log_likelihood)} | {_pm(row.coverage_95)} "
        )
        if conformal:
            line += f"| {row.recalibration or '—'} "
            line += f"| {_pm(row.conformal_coverage_90)} | {_pm(row.conformal_coverage_95)} "
            line += f"| {_pm(row.conformal_width_90)} | {_pm(row.conformal_width_95)} "
        if stacked:
            weights = row.stack_weights
            line += "| " + ("—" if weights is None else " / ".join(f"{w:.2f}" for w in weights))
            line += " "
        if tuned:
            line += f"| {row.tuned or '—'} "
        line += (
            f"| {row.seconds[0]:.1f} | {_pm(row.published_rmse)} | "
            f"{_pm(row.published_log_likelihood)} | {reaches} |"
        )
        lines.append(line)
    return "\n".join(lines)


def write_report(results: list[SplitResult], output: Path) -> str:
    """Write ``uci.json`` (per split and summary) and ``uci.md``; return the markdown table."""
    output.mkdir(parents=True, exist_ok=True)
    rows = summarise(results)
    table = format_table(rows)
    report = {"splits": [asdict(r) for r in results], "summary": [asdict(r) for r in rows]}
    write_text_atomically(output / "uci.json", json.dumps(report, indent=2))
    duplicates = [r.duplicated_test_inputs for r in results]
    if any(duplicates):
        table += (
            f"\n\n{sum(duplicates) / len(duplicates):.1f} test inputs per split (at most "
            f"{max(duplicates)}) equal a training input: a model that interpolates its training "
            "data scores them with a spiking density, so read the test log-likelihood with care."
        )
    write_text_atomically(output / "uci.md", table + "\n")
    return table
