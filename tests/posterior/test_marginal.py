"""`MarginalPredictive` (``joint=False``): exact per-input marginals, independent across
inputs, seeded, chunked, and refused where local reparameterisation does not apply."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import bnn
from bnn.nn.layers import BayesianModule
from bnn.posterior import MarginalPredictive, ModelPosterior

K = 4.5  # standard errors allowed in the Monte Carlo comparisons below


def _linear_layer() -> BayesianModule:
    layer = BayesianModule(nn.Linear(3, 2), init_std=0.3)
    with torch.no_grad():
        for parameter in layer.bayesian_parameters().values():
            parameter.loc.copy_(torch.linspace(-1, 1, parameter.loc.numel()).view_as(parameter.loc))
    return layer


def test_one_linear_layer_has_the_closed_form_marginals() -> None:
    """y = W x + b with independent N(μ, σ²) weights: mean μ_W x + μ_b, var σ_W² x² + σ_b²."""
    layer = _linear_layer()
    x = torch.tensor([[1.0, -2.0, 0.5], [0.0, 0.3, 3.0]])
    samples = MarginalPredictive(layer).sample_functions(x, 40_000, rng=0)  # [S, 2, 2]
    weight, bias = layer.bayesian_parameters()["weight"], layer.bayesian_parameters()["bias"]
    with torch.no_grad():
        mean = x @ weight.loc.T + bias.loc
        variance = (x**2) @ (weight.scale**2).T + bias.scale**2
    count = samples.shape[0]
    assert torch.all((samples.mean(0) - mean).abs() < K * (variance / count).sqrt())
    # the sample variance of a Gaussian has standard error σ² √(2/(S−1))
    error = variance * math.sqrt(2 / (count - 1))
    assert torch.all((samples.var(0) - variance).abs() < K * error)


def test_a_deep_network_has_the_marginals_of_its_function_samples() -> None:
    torch.manual_seed(0)
    network = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 1))
    model = bnn.bayesianize(network, init="random", init_std=0.2, rng=0)
    x = torch.randn(5, 2)
    count = 20_000
    marginal = MarginalPredictive(model).sample_functions(x, count, rng=1)
    joint = ModelPosterior(model).sample_functions(x, count, rng=2)
    spread = (marginal.var(0) / count + joint.var(0) / count).sqrt()
    assert torch.all((marginal.mean(0) - joint.mean(0)).abs() < K * spread)
    ratio = marginal.var(0) / joint.var(0)  # log of a variance ratio: s.e. ≈ √(4/S) (Gaussian)
    assert torch.all(ratio.log().abs() < K * math.sqrt(4 / count) * 1.5)


def test_samples_are_independent_across_inputs() -> None:
    """Two copies of one input: the same function value in every joint sample, uncorrelated
    values in the marginal predictive."""
    model = _linear_layer()
    x = torch.tensor([[1.0, 2.0, 3.0], [1.0, 2.0, 3.0]])
    joint = ModelPosterior(model).sample_functions(x, 4_000, rng=0)
    assert torch.equal(joint[:, 0], joint[:, 1])
    marginal = MarginalPredictive(model).sample_functions(x, 4_000, rng=0)[..., 0]
    correlation = torch.corrcoef(marginal.T)[0, 1]
    assert abs(float(correlation)) < K / math.sqrt(4_000)


def test_mc_dropout_marginals_match_the_default_and_seeds_are_reproducible() -> None:
    torch.manual_seed(1)
    model = bnn.MCDropout(
        nn.Sequential(nn.Linear(3, 32), nn.ReLU(), nn.Dropout(0.3), nn.Linear(32, 1))
    )
    x = torch.randn(6, 3)
    first = bnn.predict_with_uncertainty(model, x, num_samples=4_000, rng=5, joint=False)
    again = bnn.predict_with_uncertainty(model, x, num_samples=4_000, rng=5, joint=False)
    other = bnn.predict_with_uncertainty(model, x, num_samples=4_000, rng=6, joint=False)
    assert torch.equal(first.samples, again.samples)
    assert not torch.equal(first.samples, other.samples)
    default = bnn.predict_with_uncertainty(model, x, num_samples=4_000, rng=7)
    spread = (first.samples.var(0) / 4_000 + default.samples.var(0) / 4_000).sqrt()
    assert torch.all((first.mean - default.mean).abs() < K * spread)


def test_a_small_memory_budget_chunks_and_keeps_the_marginals() -> None:
    model = _linear_layer()
    x = torch.randn(50, 3)
    whole = MarginalPredictive(model).sample_functions(x, 2_000, rng=0)
    chunked = MarginalPredictive(model).sample_functions(x, 2_000, rng=0, memory_budget=4096)
    assert chunked.shape == whole.shape == (2_000, 50, 2)
    spread = (whole.var(0) / 2_000 * 2).sqrt()
    assert torch.all((whole.mean(0) - chunked.mean(0)).abs() < K * spread)


def test_the_model_is_left_as_it_was() -> None:
    model = bnn.bayesianize(nn.Sequential(nn.Linear(2, 4), nn.ReLU(), nn.Linear(4, 1)), rng=0)
    model.train()
    MarginalPredictive(model).sample_functions(torch.randn(3, 2), 5, rng=0)
    layers = [m for m in model.modules() if isinstance(m, BayesianModule)]
    assert all(layer.estimator == "reparam" and not layer.use_mean for layer in layers)
    assert all(m.training for m in model.modules())


def test_models_without_local_reparameterisation_are_refused() -> None:
    with pytest.raises(TypeError, match="no Bayesian layers and is not MCDropout"):
        MarginalPredictive(nn.Linear(2, 1))
    norm = nn.Sequential(nn.Linear(2, 4), BayesianModule(nn.LayerNorm(4)))
    with pytest.raises(ValueError, match=r"Bayesian layer 1 wraps a LayerNorm"):
        MarginalPredictive(norm)
    ensemble_like = bnn.SampleSet(nn.Linear(2, 1), {"weight": torch.zeros(1, 3, 1, 2)})
    with pytest.raises(ValueError, match="joint=False draws per-input samples"):
        bnn.predict_with_uncertainty(ensemble_like, torch.zeros(2, 2), joint=False)
    with pytest.raises(TypeError, match="joint must be True or False"):
        bnn.predict_with_uncertainty(_linear_layer(), torch.zeros(2, 3), joint=1)  # type: ignore[arg-type]


def test_bayesian_layers_with_dropout_draw_masks_per_row() -> None:
    torch.manual_seed(2)
    network = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Dropout(0.4), nn.Linear(16, 1))
    model = bnn.MCDropout(bnn.bayesianize(network, init="random", init_std=0.1, rng=0))
    x = torch.randn(4, 2)
    count = 20_000
    marginal = MarginalPredictive(model).sample_functions(x, count, rng=1)
    joint = ModelPosterior(model).sample_functions(x, count, rng=2)
    spread = (marginal.var(0) / count + joint.var(0) / count).sqrt()
    assert torch.all((marginal.mean(0) - joint.mean(0)).abs() < K * spread)
    ratio = marginal.var(0) / joint.var(0)
    assert torch.all(ratio.log().abs() < K * math.sqrt(4 / count) * 2)
