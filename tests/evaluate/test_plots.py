"""Every plot renders from predictions or posterior draws; a missing extra is named."""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib
import pytest
import torch
from torch import nn

import bnn
from bnn.evaluate.shift import ShiftCurve
from bnn.likelihoods import ClassificationPrediction
from tests.evaluate.test_diagnostics import _regression_data, _sample_set

matplotlib.use("Agg")


def test_every_plot_renders_to_png(tmp_path: Path) -> None:
    samples, _ = _sample_set()
    x, y = _regression_data()
    prediction = bnn.predict_with_uncertainty(
        samples, x, num_samples=120, likelihood=bnn.Gaussian(0.5)
    )
    generator = torch.Generator().manual_seed(0)
    probs = torch.softmax(torch.randn(10, 50, 3, generator=generator), -1)
    labels = torch.randint(0, 3, (50,), generator=generator)
    figures = {
        "predictive": bnn.evaluate.plots.plot_predictive(
            prediction, x, x_train=x, y_train=y, num_functions=5
        ),
        "coverage": bnn.evaluate.plots.coverage_curve(prediction, y),
        "pit": bnn.evaluate.plots.pit_histogram(prediction, y),
        "ppc": bnn.evaluate.plots.plot_posterior_predictive(prediction, y),
        "trace": bnn.evaluate.plots.plot_trace(samples, "weight"),
        "rank": bnn.evaluate.plots.plot_rank(samples, "bias"),
        "reliability": bnn.evaluate.plots.reliability_diagram(
            ClassificationPrediction(samples=probs.log(), class_probs=probs), labels
        ),
        "ood": bnn.evaluate.plots.ood_histogram(
            ClassificationPrediction(samples=probs.log(), class_probs=probs),
            {
                "flat": ClassificationPrediction(
                    samples=probs.log(), class_probs=probs**0.2 / (probs**0.2).sum(-1, keepdim=True)
                )
            },
        ),
        "shift": bnn.evaluate.plots.shift_plot(
            {
                "a": ShiftCurve(
                    [0.0, 15.0], [0.9, 0.8], [0.3, 0.5], [0.02, 0.05], [0.1, 0.2], [0.2, 0.4]
                )
            }
        ),
    }
    for name, figure in figures.items():
        path = tmp_path / f"{name}.png"
        figure.savefig(path)
        assert path.stat().st_size > 5_000, name
    grid = torch.linspace(-2, 2, 40).unsqueeze(-1)
    on_grid = bnn.predict_with_uncertainty(samples, grid, likelihood=bnn.Gaussian(0.5), rng=0)
    panels = bnn.evaluate.plots.compare_predictive(
        {"a": on_grid, "b": on_grid}, grid, x_train=x, y_train=y, truth=torch.sin(3 * grid)
    )
    panels.savefig(tmp_path / "panels.png")
    assert (tmp_path / "panels.png").stat().st_size > 5_000
    assert len(panels.axes) == 2


def test_a_shift_plot_gives_each_curve_its_colour_and_a_variant_its_original_s_dashed() -> None:
    curve = ShiftCurve([0.0, 15.0], [0.9, 0.8], [0.3, 0.5], [0.02, 0.05], [0.1, 0.2], [0.2, 0.4])
    originals = [f"m{m}" for m in range(12)]  # more than the 10 colours of the default cycle
    variants = {f"{name}+T": name for name in originals[1::2]}
    names = [*originals, *variants]
    figure = bnn.evaluate.plots.shift_plot(dict.fromkeys(names, curve), variants=variants)
    for axis in figure.axes:
        lines = {line.get_label(): line for line in axis.get_lines()}
        colour = {name: tuple(matplotlib.colors.to_rgba(lines[name].get_color())) for name in names}
        assert len({colour[name] for name in originals}) == 12
        assert all(colour[v] == colour[o] for v, o in variants.items())
        assert {n for n, line in lines.items() if line.get_linestyle() == "--"} == set(variants)
    with pytest.raises(ValueError, match=r"originals \['m99'\]"):
        bnn.evaluate.plots.shift_plot({"a": curve}, variants={"a+T": "m99"})


def test_a_plot_without_matplotlib_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    samples, _ = _sample_set()
    figure_class = bnn.evaluate._figures._notebook_figure_class  # built once, on first use
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # import fails as if missing
    figure_class.cache_clear()
    try:
        with pytest.raises(ImportError, match=r"bnn-torch\[plots\]"):
            bnn.evaluate.plots.plot_trace(samples, "weight")
    finally:
        figure_class.cache_clear()


def test_trace_plots_need_weight_draws() -> None:
    point = bnn.posterior.PointEstimate(nn.Linear(1, 1))
    with pytest.raises(TypeError, match="ParameterPosterior"):
        bnn.evaluate.plots.plot_trace(point, "weight")


def test_figures_have_a_png_representation_for_notebooks() -> None:
    samples, _ = _sample_set()
    png = bnn.evaluate.plots.plot_trace(samples, "weight")._repr_png_()
    assert png.startswith(b"\x89PNG") and len(png) > 5_000
