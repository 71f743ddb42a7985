"""Regression tests for the silent wrong answers of the reliability issue (items 3, 4, 6, 7, 8).

Thread safety (item 2) is in ``tests/random/test_threads.py``, stuck samplers (item 1) in
``tests/evaluate/test_convergence.py``, resume (item 5) in ``tests/infer/test_resume.py``; the
adversarial suite over every entry point is ``tests/adversarial/``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

import bnn
import bnn.apps.datasets
from bnn.evaluate import metrics
from bnn.posterior import _evaluate
from tests.apps.uci.test_uci import _copy_yacht as copy_yacht


# ----------------------------------------------------------------------------- 3: one target rule
def _regression_prediction() -> bnn.likelihoods.RegressionPrediction:
    return bnn.Gaussian(0.5).predict(
        torch.randn(4, 6, 1, generator=torch.Generator().manual_seed(0))
    )


REGRESSION_SCORES = [
    metrics.rmse,
    metrics.crps,
    metrics.gaussian_nll,
    metrics.interval_coverage,
    metrics.nll,
    bnn.calibration,
]


@pytest.mark.parametrize("score", REGRESSION_SCORES, ids=lambda f: f.__name__)
@pytest.mark.parametrize("shape", [(6, 2), (6, 1, 1), (1, 6), (3, 2)])
def test_every_regression_score_refuses_targets_it_would_broadcast(score, shape) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValueError, match="broadcasting here would be silently wrong"):
        score(_regression_prediction(), torch.zeros(shape))


@pytest.mark.parametrize("score", REGRESSION_SCORES, ids=lambda f: f.__name__)
def test_every_regression_score_takes_n_or_n_by_1_targets_alike(score) -> None:  # type: ignore[no-untyped-def]
    y = torch.randn(6, 1, generator=torch.Generator().manual_seed(1))
    prediction = _regression_prediction()
    first, second = score(prediction, y), score(prediction, y.squeeze(-1))
    assert str(first) == str(second)


CLASSIFICATION_SCORES = [
    metrics.nll,
    metrics.accuracy,
    metrics.brier_score,
    metrics.expected_calibration_error,
    bnn.calibration,
]


@pytest.mark.parametrize("score", CLASSIFICATION_SCORES, ids=lambda f: f.__name__)
def test_one_hot_labels_are_refused_with_the_fix(score) -> None:  # type: ignore[no-untyped-def]
    prediction = bnn.Categorical().predict(torch.randn(3, 5, 4))
    one_hot = nn.functional.one_hot(torch.arange(5) % 4, 4)
    with pytest.raises(ValueError, match=r"looks one-hot; pass class indices .*argmax"):
        score(prediction, one_hot)


@pytest.mark.parametrize("score", CLASSIFICATION_SCORES, ids=lambda f: f.__name__)
@pytest.mark.parametrize(
    ("labels", "message"),
    [
        (torch.tensor([0, 1, 2, 3, 4]), r"must lie in \[0, 3\]"),
        (torch.tensor([0, 1, -1, 3, 0]), r"must lie in \[0, 3\]"),
        (torch.tensor([0.0, 1.5, 2.0, 3.0, 0.0]), "whole numbers"),
        (torch.tensor([0, 1, 2]), "targets have shape"),
    ],
)
def test_bad_class_labels_are_refused_by_every_score(score, labels, message) -> None:  # type: ignore[no-untyped-def]
    prediction = bnn.Categorical().predict(torch.randn(3, 5, 4))
    with pytest.raises(ValueError, match=message):
        score(prediction, labels)


# ----------------------------------------------------------------------------- 4: atomic saves
class Interrupted(Exception):
    pass


def _interrupting_save(_obj: object, handle: object) -> None:
    handle.write(b"partial bytes of a new file")  # type: ignore[attr-defined]
    raise Interrupted


def test_an_interrupted_sample_set_save_keeps_the_previous_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    net = nn.Linear(2, 1)
    good = bnn.SampleSet(
        net, {n: p.detach().expand(1, 3, *p.shape) for n, p in net.named_parameters()}
    )
    path = tmp_path / "samples.pt"
    good.save(path)
    before = path.read_bytes()
    monkeypatch.setattr(torch, "save", _interrupting_save)
    with pytest.raises(Interrupted):
        good.save(path)
    monkeypatch.undo()
    assert path.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["samples.pt"]
    assert bnn.SampleSet.load(path, net).num_samples == 3


def test_an_interrupted_ensemble_save_keeps_the_previous_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ensemble = bnn.infer.DeepEnsemble(lambda: nn.Linear(2, 1), 2, rng=0)
    path = tmp_path / "ensemble.pt"
    ensemble.save(path)
    before = path.read_bytes()
    monkeypatch.setattr(torch, "save", _interrupting_save)
    with pytest.raises(Interrupted):
        ensemble.save(path)
    monkeypatch.undo()
    assert path.read_bytes() == before and len(list(tmp_path.iterdir())) == 1


def test_saving_into_a_missing_folder_names_it(tmp_path: Path) -> None:
    net = nn.Linear(2, 1)
    samples = bnn.SampleSet(
        net, {n: p.detach().expand(1, 2, *p.shape) for n, p in net.named_parameters()}
    )
    with pytest.raises(FileNotFoundError, match="does not exist; create it first"):
        samples.save(tmp_path / "missing" / "samples.pt")


# ----------------------------------------------------------------------------- 6: target leakage
def test_a_feature_index_file_that_lists_the_target_column_is_refused(tmp_path: Path) -> None:
    folder = copy_yacht(tmp_path)
    (folder / "index_features.txt").write_text("\n".join(map(str, range(7))) + "\n")
    with pytest.raises(ValueError, match="lists the target column 6 as a feature"):
        bnn.apps.datasets.load_uci("yacht", 0, data_dir=tmp_path)


# ----------------------------------------------------------------------------- 7: p = 0 dropout
def test_mc_dropout_with_every_rate_zero_warns_that_uncertainty_is_zero() -> None:
    model = bnn.MCDropout(nn.Sequential(nn.Linear(2, 8), nn.Dropout(0.0), nn.Linear(8, 1)))
    with pytest.warns(UserWarning, match="epistemic uncertainty is exactly 0"):
        prediction = bnn.predict_with_uncertainty(model, torch.randn(5, 2), num_samples=4, rng=0)
    assert float(prediction.epistemic.max()) == 0.0  # the warning tells the truth


def test_mc_dropout_with_a_positive_rate_does_not_warn() -> None:
    model = bnn.MCDropout(nn.Sequential(nn.Linear(2, 8), nn.Dropout(0.1), nn.Linear(8, 1)))
    bnn.predict_with_uncertainty(model, torch.randn(5, 2), num_samples=4, rng=0)  # no warning


# ----------------------------------------------------------------------------- 8: output size
def test_a_sample_request_larger_than_free_memory_is_refused_with_the_number(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_evaluate, "available_memory_bytes", lambda device: 2**18)  # 256 KiB free
    model = bnn.MCDropout(nn.Sequential(nn.Linear(2, 8), nn.Dropout(0.1), nn.Linear(8, 1)))
    x = torch.randn(100, 2)
    with pytest.raises(MemoryError, match=r"would need 0\.4 MiB as one \[1000, 100, 1\] tensor"):
        bnn.predict_with_uncertainty(model, x, num_samples=1000, rng=0)
    assert bnn.predict_with_uncertainty(model, x, num_samples=100, rng=0).samples.shape[0] == 100


def test_the_real_free_memory_refuses_ten_million_samples_before_allocating() -> None:
    model = bnn.MCDropout(nn.Sequential(nn.Linear(2, 64), nn.Dropout(0.1), nn.Linear(64, 1024)))
    with pytest.raises(MemoryError, match="ask for fewer samples"):
        bnn.predict_with_uncertainty(model, torch.randn(100, 2), num_samples=10**7, rng=0)
