"""predict_with_uncertainty: vectorised = loop, uncertainty where it belongs, bad input."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import bnn
from bnn.likelihoods import ClassificationPrediction
from tests.oracles import bootstrap_se, clearly_larger, std_mcse


def _bayesian_mlp(seed: int = 0) -> nn.Module:
    with bnn.RNG(seed).stream("init"):
        net = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 1))
    return bnn.bayesianize(net, delta=0.3)


def test_memory_budget_applies_to_sample_sets_without_changing_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    net = nn.Linear(2, 1)
    draws = {n: p.detach() + torch.randn(1, 6, *p.shape) for n, p in net.named_parameters()}
    samples = bnn.SampleSet(net, draws)
    calls: list[int] = []
    original = bnn.posterior._evaluate.evaluate_parameter_samples

    def spy(model: nn.Module, parameters: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        calls.append(next(iter(parameters.values())).shape[0])
        return original(model, parameters, x)

    monkeypatch.setattr(bnn.posterior._evaluate, "evaluate_parameter_samples", spy)
    x = torch.randn(3, 2)
    chunked = bnn.predict_with_uncertainty(samples, x, num_samples=6, memory_budget=1).samples
    assert calls == [1] * 18  # 6 samples x 3 inputs, one at a time
    calls.clear()
    whole = bnn.predict_with_uncertainty(samples, x, num_samples=6).samples
    assert calls == [6]
    torch.testing.assert_close(chunked, whole)
    with pytest.raises(ValueError, match="memory_budget"):
        bnn.predict_with_uncertainty(samples, x, memory_budget=0)


def test_prediction_is_reproducible_with_a_seed() -> None:
    net = _bayesian_mlp()
    x = torch.randn(4, 2)
    first = bnn.predict_with_uncertainty(net, x, num_samples=10, rng=5).samples
    assert torch.equal(first, bnn.predict_with_uncertainty(net, x, num_samples=10, rng=5).samples)
    assert not torch.equal(
        first, bnn.predict_with_uncertainty(net, x, num_samples=10, rng=6).samples
    )


def test_predict_leaves_training_mode_and_global_rng_alone() -> None:
    net = _bayesian_mlp().train()
    x = torch.randn(3, 2)
    state = torch.get_rng_state()
    bnn.predict_with_uncertainty(net, x, num_samples=5, rng=0)
    assert net.training and all(m.training for m in net.modules())
    assert torch.equal(state, torch.get_rng_state())


def test_batch_size_splits_inputs() -> None:
    net = _bayesian_mlp()
    prediction = bnn.predict_with_uncertainty(
        net, torch.randn(10, 2), num_samples=8, batch_size=3, rng=0
    )
    assert prediction.samples.shape == (8, 10, 1)


def test_bayesian_layers_and_mc_dropout_together() -> None:
    net = nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Dropout(0.2), nn.Linear(8, 1))
    bnn.bayesianize(net, only="3")
    prediction = bnn.predict_with_uncertainty(
        bnn.MCDropout(net).eval(), torch.randn(6, 2), num_samples=20, rng=0
    )
    assert prediction.samples.shape == (20, 6, 1)


def _toy_regression() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(200, 1, generator=generator) * 2 - 1
    return x, torch.sin(3 * x) + 0.1 * torch.randn(200, 1, generator=generator)


@pytest.mark.parametrize("method", ["vi", "mc_dropout"])
def test_predictive_std_grows_away_from_the_data(method: str) -> None:
    x, y = _toy_regression()
    with bnn.RNG(0).stream("init"):
        net = nn.Sequential(
            nn.Linear(1, 50),
            nn.ReLU(),
            nn.Dropout(0.1),
            nn.Linear(50, 50),
            nn.ReLU(),
            nn.Linear(50, 1),
        )
    model: nn.Module
    if method == "vi":
        model = bnn.bayesianize(net, init="random", rng=0, init_std=1e-3)
    else:
        model = bnn.MCDropout(net)
    bnn.fit(
        model,
        (x, y),
        likelihood=bnn.Gaussian(0.1),
        epochs=150,
        batch_size=50,
        lr=1e-2,
        rng=0,
        progress=False,
    )
    inside = torch.linspace(-0.8, 0.8, 50).unsqueeze(-1)
    outside = torch.cat([torch.linspace(-4, -3, 25), torch.linspace(3, 4, 25)]).unsqueeze(-1)
    # Far from the data the functions must disagree more than anywhere inside it: the smallest
    # std outside exceeds the largest inside by 5 Monte Carlo standard errors of the two std
    # estimates (200 independent function samples; a model without epistemic uncertainty has
    # equal stds and fails).
    far = bnn.predict_with_uncertainty(model, outside, num_samples=200, rng=1).samples.squeeze(-1)
    near = bnn.predict_with_uncertainty(model, inside, num_samples=200, rng=1).samples.squeeze(-1)
    far_std, near_std = far.std(0, unbiased=False), near.std(0, unbiased=False)
    low, high = int(far_std.argmin()), int(near_std.argmax())
    assert clearly_larger(far_std[low], std_mcse(far)[low], near_std[high], std_mcse(near)[high]), (
        float(far_std[low]),
        float(near_std[high]),
    )


def test_mutual_information_is_higher_out_of_distribution() -> None:
    generator = torch.Generator().manual_seed(0)
    centres = torch.tensor([[-2.0, 0.0], [2.0, 0.0]])
    labels = torch.randint(0, 2, (400,), generator=generator)
    x = centres[labels] + 0.5 * torch.randn(400, 2, generator=generator)
    with bnn.RNG(0).stream("init"):
        net = nn.Sequential(nn.Linear(2, 32), nn.ReLU(), nn.Linear(32, 2))
    bnn.bayesianize(net, init="random", rng=0)
    bnn.fit(
        net,
        (x, labels),
        likelihood=bnn.Categorical(),
        epochs=100,
        batch_size=100,
        lr=1e-2,
        rng=0,
        progress=False,
    )
    in_distribution = centres[labels[:50]] + 0.5 * torch.randn(50, 2, generator=generator)
    far = torch.tensor([[0.0, 8.0], [0.0, -8.0], [0.0, 10.0], [0.0, -10.0]])
    near = bnn.predict_with_uncertainty(net, in_distribution, likelihood=bnn.Categorical(), rng=1)
    away = bnn.predict_with_uncertainty(net, far, likelihood=bnn.Categorical(), rng=1)

    def mean_mi(class_probs: torch.Tensor) -> torch.Tensor:
        return ClassificationPrediction(class_probs, class_probs).mutual_information.mean()

    # Epistemic uncertainty must be higher off the data by 5 standard errors (bootstrap over
    # the 100 independent function samples); MI is ~0 without weight uncertainty.
    assert clearly_larger(
        mean_mi(away.class_probs),
        bootstrap_se(away.class_probs, mean_mi),
        mean_mi(near.class_probs),
        bootstrap_se(near.class_probs, mean_mi),
    )


@pytest.mark.parametrize(
    "x, kwargs, error, match",
    [
        (torch.randn(4, 3), {}, ValueError, "failed on x of shape"),
        (torch.full((4, 2), float("nan")), {}, ValueError, "NaN"),
        (torch.randn(0, 2), {}, ValueError, "non-empty"),
        (torch.randn(4, 2), {"num_samples": 0}, ValueError, "num_samples"),
        (torch.randn(4, 2, dtype=torch.float64), {}, TypeError, "dtype"),
        (torch.randn(4, 2, device="meta"), {}, ValueError, "is on meta"),
        (torch.randn(4, 2), {"batch_size": 0}, ValueError, "batch_size"),
        ([[1.0, 2.0]], {}, TypeError, "torch.Tensor"),
    ],
)
def test_bad_input_raises_clear_errors(x, kwargs, error, match) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(error, match=match):
        bnn.predict_with_uncertainty(_bayesian_mlp(), x, **kwargs)


def test_plain_model_has_no_posterior() -> None:
    with pytest.raises(TypeError, match="bayesianize"):
        bnn.predict_with_uncertainty(nn.Linear(2, 1), torch.randn(3, 2))
