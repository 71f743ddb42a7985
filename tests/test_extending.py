"""docs/extending.md runs: its worked example is a complete inference method on the contract."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

import bnn

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "extending.md"


@pytest.fixture(scope="module")
def namespace(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Every ```python block of the page, executed in order in one namespace.

    Each block is padded with blank lines so that tracebacks point at the page's own lines.
    """
    text = PAGE.read_text()
    blocks = []
    for part in text.split("```python\n")[1:]:
        code = part.split("```")[0]
        start = text.count("\n", 0, text.index("```python\n" + code)) + 1
        blocks.append("\n" * start + code)
    assert len(blocks) >= 4, "extending.md lost its worked example"
    scope: dict[str, Any] = {"__name__": "extending"}
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(tmp_path_factory.mktemp("extending"))
        for block in blocks:
            exec(compile(block, str(PAGE), "exec"), scope)
    return scope


def test_the_method_returns_a_posterior_and_a_history(namespace: dict[str, Any]) -> None:
    posterior, history = namespace["posterior"], namespace["history"]
    assert isinstance(posterior, bnn.Posterior)
    assert isinstance(posterior, bnn.posterior.ParameterPosterior)
    assert isinstance(history, bnn.infer.History)
    assert history.method == "map_estimate"
    assert len(history.loss) == 150
    assert history.loss[-1] < 0.5 * history.loss[0]
    assert history.seconds > 0


def test_prediction_calibration_and_arviz_come_for_free(namespace: dict[str, Any]) -> None:
    prediction, y_test = namespace["prediction"], namespace["y_test"]
    assert isinstance(prediction, bnn.likelihoods.RegressionPrediction)
    assert prediction.num_samples == 1
    assert prediction.mean.shape == y_test.shape == (200, 1)
    assert bnn.evaluate.metrics.rmse(prediction, y_test) < 0.2  # noise std 0.1
    report = namespace["report"]
    assert isinstance(report, bnn.evaluate.CalibrationReport)
    assert report.kind == "regression"
    assert 0.8 < report.coverage[0.95] <= 1.0
    data = namespace["data"]
    posterior_group = data["posterior"]
    assert "f" in posterior_group and "0.weight" in posterior_group
    for group in ("posterior_predictive", "log_likelihood", "observed_data"):
        assert group in data


def test_same_seed_same_weights_and_the_learned_noise_is_carried(
    namespace: dict[str, Any],
) -> None:
    for a, b in zip(
        namespace["posterior"].model.parameters(),
        namespace["again"].model.parameters(),
        strict=True,
    ):
        assert torch.equal(a, b)
    noisy = namespace["noisy_posterior"]
    assert isinstance(noisy, bnn.posterior.CarriesLikelihood)
    assert noisy.predictive_likelihood is namespace["noise"]
    assert namespace["posterior"].predictive_likelihood is None
    learned_std = float(namespace["noise"].std.detach())
    assert 0.05 < learned_std < 0.2
    aleatoric = namespace["noisy_prediction"].aleatoric.sqrt()
    assert torch.allclose(aleatoric, torch.full_like(aleatoric, learned_std))


def test_the_method_validates_at_the_boundary(namespace: dict[str, Any]) -> None:
    map_estimate, make_net = namespace["map_estimate"], namespace["make_net"]
    x, y = namespace["x"], namespace["y"]
    likelihood = bnn.Gaussian(0.1)
    with pytest.raises(ValueError, match="rows"):
        map_estimate(make_net(), (x, y[:-1]), likelihood=likelihood, progress=False)
    with pytest.raises(ValueError, match="NaN"):
        bad = y.clone()
        bad[0] = float("nan")
        map_estimate(make_net(), (x, bad), likelihood=likelihood, progress=False)
    with pytest.raises(ValueError, match="epochs"):
        map_estimate(make_net(), (x, y), likelihood=likelihood, epochs=0, progress=False)
    with pytest.raises(ValueError, match="Bayesian layers"):
        net = bnn.bayesianize(make_net())
        map_estimate(net, (x, y), likelihood=likelihood, progress=False)
    with pytest.raises(TypeError, match="likelihood"):
        map_estimate(make_net(), (x, y), likelihood="gaussian", progress=False)


def test_the_page_is_in_the_site_nav() -> None:
    assert "extending.md" in (ROOT / "mkdocs.yml").read_text()
