"""Built-in objectives: every method trains and scores reproducibly, the tuned settings reach
training, and bad input is refused before any training."""

from __future__ import annotations

import math
import pickle

import pytest
import torch

import bnn

pytest.importorskip("optuna")
from bnn.tune import Categorical, tune  # noqa: E402
from bnn.tune.objectives import METHODS, MethodObjective  # noqa: E402

WEIGHTS = torch.tensor([1.0, -2.0, 0.5])


def _regression(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=generator)
    return x, x @ WEIGHTS + 0.3 * torch.randn(n, generator=generator)


TRAIN, VALIDATION = _regression(120, 0), _regression(60, 1)


@pytest.mark.parametrize("method", METHODS)
def test_same_seed_same_score_and_another_seed_another(method: str) -> None:
    objective = MethodObjective(method, TRAIN, VALIDATION, epochs=4, num_samples=10)
    params = {"lr": 3e-3}
    first = objective(params, bnn.RNG(1))
    assert math.isfinite(first)
    assert objective(params, bnn.RNG(1)) == first
    assert objective(params, bnn.RNG(2)) != first
    assert pickle.loads(pickle.dumps(objective))(params, bnn.RNG(1)) == first  # executors


@pytest.mark.parametrize("method", ["map", "mc_dropout", "ensemble", "laplace", "vi"])
@pytest.mark.parametrize("score", ["nll", "error", "calibration"])
def test_classification_scores_lie_in_their_ranges(method: str, score: str) -> None:
    labels = (TRAIN[1] > 0).long(), (VALIDATION[1] > 0).long()
    objective = MethodObjective(
        method, (TRAIN[0], labels[0]), (VALIDATION[0], labels[1]), score=score, epochs=3,
        num_samples=5,
    )  # fmt: skip
    value = objective({}, bnn.RNG(0))
    assert 0 <= value <= (1 if score != "nll" else 10)


def test_weight_decay_reaches_training() -> None:
    """A huge decay shrinks the network to the mean: its RMSE is the targets' spread."""
    objective = MethodObjective("map", TRAIN, VALIDATION, score="rmse", epochs=40, lr=1e-2)
    free = objective({"weight_decay": 1e-6}, bnn.RNG(0))
    shrunk = objective({"weight_decay": 10.0}, bnn.RNG(0))
    spread = float(VALIDATION[1].std())
    assert free < 0.6  # the noise std is 0.3
    assert shrunk == pytest.approx(spread, rel=0.15)
    result = tune(
        objective,
        {"weight_decay": Categorical((1e-6, 10.0))},
        seeds=2,
        n_trials=4,
        rng=0,
        progress=False,
    )
    assert result.best_params == {"weight_decay": 1e-6}


def test_dropout_rate_reaches_the_network() -> None:
    objective = MethodObjective("mc_dropout", TRAIN, VALIDATION, epochs=2)
    model = objective._model(3, 1, objective._settings({"dropout": 0.37}), bnn.RNG(0))
    rates = [m.p for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    assert rates == [0.37]


def test_marginal_likelihood_needs_no_validation_data_and_ranks_the_prior() -> None:
    """−log p(D)/N: a decay that shrinks the network to a constant gives the Gaussian entropy
    of the targets, 0.5 log(2πe var y); a free fit comes close to the noise's entropy
    0.5 log(2πe 0.3²) = 0.215 plus an Occam penalty."""
    objective = MethodObjective("laplace", TRAIN, None, score="marglik", epochs=20, lr=1e-2)
    free = objective({}, bnn.RNG(0))
    shrunk = objective({"weight_decay": 10.0}, bnn.RNG(0))
    entropy = 0.5 * math.log(2 * math.pi * math.e * float(TRAIN[1].var()))
    assert shrunk == pytest.approx(entropy, abs=0.05)
    noise_entropy = 0.5 * math.log(2 * math.pi * math.e * 0.3**2)
    assert noise_entropy - 0.1 < free < shrunk - 1.0
    assert objective({}, bnn.RNG(0)) == free


def test_default_spaces_name_only_accepted_parameters() -> None:
    for method in METHODS:
        objective = MethodObjective(method, TRAIN, VALIDATION)
        assert set(objective.space()) <= set(objective.accepted)
        assert "lr" in objective.space()


@pytest.mark.parametrize(
    "arguments, error, fragment",
    [
        ({"method": "svm"}, ValueError, "method must be one of"),
        ({"score": "auc"}, ValueError, "score must be one of"),
        ({"score": "marglik"}, ValueError, "method='laplace'"),
        ({"validation": None}, ValueError, "pass validation="),
        ({"score": "error"}, ValueError, "is for classification"),
        ({"train": (TRAIN[0], TRAIN[1][:10])}, ValueError, "120 inputs but 10 targets"),
        ({"train": (TRAIN[0][:, :2], TRAIN[1])}, ValueError, "validation inputs have shape"),
        ({"train": (torch.full((4, 3), math.nan), torch.zeros(4))}, ValueError, "NaN or inf"),
        ({"train": (torch.zeros(0, 3), torch.zeros(0))}, ValueError, "non-empty"),
        ({"train": [TRAIN[0], TRAIN[1]]}, TypeError, "must be a pair"),
        ({"epochs": 0}, ValueError, "epochs"),
        ({"lr": -1.0}, ValueError, "lr"),
    ],
    ids=["method", "score", "marglik-not-laplace", "no-validation", "error-on-regression",
         "rows", "columns", "nan", "empty", "not-a-tuple", "epochs", "lr"],
)  # fmt: skip
def test_bad_arguments_are_refused_up_front(
    arguments: dict[str, object], error: type[Exception], fragment: str
) -> None:
    options: dict[str, object] = {"method": "map", "train": TRAIN, "validation": VALIDATION}
    options.update(arguments)
    with pytest.raises(error, match=fragment):
        MethodObjective(**options)  # type: ignore[arg-type]


def test_unknown_and_invalid_parameters_are_named() -> None:
    objective = MethodObjective("map", TRAIN, VALIDATION, epochs=1)
    with pytest.raises(ValueError, match=r"does not tune \['dropout'\]"):
        objective({"dropout": 0.1}, bnn.RNG(0))
    with pytest.raises(ValueError, match="weight_decay must be a finite number >= 0"):
        objective({"weight_decay": -1.0}, bnn.RNG(0))
    with pytest.raises(ValueError, match="score='rmse' is for regression"):
        MethodObjective("map", (TRAIN[0], TRAIN[1].long()), VALIDATION, score="rmse")
