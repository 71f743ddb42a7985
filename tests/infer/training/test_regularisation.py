"""Regularisation as priors (MAP = weight decay), seeded augmentation, test-time augmentation."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import bnn


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(32, 3, generator=generator, dtype=torch.float64)
    return x, x @ torch.tensor([[1.0], [-1.0], [0.5]], dtype=torch.float64) + 0.1 * torch.randn(
        32, 1, generator=generator, dtype=torch.float64
    )


def test_gaussian_prior_map_equals_sgd_weight_decay() -> None:
    """-log N(w; 0, s²)/N per datum has gradient w/(s² N): SGD weight_decay = 1/(s² N)."""
    x, y = _data()
    s, n = 0.5, x.shape[0]

    def train(**kwargs) -> torch.Tensor:  # type: ignore[no-untyped-def]
        torch.manual_seed(0)
        net = nn.Linear(3, 1).double()
        optimizer = torch.optim.SGD(
            net.parameters(), lr=0.1, weight_decay=kwargs.pop("weight_decay", 0.0)
        )
        bnn.fit(
            net,
            (x, y),
            likelihood=bnn.Gaussian(1.0),
            epochs=20,
            batch_size=n,
            optimizer=optimizer,
            rng=0,
            progress=False,
            **kwargs,
        )
        return torch.cat([p.detach().flatten() for p in net.parameters()])

    map_fit = train(prior=bnn.nn.Normal(0.0, s))
    decayed = train(weight_decay=1 / (s**2 * n))
    plain = train()
    torch.testing.assert_close(map_fit, decayed, rtol=1e-10, atol=1e-12)
    assert not torch.allclose(map_fit, plain)


def test_laplace_prior_shrinks_the_l1_norm() -> None:
    x, y = _data()

    def l1_after_fit(prior: bnn.nn.Prior | None) -> float:
        torch.manual_seed(0)
        net = nn.Linear(3, 1).double()
        bnn.fit(
            net,
            (x, y),
            likelihood=bnn.Gaussian(0.1),
            prior=prior,
            epochs=200,
            batch_size=32,
            lr=1e-2,
            rng=0,
            progress=False,
        )
        return float(net.weight.detach().abs().sum())

    plain, lasso = l1_after_fit(None), l1_after_fit(bnn.nn.Laplace(0.0, 1e-3))
    # The L1 penalty |w|/(bN) = 31|w| per datum dominates the data term here.
    assert lasso < 0.8 * plain


def test_augmentation_is_independent_of_worker_count_and_changes_per_epoch() -> None:
    base = TensorDataset(torch.zeros(8, 2), torch.arange(8))

    def jitter(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return x + torch.randn(x.shape, generator=generator)

    def epoch_inputs(workers: int, epoch: int) -> torch.Tensor:
        dataset = bnn.random.AugmentedDataset(base, jitter, rng=3)
        dataset.set_epoch(epoch)
        loader = DataLoader(dataset, batch_size=4, num_workers=workers)
        return torch.cat([batch[0] for batch in loader])

    assert torch.equal(epoch_inputs(0, 0), epoch_inputs(2, 0))
    assert not torch.equal(epoch_inputs(0, 0), epoch_inputs(0, 1))


def test_fit_advances_the_augmentation_epoch() -> None:
    seen: list[int] = []

    def record(x: torch.Tensor, _generator: torch.Generator) -> torch.Tensor:
        return x

    dataset = bnn.random.AugmentedDataset(
        TensorDataset(torch.randn(8, 1), torch.randn(8, 1)), record, rng=0
    )
    original = dataset.set_epoch
    dataset.set_epoch = lambda e: (seen.append(e), original(e))  # type: ignore[method-assign]
    bnn.fit(nn.Linear(1, 1), dataset, likelihood=bnn.Gaussian(1.0), epochs=3, rng=0, progress=False)
    assert seen == [0, 1, 2]


def test_prior_must_be_a_prior() -> None:
    with pytest.raises(TypeError, match="Prior"):
        bnn.fit(
            nn.Linear(1, 1),
            (torch.randn(4, 1), torch.randn(4, 1)),
            likelihood=bnn.Gaussian(1.0),
            prior=0.1,
            progress=False,
        )  # type: ignore[arg-type]
