"""Test-time augmentation: a seeded posterior, chunked to a memory budget."""

from __future__ import annotations

import torch
from torch import nn

import bnn


def test_test_time_augmentation_is_a_seeded_posterior() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 1))
    tta = bnn.posterior.TestTimeAugmentation(net, lambda x: x + 0.1 * torch.randn_like(x))
    x = torch.randn(5, 2)
    first = bnn.predict_with_uncertainty(tta, x, num_samples=30, rng=0)
    assert first.samples.shape == (30, 5, 1)
    assert float(first.std.min()) > 0
    assert torch.equal(
        first.samples, bnn.predict_with_uncertainty(tta, x, num_samples=30, rng=0).samples
    )


def test_augmentations_chunked_to_a_tiny_budget_have_the_same_distribution() -> None:
    """One augmented copy per chunk: the same law as one vmap over all copies.

    The model is linear, so each output is ``w·(x + 0.1 ε) + b``: mean ``w·x + b`` and sd
    ``0.1 |w|`` exactly; both runs are checked against these within 5 standard errors.
    """
    torch.manual_seed(0)
    net = nn.Linear(2, 1)
    tta = bnn.posterior.TestTimeAugmentation(net, lambda x: x + 0.1 * torch.randn_like(x))
    x = torch.randn(3, 2)
    count = 4000
    with torch.no_grad():
        whole = tta.sample_functions(x, count, rng=0)
        chunked = tta.sample_functions(x, count, rng=0, memory_budget=1)
        mean, sd = net(x), 0.1 * net.weight.norm()
    assert chunked.shape == whole.shape == (count, 3, 1)
    for draws in (whole, chunked):
        assert ((draws.mean(0) - mean).abs() < 5 * sd / count**0.5).all()
        assert ((draws.std(0) / sd - 1).abs() < 5 * (1 / (2 * count)) ** 0.5).all()
    assert torch.equal(chunked, tta.sample_functions(x, count, rng=0, memory_budget=1))
