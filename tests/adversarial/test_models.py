"""Odd models: no parameters, tuple/dict outputs, 0-d parameters, BatchNorm, nested wrappers,
and converting a network twice."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

import bnn
from tests.adversarial._tiny import NOISE, NUTS, SG, TRAINERS, data, dropout_mlp, mlp

X, Y = data()


class TupleOutput(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(2, 1)
        self.dropout = nn.Dropout(0.2)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return self.dropout(self.linear(x)), x


class DictOutput(TupleOutput):
    def forward(self, x: Tensor) -> dict[str, Tensor]:  # type: ignore[override]
        return {"mean": self.dropout(self.linear(x))}


class ScalarOffset(nn.Module):
    """A legitimate 0-d parameter: ``y = w·x + b + offset``."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(2, 1)
        self.offset = nn.Parameter(torch.tensor(0.5))

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(x) + self.offset


@pytest.mark.parametrize("output", [TupleOutput, DictOutput])
@pytest.mark.parametrize("method", ["fit", "nuts", "nuts-pyro", "sgld", "svi"])
def test_a_forward_returning_a_tuple_or_dict_is_refused_before_training(
    method: str, output: type[nn.Module]
) -> None:
    with pytest.raises(TypeError, match=r"returns a (tuple|dict), not a tensor.*forward\(x\)"):
        TRAINERS[method](output(), (X, Y))


@pytest.mark.parametrize("wrap", ["bayesianize", "mc-dropout"])
@pytest.mark.parametrize("output", [TupleOutput, DictOutput])
def test_prediction_refuses_a_forward_returning_a_tuple_or_dict(
    output: type[nn.Module], wrap: str
) -> None:
    model = bnn.bayesianize(output()) if wrap == "bayesianize" else bnn.MCDropout(output())
    with pytest.raises(TypeError, match="not a tensor"):
        bnn.predict_with_uncertainty(model, X, num_samples=2)


@pytest.mark.parametrize("backend", ["bnn", "pyro"])
def test_nuts_samples_a_zero_dimensional_parameter(backend: str) -> None:
    samples, history = bnn.infer.nuts(
        ScalarOffset(), (X, Y), likelihood=NOISE, backend=backend, rng=0, **NUTS
    )
    assert samples.samples["offset"].shape == (1, NUTS["draws"])
    assert samples.samples["linear.weight"].shape == (1, NUTS["draws"], 1, 2)
    assert bool(torch.isfinite(samples.samples["offset"]).all())
    prediction = bnn.predict_with_uncertainty(samples, X, num_samples=3, likelihood=NOISE)
    assert prediction.mean.shape == (8, 1)


def test_sgld_and_samples_round_trip_a_zero_dimensional_parameter(tmp_path: Path) -> None:
    samples, _ = bnn.infer.sgld(ScalarOffset(), (X, Y), likelihood=NOISE, rng=0, **SG)
    assert samples.samples["offset"].shape == (1, 2)
    samples.save(tmp_path / "s.pt")
    loaded = bnn.SampleSet.load(tmp_path / "s.pt", ScalarOffset())
    assert torch.equal(loaded.samples["offset"], samples.samples["offset"])


@pytest.mark.parametrize("method", ["nuts", "sgld", "svi"])
def test_samplers_refuse_a_model_without_weights(method: str) -> None:
    with pytest.raises(ValueError, match="no weights to sample"):
        TRAINERS[method](nn.Identity(), (X, Y))


def test_batchnorm_network_trains_and_predicts_a_single_input() -> None:
    with bnn.RNG(0).stream("init"):
        net = nn.Sequential(nn.Linear(2, 4), nn.BatchNorm1d(4), nn.ReLU(), nn.Linear(4, 1))
    model = bnn.bayesianize(net)
    assert not isinstance(model[1], bnn.nn.BayesianModule)  # normalisation stays deterministic
    bnn.fit(model, (X, Y), likelihood=NOISE, epochs=2, batch_size=4, progress=False, rng=0)
    prediction = bnn.predict_with_uncertainty(model, X[:1], num_samples=3, rng=0)
    assert prediction.mean.shape == (1, 1) and bool(torch.isfinite(prediction.mean).all())
    assert not model.training


def test_mc_dropout_around_a_bayesian_network_predicts() -> None:
    with bnn.RNG(0).stream("init"):
        net = nn.Sequential(nn.Linear(2, 4), nn.ReLU(), nn.Dropout(0.3), nn.Linear(4, 1))
    model = bnn.MCDropout(bnn.bayesianize(net, init="random", rng=0))
    bnn.fit(model, (X, Y), likelihood=NOISE, epochs=1, batch_size=4, progress=False, rng=0)
    prediction = bnn.predict_with_uncertainty(model, X, num_samples=4, rng=0)
    assert prediction.samples.shape == (4, 8, 1)
    assert bool((prediction.epistemic > 0).all())


def test_a_bayesian_network_nested_in_a_plain_container_predicts() -> None:
    inner = bnn.bayesianize(mlp(), init="random", rng=0)
    outer = nn.Sequential(nn.Identity(), inner)
    prediction = bnn.predict_with_uncertainty(outer, X, num_samples=3, rng=0)
    assert prediction.samples.shape == (3, 8, 1) and bool((prediction.epistemic > 0).all())


@pytest.mark.parametrize(
    "make",
    [
        lambda: bnn.bayesianize(mlp()),
        lambda: bnn.bayesianize(nn.Linear(2, 1)),
        lambda: bnn.BayesLinear(2, 1),
    ],
    ids=["network", "single-layer", "bayes-linear"],
)
def test_bayesianize_twice_says_the_model_is_already_bayesian(make: object) -> None:
    model = make()  # type: ignore[operator]
    before = {name: p.clone() for name, p in model.named_parameters()}
    with pytest.raises(ValueError, match="already Bayesian.*Call bayesianize once"):
        bnn.bayesianize(model)
    after = dict(model.named_parameters())
    assert before.keys() == after.keys()  # nothing was wrapped a second time


def test_bayesianize_only_a_converted_layer_names_it() -> None:
    model = bnn.bayesianize(mlp(), only="0")
    with pytest.raises(ValueError, match=r"\['0'\] are already Bayesian"):
        bnn.bayesianize(model, only="0")
    bnn.bayesianize(model, only="2")  # the plain layer that is left still converts
    assert isinstance(model[2], bnn.nn.BayesianModule)


def test_bayesianize_a_model_without_parameters() -> None:
    with pytest.raises(ValueError, match="no parameterised layers"):
        bnn.bayesianize(nn.ReLU())


def test_mc_dropout_needs_a_dropout_layer() -> None:
    with pytest.raises(ValueError, match="no dropout layer.*add_dropout"):
        bnn.MCDropout(mlp())


def test_mc_dropout_refuses_alpha_dropout() -> None:
    with pytest.raises(TypeError, match="AlphaDropout.*Replace it with nn.Dropout"):
        bnn.MCDropout(nn.Sequential(nn.Linear(2, 2), nn.AlphaDropout(0.1)))


def test_predict_with_a_model_on_the_meta_device_names_the_devices() -> None:
    model = dropout_mlp().to("meta")
    with pytest.raises(ValueError, match="x is on cpu but the model is on meta"):
        bnn.predict_with_uncertainty(model, X, num_samples=2)
