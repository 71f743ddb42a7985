"""`fit` on ``(x, y)`` tensors takes a faster path (batches gathered by index, the ``"fit"``
stream entered once per epoch); it must train to the bits of the general path, which a
``TensorDataset`` of the same tensors takes (rows read one by one, the stream entered at
every step)."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import Dataset, TensorDataset

import bnn
from bnn.infer.training._fit_options import Validation


def _data() -> tuple[torch.Tensor, torch.Tensor, Validation]:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(90, 3, generator=generator)
    y = x[:, :1].sin() + 0.2 * torch.randn(90, 1, generator=generator)
    return x[:70], y[:70], Validation(x[70:], y[70:])


def _weights(module: nn.Module) -> torch.Tensor:
    return torch.cat([t.detach().flatten() for t in module.state_dict().values()])


def _dropout_network(rng: bnn.RNG, bayesian: bool) -> nn.Module:
    with rng.stream("init"):
        network = nn.Sequential(nn.Linear(3, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 1))
    return bnn.bayesianize(network, rng=rng) if bayesian else bnn.MCDropout(network)


@pytest.mark.parametrize("bayesian", [False, True], ids=["mc dropout", "mean-field vi"])
def test_tensors_and_a_tensor_dataset_train_to_the_same_bits(bayesian: bool) -> None:
    """Dropout masks and weight noise (drawn in the stream), shuffling, validation, a learned
    noise: every bit equal, whichever path the data take."""
    x, y, validation = _data()

    def train(data: object) -> tuple[torch.Tensor, list[float]]:
        rng = bnn.RNG(7)
        model = _dropout_network(rng, bayesian)
        likelihood = bnn.Gaussian(0.5, learn_std=True)
        _, history = bnn.fit(
            model,
            data,  # type: ignore[arg-type]
            likelihood=likelihood,
            epochs=4,
            batch_size=16,
            num_samples=2,
            validation=validation,
            rng=rng,
            progress=False,
        )
        return torch.cat([_weights(model), _weights(likelihood)]), history.loss

    fast, fast_losses = train((x, y))
    general, general_losses = train(TensorDataset(x, y))
    assert torch.equal(fast, general)
    assert fast_losses == general_losses


def test_an_ensemble_member_on_tensors_equals_one_trained_on_a_tensor_dataset() -> None:
    """Members on tensors take the fast path: member ``i`` equals a network trained alone on
    a ``TensorDataset`` of the same tensors from ``rng.spawn(i)``."""
    x, y, validation = _data()
    options = {"epochs": 3, "batch_size": 16, "validation": validation, "progress": False}
    ensemble, _ = bnn.infer.deep_ensemble(
        lambda: nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 2)),
        (x, y),
        likelihood=bnn.HeteroscedasticGaussian(beta=0.5),
        num_members=2,
        rng=3,
        **options,
    )
    member_rng = bnn.RNG(3).spawn(1)
    with member_rng.stream("init"):
        alone = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 2))
    bnn.fit(
        alone,
        TensorDataset(x, y),
        likelihood=bnn.HeteroscedasticGaussian(beta=0.5),
        rng=member_rng,
        **options,  # type: ignore[arg-type]
    )
    assert torch.equal(_weights(ensemble.members[1]), _weights(alone))


class _Augmenting(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """Jitters each input with the process's global torch generator (as user code does)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[index] + 0.01 * torch.randn(self.x.shape[1:]), self.y[index]


def test_a_dataset_that_draws_does_not_draw_from_the_fit_stream() -> None:
    """A ``Dataset`` is read outside the stream: its draws come from the caller's global
    generator (seeded here), and the dropout masks stay the stream's."""
    x, y, _ = _data()

    def train(global_seed: int) -> torch.Tensor:
        torch.manual_seed(global_seed)
        rng = bnn.RNG(7)
        model = _dropout_network(rng, bayesian=False)
        bnn.fit(
            model,
            _Augmenting(x, y),
            likelihood=bnn.Gaussian(0.5),
            epochs=2,
            batch_size=16,
            rng=rng,
            progress=False,
        )
        return _weights(model)

    assert torch.equal(train(0), train(0))
    assert not torch.equal(train(0), train(1))  # the augmentation follows the global seed


def test_fit_on_tensors_leaves_the_global_generators_as_they_were() -> None:
    x, y, validation = _data()
    torch.manual_seed(11), np.random.seed(11), random.seed(11)
    expected = (torch.rand(3), np.random.rand(3), random.random())
    torch.manual_seed(11), np.random.seed(11), random.seed(11)
    rng = bnn.RNG(2)
    bnn.fit(
        _dropout_network(rng, bayesian=False),
        (x, y),
        likelihood=bnn.Gaussian(0.5),
        epochs=2,
        batch_size=16,
        validation=validation,
        rng=rng,
        progress=False,
    )
    assert torch.equal(torch.rand(3), expected[0])
    assert np.array_equal(np.random.rand(3), expected[1])
    assert random.random() == expected[2]
