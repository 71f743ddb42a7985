"""Figures of out-of-distribution detection and distribution shift (re-exported by
``bnn.evaluate.plots``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from bnn.evaluate._figures import _figure, _numpy
from bnn.evaluate.ood import Score, auroc, uncertainty_score
from bnn.evaluate.shift import ShiftCurve
from bnn.likelihoods import ClassificationPrediction

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["ood_histogram", "shift_plot"]

_SHIFT_METRICS = ("accuracy", "nll", "ece")


def ood_histogram(
    prediction_in: ClassificationPrediction,
    ood: Mapping[str, ClassificationPrediction],
    *,
    score: Score = "entropy",
    bins: int = 30,
    title: str | None = None,
) -> Figure:
    """Histograms of the uncertainty score in distribution and on each OOD set.

    Args:
        prediction_in: the predictive on in-distribution test inputs.
        ood: ``{name: predictive on that OOD set}``; each legend entry shows its AUROC.
        score: ``"entropy"``, ``"max_probability"`` or ``"mutual_information"``.
        bins: histogram bins (shared by all sets).
        title: the axis title (default: the score).

    Example:
        >>> fig = ood_histogram(prediction_in, {"MNIST": prediction_mnist})  # doctest: +SKIP
    """
    if not ood:
        raise ValueError("ood is empty: give at least one {name: prediction} OOD set.")
    inside = uncertainty_score(prediction_in, score)
    scores = {name: uncertainty_score(prediction, score) for name, prediction in ood.items()}
    every = np.concatenate([_numpy(inside)] + [_numpy(s) for s in scores.values()])
    edges = np.linspace(float(every.min()), float(every.max()) + 1e-12, bins + 1).tolist()
    figure = _figure()
    axis = figure.add_subplot()
    axis.hist(_numpy(inside), bins=edges, density=True, alpha=0.6, label="in distribution")
    for name, values in scores.items():
        label = f"{name} (AUROC {auroc(inside, values):.3f})"
        axis.hist(_numpy(values), bins=edges, density=True, alpha=0.5, label=label)
    axis.set(xlabel=score.replace("_", " "), ylabel="density")
    axis.set_title(title or f"{score.replace('_', ' ')}: in distribution vs OOD")
    axis.legend()
    return figure


def shift_plot(
    curves: Mapping[str, ShiftCurve],
    metrics: tuple[str, ...] = _SHIFT_METRICS,
    *,
    variants: Mapping[str, str] | None = None,
) -> Figure:
    """Accuracy, NLL and ECE (or ``metrics``) against the rotation angle, one line per posterior.

    Each curve has a colour of its own (matplotlib's colour cycle, or ``tab20`` for more curves
    than the cycle has colours), except a variant, drawn dashed in its original's colour.

    Args:
        curves: ``{posterior name: ShiftCurve}`` (from `bnn.evaluate.shift.shift_curve`).
        metrics: `ShiftCurve` fields to draw, one panel each.
        variants: ``{variant name: original name}`` of curves that vary another one (a
            recalibrated posterior beside its original, say).
    """
    if not curves:
        raise ValueError("curves is empty: give at least one {name: ShiftCurve}.")
    unknown = [m for m in metrics if m not in ("accuracy", "nll", "ece", "brier", "entropy")]
    if unknown:
        raise ValueError(
            f"unknown shift metrics {unknown}; use accuracy, nll, ece, brier, entropy."
        )
    figure = _figure(width=4.0 * len(metrics), height=3.4)
    axes = np.atleast_1d(figure.subplots(1, len(metrics)))
    variants = dict(variants or {})
    missing = sorted(set(variants.values()) - set(curves))
    if missing:
        raise ValueError(f"variants name originals {missing} that curves does not have.")
    originals = [name for name in curves if name not in variants]
    colours = dict(zip(originals, _colours(len(originals)), strict=True))
    for axis, metric in zip(axes, metrics, strict=True):
        for name, curve in curves.items():
            axis.plot(
                curve.angles,
                getattr(curve, metric),
                "--" if name in variants else "-",
                color=colours[variants.get(name, name)],
                marker="o",
                markersize=3,
                label=name,
            )
        axis.set(
            xlabel="rotation (degrees)", ylabel=metric.upper() if metric != "accuracy" else metric
        )
    axes[0].legend()
    return figure


def _colours(count: int) -> list[Any]:
    """``count`` colours: matplotlib's colour cycle while it has enough, else ``tab20``'s."""
    import matplotlib

    cycle = matplotlib.rcParams["axes.prop_cycle"].by_key().get("color", [])
    if count <= len(cycle):
        return list(cycle[:count])
    palette = matplotlib.colormaps["tab20"]
    return [palette(i % palette.N) for i in range(count)]
