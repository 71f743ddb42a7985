"""ModelPosterior: vectorised function samples equal a loop; chunking to a memory budget."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

import bnn


def _bayesian_mlp(seed: int = 0) -> nn.Module:
    with bnn.RNG(seed).stream("init"):
        net = nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 1))
    return bnn.bayesianize(net, delta=0.3)


def test_vectorised_bayesian_prediction_equals_loop_over_the_same_weights() -> None:
    net = _bayesian_mlp()
    x = torch.randn(7, 2)
    posterior = bnn.posterior.ModelPosterior(net)
    vectorised = posterior.sample_functions(x, 50, rng=3)
    with bnn.RNG(3).stream("predict"):
        noise = posterior.sample_noise(x, 50)
    reference = torch.stack(
        [
            functional_call(net, {k: v[s] for k, v in noise["weights"].items()}, (x,))
            for s in range(50)
        ]
    )
    assert vectorised.shape == (50, 7, 1)
    torch.testing.assert_close(vectorised, reference, rtol=1e-5, atol=1e-6)
    assert vectorised.std(0).min() > 0


def test_vectorised_mc_dropout_equals_manual_loop_over_the_same_masks() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 1))
    model = bnn.MCDropout(net).eval()
    x = torch.randn(5, 2)
    vectorised = bnn.posterior.ModelPosterior(model).sample_functions(x, 40, rng=1)
    with bnn.RNG(1).stream("predict"):
        (mask,) = model.sample_masks(x, 40)
    hidden = F.relu(F.linear(x, net[0].weight, net[0].bias))
    reference = torch.stack(
        [F.linear(hidden * mask[s], net[3].weight, net[3].bias) for s in range(40)]
    )
    torch.testing.assert_close(vectorised, reference, rtol=1e-5, atol=1e-6)
    # Keep rate 0.7 over 40 x 5 x 16 = 3,200 independent units: within 5 binomial standard
    # errors sqrt(0.7 * 0.3 / 3200) = 0.0081 (a scale or rate bug moves it by > 0.1).
    kept = (mask > 0).float()
    assert kept.numel() == 3200
    assert abs(float(kept.mean()) - 0.7) < 5 * (0.7 * 0.3 / kept.numel()) ** 0.5
    torch.testing.assert_close(mask[mask > 0], torch.full_like(mask[mask > 0], 1 / 0.7))


def test_chunking_to_a_tiny_memory_budget_gives_the_same_distribution() -> None:
    net = _bayesian_mlp()
    x = torch.zeros(1, 2)
    posterior = bnn.posterior.ModelPosterior(net)
    plan = posterior.plan(x, 100, memory_budget=1)
    assert plan == bnn.posterior._evaluate.ChunkPlan(samples=1, inputs=1)
    with torch.no_grad():
        chunked = posterior.sample_functions(x, 2000, rng=0, memory_budget=1).flatten()
        whole = bnn.posterior.ModelPosterior(net).sample_functions(x, 2000, rng=1).flatten()
    se = (chunked.var() / 2000 + whole.var() / 2000).sqrt()
    assert abs(float(chunked.mean() - whole.mean())) < 5 * float(se)


def _budget_for(
    posterior: bnn.posterior.ModelPosterior, x: torch.Tensor, samples: int, inputs: int
) -> int:
    """A budget under which ``samples`` samples fit on ``inputs`` inputs, not on all of ``x``."""
    per_input = (
        posterior._activation_bytes(x[:1])
        + sum(  # noqa: SLF001
            torch.Size(s).numel() * x.element_size()
            for s in posterior._mask_shapes(x[:1])  # noqa: SLF001
        )
    )
    return samples * (posterior._weight_bytes() + inputs * per_input)  # noqa: SLF001


def test_split_inputs_share_each_sample_s_weights_across_blocks() -> None:
    net = _bayesian_mlp()
    x = torch.randn(7, 2)
    posterior = bnn.posterior.ModelPosterior(net)
    budget = _budget_for(posterior, x, samples=4, inputs=2)
    assert posterior.plan(x, 4, budget) == bnn.posterior._evaluate.ChunkPlan(samples=4, inputs=2)
    chunked = posterior.sample_functions(x, 4, rng=5, memory_budget=budget)
    with bnn.RNG(5).stream("predict"):
        noise = posterior.sample_noise(x, 4)  # the same weight draws, all inputs at once
    torch.testing.assert_close(chunked, posterior.evaluate(noise, x), rtol=1e-5, atol=1e-6)


def test_evaluate_leaves_the_noise_unchanged_and_gradients_still_flow() -> None:
    # Without a gradient recorded, sample_functions lets the dropout layers write their outputs
    # into its fresh masks; a caller's noise passed to evaluate must stay as it was.
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 1))
    posterior = bnn.posterior.ModelPosterior(bnn.MCDropout(net).eval())
    x = torch.randn(5, 2)
    with bnn.RNG(3).stream("predict"):
        noise = posterior.sample_noise(x, 6)
    masks = [mask.clone() for mask in noise["masks"]]
    with torch.no_grad():
        first = posterior.evaluate(noise, x)
        assert all(torch.equal(a, b) for a, b in zip(masks, noise["masks"], strict=True))
        assert torch.equal(first, posterior.evaluate(noise, x))
        assert torch.equal(first, posterior.sample_functions(x, 6, rng=3))
    x_grad = x.clone().requires_grad_()
    with_grad = posterior.sample_functions(x_grad, 6, rng=3)
    assert torch.equal(with_grad.detach(), first)
    (gradient,) = torch.autograd.grad(with_grad.sum(), x_grad)
    assert bool(gradient.abs().sum() > 0)


def test_split_inputs_draw_dropout_masks_per_block_as_a_loop_would() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 1))
    model = bnn.MCDropout(net).eval()
    x = torch.randn(5, 2)
    posterior = bnn.posterior.ModelPosterior(model)
    budget = _budget_for(posterior, x, samples=3, inputs=2)
    assert posterior.plan(x, 3, budget) == bnn.posterior._evaluate.ChunkPlan(samples=3, inputs=2)
    chunked = posterior.sample_functions(x, 3, rng=2, memory_budget=budget)
    with bnn.RNG(2).stream("predict"):
        masks = [model.sample_masks(block, 3)[0] for block in x.split(2)]
    hidden = F.relu(F.linear(x, net[0].weight, net[0].bias)) * torch.cat(masks, dim=1)
    torch.testing.assert_close(chunked, F.linear(hidden, net[3].weight, net[3].bias))


class _Total(nn.Module):
    """A Bayesian layer whose output sums over the batch: no per-input dimension."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = bnn.BayesLinear(2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x).sum(0)


def test_outputs_without_an_input_dimension_are_kept_whole_or_refused() -> None:
    model, x = _Total(), torch.randn(4, 2)
    whole = bnn.posterior.ModelPosterior(model).sample_functions(x, 4, rng=0)
    assert whole.shape == (4, 3)  # [S, ...] as the model returns it
    with bnn.RNG(0).stream("predict"):
        noise = bnn.posterior.ModelPosterior(model).sample_noise(x, 4)
    torch.testing.assert_close(whole, bnn.posterior.ModelPosterior(model).evaluate(noise, x))
    with pytest.raises(ValueError, match="memory_budget"):
        bnn.posterior.ModelPosterior(model).sample_functions(x, 4, rng=0, memory_budget=1)
