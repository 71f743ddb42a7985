"""Plots for notebooks: calibration, predictive bands, posterior predictive checks, traces.

Every function takes a prediction (or a posterior's draws) and returns a
``matplotlib.figure.Figure`` built without ``pyplot`` (no global state, no ``plt.show()``): it
displays as a PNG when it is a notebook cell's value (no ``%matplotlib`` needed), saves with
``fig.savefig``, and works on headless machines.
This is the only module of ``bnn`` that imports matplotlib, an optional extra: install it with
``pip install "bnn-torch[plots]"``.

Example:
    >>> fig = bnn.evaluate.plots.reliability_diagram(prediction, y_test)
    >>> fig.savefig("reliability.png")
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from bnn.evaluate._figures import _figure, _numpy
from bnn.evaluate._shift_plots import ood_histogram, shift_plot
from bnn.evaluate.calibration import GRID, calibration
from bnn.likelihoods import ClassificationPrediction, RegressionPrediction
from bnn.posterior.protocol import ParameterPosterior
from bnn.random.default import RNGLike, resolve_rng

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "compare_predictive",
    "ood_histogram",
    "coverage_curve",
    "pit_histogram",
    "plot_posterior_predictive",
    "plot_predictive",
    "plot_rank",
    "plot_trace",
    "plot_tuning_history",
    "plot_tuning_importance",
    "reliability_diagram",
    "shift_plot",
]


def reliability_diagram(
    prediction: ClassificationPrediction, y: Tensor, num_bins: int = 15
) -> Figure:
    """Accuracy against confidence per bin, with the bin counts; the diagonal is calibration."""
    report = calibration(prediction, y, num_bins=num_bins)
    probs = prediction.class_probs.mean(0)
    confidence, predicted = probs.max(-1)
    correct = (predicted == y.reshape(predicted.shape).long()).to(torch.float64)
    bins = torch.clamp((confidence * num_bins).long(), max=num_bins - 1)
    figure = _figure()
    axis = figure.add_subplot()
    centres, accuracies, counts = [], [], []
    for b in range(num_bins):
        members = bins == b
        if bool(members.any()):
            centres.append((b + 0.5) / num_bins)
            accuracies.append(float(correct[members].mean()))
            counts.append(int(members.sum()))
    axis.bar(centres, accuracies, width=1 / num_bins, edgecolor="k", alpha=0.7, label="accuracy")
    axis.plot([0, 1], [0, 1], "k--", linewidth=1, label="calibrated")
    axis.set(xlabel="confidence", ylabel="accuracy", xlim=(0, 1), ylim=(0, 1))
    axis.set_title(f"reliability (ECE {report.scores['ece']:.3f})")
    axis.legend(loc="upper left")
    return figure


def coverage_curve(prediction: RegressionPrediction, y: Tensor) -> Figure:
    """Empirical against nominal coverage of central intervals (levels 0.05…0.95)."""
    report = calibration(prediction, y, levels=GRID)
    figure = _figure()
    axis = figure.add_subplot()
    levels = list(report.coverage)
    axis.plot(levels, [report.coverage[level] for level in levels], "o-", label="empirical")
    axis.plot([0, 1], [0, 1], "k--", linewidth=1, label="calibrated")
    axis.set(xlabel="nominal coverage", ylabel="empirical coverage", xlim=(0, 1), ylim=(0, 1))
    axis.set_title(f"coverage (calibration error {report.scores['calibration error']:.3f})")
    axis.legend(loc="upper left")
    return figure


def pit_histogram(prediction: RegressionPrediction, y: Tensor, bins: int = 20) -> Figure:
    """Histogram of PIT values ``F(y_i)``: flat if calibrated, U-shaped if over-confident."""
    pit = _numpy(prediction.cdf(y).flatten())
    figure = _figure()
    axis = figure.add_subplot()
    axis.hist(pit, bins=bins, range=(0, 1), density=True, edgecolor="k", alpha=0.7)
    axis.axhline(1.0, color="k", linestyle="--", linewidth=1)
    axis.set(xlabel="PIT", ylabel="density", xlim=(0, 1), title="probability integral transform")
    return figure


def plot_predictive(
    prediction: RegressionPrediction,
    x: Tensor,
    *,
    level: float = 0.95,
    x_train: Tensor | None = None,
    y_train: Tensor | None = None,
    num_functions: int = 0,
) -> Figure:
    """1-D predictive: mean, central ``level`` band, epistemic band, data, sampled functions."""
    if x.dim() > 2 or (x.dim() == 2 and x.shape[1] != 1):
        raise ValueError(f"plot_predictive needs 1-D inputs [N] or [N, 1], got {tuple(x.shape)}.")
    order = torch.argsort(x.reshape(-1))
    grid = _numpy(x.reshape(-1)[order])
    mean = _numpy(prediction.mean.reshape(len(order), -1)[order, 0])
    lower, upper = (_numpy(t.reshape(len(order), -1)[order, 0]) for t in prediction.interval(level))
    epistemic = _numpy(prediction.epistemic.sqrt().reshape(len(order), -1)[order, 0])
    figure = _figure(6.0, 3.8)
    axis = figure.add_subplot()
    axis.fill_between(grid, lower, upper, alpha=0.25, label=f"{level:.0%} predictive")
    axis.fill_between(
        grid, mean - 2 * epistemic, mean + 2 * epistemic, alpha=0.35, label="±2 epistemic sd"
    )
    for s in range(min(num_functions, prediction.num_samples)):
        axis.plot(
            grid,
            _numpy(prediction.loc[s].reshape(len(order), -1)[order, 0]),
            linewidth=0.5,
            alpha=0.5,
        )
    axis.plot(grid, mean, linewidth=2, label="mean")
    if x_train is not None and y_train is not None:
        axis.scatter(
            _numpy(x_train.reshape(-1)), _numpy(y_train.reshape(-1)), s=8, c="k", label="data"
        )
    axis.set(xlabel="x", ylabel="y")
    axis.legend(loc="best", fontsize=8)
    return figure


def compare_predictive(
    predictions: Mapping[str, RegressionPrediction],
    x: Tensor,
    *,
    level: float = 0.95,
    x_train: Tensor | None = None,
    y_train: Tensor | None = None,
    truth: Tensor | None = None,
    ylim: tuple[float, float] | None = None,
) -> Figure:
    """1-D predictives side by side (one panel per name): mean, central ``level`` band, data.

    Args:
        predictions: name -> prediction at ``x`` (each ``[S, N, 1]`` samples).
        x: inputs ``[N]`` or ``[N, 1]``.
        level: the central predictive interval drawn.
        x_train: training inputs to scatter.
        y_train: training targets to scatter.
        truth: the true function at ``x`` (dashed), if known.
        ylim: the y range of every panel (``None``: matplotlib's choice).
    """
    if x.dim() > 2 or (x.dim() == 2 and x.shape[1] != 1):
        raise ValueError(
            f"compare_predictive needs 1-D inputs [N] or [N, 1], got {tuple(x.shape)}."
        )
    if not predictions:
        raise ValueError("predictions is empty: pass at least one name -> prediction.")
    grid = _numpy(x.reshape(-1))
    figure = _figure(5.0 * len(predictions), 3.5)
    axes = np.atleast_1d(figure.subplots(1, len(predictions), sharey=True))
    for axis, (name, prediction) in zip(axes, predictions.items(), strict=True):
        lower, upper = (_numpy(t.reshape(-1)) for t in prediction.interval(level))
        axis.fill_between(grid, lower, upper, alpha=0.3, label=f"{level:.0%} predictive")
        axis.plot(grid, _numpy(prediction.mean.reshape(-1)), label="mean")
        if truth is not None:
            axis.plot(grid, _numpy(truth.reshape(-1)), "k--", linewidth=0.8, label="truth")
        if x_train is not None and y_train is not None:
            axis.scatter(
                _numpy(x_train.reshape(-1)), _numpy(y_train.reshape(-1)), s=6, c="k", label="data"
            )
        axis.set(title=name, xlabel="x")
        if ylim is not None:
            axis.set_ylim(*ylim)
    axes[0].set_ylabel("y")
    axes[0].legend(loc="lower left", fontsize=8)
    return figure


def plot_posterior_predictive(
    prediction: RegressionPrediction,
    y: Tensor,
    *,
    num_replicates: int = 50,
    rng: RNGLike = None,
) -> Figure:
    """Posterior predictive check: histogram of ``y`` against replicated data sets.

    Replicates draw their observation noise from the ``"ppc"`` stream of ``rng``.
    """
    loc = prediction.loc[:num_replicates]
    scale = prediction.scale.expand_as(prediction.loc)[:num_replicates]
    with resolve_rng(rng).stream("ppc"):
        noise = torch.randn_like(loc)
    replicates = _numpy(loc + scale * noise)
    observed = _numpy(y.reshape(-1))
    edges = np.histogram_bin_edges(
        np.concatenate([observed, replicates.reshape(-1)]), bins=30
    ).tolist()
    figure = _figure()
    axis = figure.add_subplot()
    for replicate in replicates:
        axis.hist(
            replicate.reshape(-1), bins=edges, density=True, histtype="step", color="C0", alpha=0.2
        )
    axis.hist(
        observed,
        bins=edges,
        density=True,
        histtype="step",
        color="k",
        linewidth=2,
        label="observed",
    )
    axis.set(xlabel="y", ylabel="density", title="posterior predictive check (blue: replicates)")
    axis.legend(loc="best")
    return figure


def _scalar_draws(posterior: ParameterPosterior, name: str, index: int) -> np.ndarray:
    """``[chain, draw]`` values of element ``index`` of parameter ``name``."""
    if not isinstance(posterior, ParameterPosterior):
        raise TypeError(
            f"trace and rank plots need a posterior with weight draws (a ParameterPosterior "
            f"such as a SampleSet), got {type(posterior).__name__}."
        )
    parameters = posterior.draws().parameters
    if name not in parameters:
        raise ValueError(f"{name!r} is not in the draws; available: {sorted(parameters)}.")
    draws = parameters[name]
    values = draws.reshape(draws.shape[0], draws.shape[1], -1)
    if not 0 <= index < values.shape[-1]:
        raise ValueError(f"index {index} out of range for {name} with {values.shape[-1]} elements.")
    return _numpy(values[..., index])


def plot_trace(posterior: ParameterPosterior, name: str, index: int = 0) -> Figure:
    """Trace (per chain) and marginal histogram of element ``index`` of parameter ``name``."""
    draws = _scalar_draws(posterior, name, index)
    figure = _figure(8.0, 3.0)
    trace, marginal = figure.subplots(1, 2, width_ratios=[3, 1])
    for chain, values in enumerate(draws):
        trace.plot(values, linewidth=0.7, label=f"chain {chain}")
        marginal.hist(values, bins=30, orientation="horizontal", histtype="step")
    trace.set(xlabel="draw", ylabel=f"{name}[{index}]")
    trace.legend(loc="upper right", fontsize=7)
    marginal.set(xlabel="count")
    return figure


def plot_rank(posterior: ParameterPosterior, name: str, index: int = 0, bins: int = 20) -> Figure:
    """Rank plot (Vehtari et al. 2021): per-chain histograms of pooled ranks, flat if mixed."""
    draws = _scalar_draws(posterior, name, index)
    num_chains, num_draws = draws.shape
    ranks = draws.reshape(-1).argsort().argsort().reshape(draws.shape)
    figure = _figure(2.2 * num_chains, 2.6)
    axes = np.atleast_1d(figure.subplots(1, num_chains, sharey=True))  # type: ignore[call-overload]
    for chain, axis in enumerate(axes):
        axis.hist(ranks[chain], bins=bins, range=(0, ranks.size), edgecolor="k", alpha=0.7)
        axis.axhline(num_draws / bins, color="k", linestyle="--", linewidth=1)
        axis.set(title=f"chain {chain}", xlabel="rank")
    return figure


def plot_tuning_history(trials: list[dict[str, Any]], direction: str = "minimize") -> Figure:
    """Each trial's mean over its seeds with its 95% interval, and the best score so far.

    Args:
        trials: ``bnn.tune.TuneResult.trials`` rows (``number``, ``mean``, ``ci95_low``,
            ``ci95_high``, ``score``).
        direction: ``"minimize"`` or ``"maximize"`` (for the best-so-far line).
    """
    rows = sorted(trials, key=lambda row: row["number"])
    numbers = np.array([row["number"] for row in rows])
    means = np.array([row["mean"] for row in rows])
    low = np.array([row["ci95_low"] for row in rows])
    high = np.array([row["ci95_high"] for row in rows])
    scores = np.array([row["score"] for row in rows])
    best = (
        np.minimum.accumulate(scores) if direction == "minimize" else np.maximum.accumulate(scores)
    )
    figure = _figure(6.0, 3.6)
    axes = figure.add_subplot()
    spread = np.where(np.isfinite(low), np.stack([means - low, high - means]), 0.0)
    axes.errorbar(numbers, means, yerr=spread, fmt="o", capsize=3, label="mean ± 95% CI over seeds")
    axes.step(numbers, best, where="post", color="black", label="best score so far")
    axes.set_xlabel("trial")
    axes.set_ylabel("objective")
    axes.legend(loc="best", fontsize="small")
    return figure


def plot_tuning_importance(shares: dict[str, float]) -> Figure:
    """Horizontal bars: each parameter's share of the variance of the per-seed results, and the
    share that is seed noise (``bnn.tune.TuneResult.importance``).

    Args:
        shares: ``{"seed noise": s, parameter: share, ...}``, summing to 1.
    """
    names = list(shares)
    values = np.array([shares[name] for name in names])
    colours = ["tab:grey" if name == "seed noise" else "tab:blue" for name in names]
    figure = _figure(6.0, 0.5 + 0.45 * len(names))
    axes = figure.add_subplot()
    axes.barh(names, values, color=colours)
    axes.invert_yaxis()
    axes.set_xlim(0.0, 1.0)
    axes.set_xlabel("share of the variance over trials and seeds")
    for position, value in enumerate(values):
        axes.text(min(value + 0.01, 0.9), position, f"{value:.0%}", va="center")
    return figure
