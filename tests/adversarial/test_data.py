"""Bad data at every training and prediction entry point: a clear error before any work.

Each case names the entry point and the fault; the expected error type and message fragment
are the contract (what is wrong and what to do), or the correct result for legal edge cases.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch import Tensor, nn

import bnn
from tests.adversarial._tiny import NOISE, NUTS, TRAINERS, bayesian_mlp, data, dropout_mlp, mlp

X, Y = data()

BAD_DATA: dict[str, tuple[Callable[[], Any], type[Exception], str]] = {
    "nan-x": (
        lambda: (torch.where(torch.arange(8)[:, None] == 3, torch.nan, X), Y),
        ValueError,
        "x contains NaN or inf",
    ),
    "inf-y": (
        lambda: (X, torch.where(torch.arange(8)[:, None] == 3, torch.inf, Y)),
        ValueError,
        "y contains NaN or inf",
    ),
    "wrong-features": (
        lambda: (torch.randn(8, 5), Y),
        ValueError,
        r"cannot take x of shape \(8, 5\).*number of features",
    ),
    "float64-x": (lambda: (X.double(), Y), TypeError, r"x has dtype torch.float64.*x.to\("),
    "empty": (lambda: (X[:0], Y[:0]), ValueError, "empty"),
    "row-mismatch": (lambda: (X, Y[:5]), ValueError, "8 rows"),
    "target-shape": (lambda: (X, torch.randn(8, 3)), ValueError, r"targets have shape \(\d+, 3\)"),
    "numpy": (lambda: (X.numpy(), Y.numpy()), TypeError, "(?i)tensors"),
}


@pytest.mark.parametrize("fault", sorted(BAD_DATA))
@pytest.mark.parametrize("method", ["fit", "nuts", "nuts-pyro", "sgld"])
def test_bad_training_data_is_refused_before_training(method: str, fault: str) -> None:
    make, error, fragment = BAD_DATA[fault]
    model = bayesian_mlp() if method == "fit" else mlp()
    with pytest.raises(error, match=fragment):
        TRAINERS[method](model, make())


@pytest.mark.parametrize("method", ["hmc", "sghmc", "svi"])
def test_other_trainers_check_features_too(method: str) -> None:
    with pytest.raises(ValueError, match="number of features"):
        TRAINERS[method](mlp(), (torch.randn(8, 5), Y))


@pytest.mark.parametrize("method", ["fit", "nuts", "sgld", "svi"])
def test_meta_tensor_data_is_refused(method: str) -> None:
    with pytest.raises(ValueError, match="meta"):
        TRAINERS[method](bayesian_mlp() if method == "fit" else mlp(), (X.to("meta"), Y))


@pytest.mark.parametrize("method", ["fit", "nuts", "nuts-pyro", "hmc", "sgld", "svi"])
def test_one_data_point_trains(method: str) -> None:
    posterior, _ = TRAINERS[method](bayesian_mlp() if method == "fit" else mlp(), (X[:1], Y[:1]))
    prediction = bnn.predict_with_uncertainty(posterior, X, num_samples=2, likelihood=NOISE, rng=0)
    assert prediction.mean.shape == (8, 1) and bool(torch.isfinite(prediction.std).all())


@pytest.mark.parametrize("method", ["nuts", "sgld"])
def test_float64_targets_of_a_float32_model_are_used_in_its_precision(method: str) -> None:
    samples, _ = TRAINERS[method](mlp(), (X, Y.double()))
    reference, _ = TRAINERS[method](mlp(), (X, Y))
    for name, value in samples.samples.items():
        assert torch.equal(value, reference.samples[name])


def test_validation_data_with_wrong_features_fails_before_the_first_epoch() -> None:
    validation = bnn.infer.Validation(torch.randn(4, 5), torch.randn(4, 1))
    with pytest.raises(ValueError, match=r"cannot take x of shape \(4, 5\)"):
        bnn.fit(bayesian_mlp(), (X, Y), likelihood=NOISE, validation=validation, progress=False)


def test_fit_refuses_a_model_without_parameters() -> None:
    with pytest.raises(ValueError, match="no parameters"):
        bnn.fit(nn.Identity(), (X, Y), likelihood=NOISE, progress=False)


@pytest.mark.parametrize(
    "options, fragment",
    [
        ({"epochs": 0}, "epochs must be a positive int"),
        ({"batch_size": -1}, "batch_size must be a positive int"),
        ({"lr": float("nan")}, "lr must be a positive number"),
        ({"num_samples": 2.5}, "num_samples must be a positive int"),
        ({"kl": 1.0}, "kl must be a bnn.infer.KLSchedule"),
    ],
)
def test_fit_refuses_absurd_hyperparameters(options: dict[str, Any], fragment: str) -> None:
    with pytest.raises((ValueError, TypeError), match=fragment):
        bnn.fit(bayesian_mlp(), (X, Y), likelihood=NOISE, progress=False, **options)


# ------------------------------------------------------------------------------- prediction
def _posteriors() -> dict[str, Callable[[], object]]:
    def samples() -> object:
        return bnn.infer.nuts(mlp(), (X, Y), likelihood=NOISE, rng=0, **NUTS)[0]

    return {
        "bayesian": bayesian_mlp,
        "mc-dropout": dropout_mlp,
        "sample-set": samples,
        "ensemble": lambda: bnn.infer.DeepEnsemble(mlp, 2, rng=0),
        "neural-linear": lambda: bnn.infer.neural_linear(nn.Identity(), (X, Y), likelihood=NOISE)[
            0
        ],
    }


POSTERIORS = _posteriors()

BAD_INPUTS: dict[str, tuple[Tensor | object, type[Exception], str]] = {
    "nan": (torch.full((2, 2), torch.nan), ValueError, "NaN or inf"),
    "wrong-features": (torch.randn(2, 5), ValueError, "5"),
    "float64": (torch.randn(2, 2, dtype=torch.float64), TypeError, "float64"),
    "meta": (torch.randn(2, 2, device="meta"), ValueError, "meta"),
    "empty": (torch.randn(0, 2), ValueError, "non-empty batch"),
    "scalar": (torch.tensor(1.0), ValueError, "non-empty batch"),
    "numpy": (X.numpy(), TypeError, "torch.Tensor"),
}


@pytest.mark.parametrize("fault", sorted(BAD_INPUTS))
@pytest.mark.parametrize("kind", sorted(POSTERIORS))
def test_bad_prediction_inputs_are_explained(kind: str, fault: str) -> None:
    x, error, fragment = BAD_INPUTS[fault]
    posterior = POSTERIORS[kind]()
    with pytest.raises(error, match=fragment):
        bnn.predict_with_uncertainty(posterior, x, num_samples=2, likelihood=NOISE, rng=0)


@pytest.mark.parametrize("num_samples", [0, -1, True, 2.5, "10"])
def test_bad_sample_counts_are_refused(num_samples: object) -> None:
    with pytest.raises(ValueError, match="num_samples must be a positive int"):
        bnn.predict_with_uncertainty(bayesian_mlp(), X, num_samples=num_samples)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "options, fragment",
    [
        ({"memory_budget": 0}, "memory_budget must be positive bytes"),
        ({"batch_size": 0}, "batch_size must be a positive int"),
        ({"likelihood": "gaussian"}, "likelihood must be a bnn Likelihood"),
    ],
)
def test_bad_prediction_options_are_refused(options: dict[str, Any], fragment: str) -> None:
    with pytest.raises((ValueError, TypeError), match=fragment):
        bnn.predict_with_uncertainty(bayesian_mlp(), X, num_samples=2, **options)


def test_a_one_byte_memory_budget_evaluates_one_sample_at_a_time_reproducibly() -> None:
    model = bayesian_mlp()
    first = bnn.predict_with_uncertainty(model, X, num_samples=4, memory_budget=1, rng=3)
    again = bnn.predict_with_uncertainty(model, X, num_samples=4, memory_budget=1, rng=3)
    assert first.samples.shape == (4, 8, 1) and torch.equal(first.samples, again.samples)
    assert bool((first.samples[0] != first.samples[1]).any())  # samples differ: weights drawn


def test_prediction_of_one_input_matches_its_row_in_a_batch() -> None:
    posterior = POSTERIORS["sample-set"]()
    one = bnn.predict_with_uncertainty(posterior, X[:1], num_samples=3, likelihood=NOISE)
    batch = bnn.predict_with_uncertainty(posterior, X, num_samples=3, likelihood=NOISE)
    torch.testing.assert_close(one.mean, batch.mean[:1])


def test_more_samples_than_stored_draws_returns_every_draw_once() -> None:
    posterior = POSTERIORS["sample-set"]()
    prediction = bnn.predict_with_uncertainty(posterior, X, num_samples=10**9, likelihood=NOISE)
    assert prediction.samples.shape[0] == NUTS["draws"]


def test_a_plain_network_is_not_a_posterior() -> None:
    with pytest.raises(TypeError, match="Bayesian layers|MCDropout"):
        bnn.predict_with_uncertainty(mlp(), X, num_samples=2)


def test_a_dataset_with_wrong_features_is_refused_before_training() -> None:
    from torch.utils.data import TensorDataset

    dataset = TensorDataset(torch.randn(8, 5), torch.randn(8, 1))
    with pytest.raises(ValueError, match=r"cannot take x of shape \(2, 5\)"):
        bnn.fit(nn.Linear(4, 1), dataset, likelihood=bnn.Gaussian(0.1), epochs=1, progress=False)


def test_a_data_loader_with_wrong_features_is_explained_at_the_first_batch() -> None:
    from torch.utils.data import DataLoader, TensorDataset

    loader = DataLoader(TensorDataset(torch.randn(8, 5), torch.randn(8, 1)), batch_size=4)
    with pytest.raises(
        ValueError, match=r"training failed on the first batch \(x of shape \(4, 5\)"
    ):
        bnn.fit(nn.Linear(4, 1), loader, likelihood=bnn.Gaussian(0.1), epochs=1, progress=False)


def test_a_one_dimensional_x_read_as_one_input_is_refused() -> None:
    model = bnn.bayesianize(nn.Linear(2, 1), rng=0)
    with pytest.raises(ValueError, match=r"read x as one input with 2 features.*unsqueeze"):
        bnn.predict_with_uncertainty(model, torch.randn(2), num_samples=2, rng=0)
    elementwise = bnn.MCDropout(nn.Sequential(nn.Dropout(0.5)))  # one output per entry: fine
    assert bnn.predict_with_uncertainty(
        elementwise, torch.ones(3), num_samples=2, rng=0
    ).samples.shape == (2, 3)
