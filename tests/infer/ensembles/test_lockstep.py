"""`deep_ensemble(..., lockstep=True)`: every member trained at once in one vmapped step.

The same mathematics as training the members one after another — each member's batches,
bootstrap resample, Adam state, learned noise, validation and early stopping — so the two
agree to float32 rounding (batched matrix products round differently), and lock-step training
is reproducible bit for bit on its own.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

import bnn
from bnn.infer.training._fit_options import Validation


def _data() -> tuple[torch.Tensor, torch.Tensor, Validation]:
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(150, 4, generator=generator)
    y = x[:, :1].sin() + 0.2 * torch.randn(150, 1, generator=generator)
    return x[:120], y[:120], Validation(x[120:], y[120:], patience=3)


def _network(outputs: int = 2) -> nn.Module:
    return nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, outputs))


def _train(lockstep: bool, likelihood: bnn.Likelihood, outputs: int, **options: Any) -> Any:
    x, y, validation = _data()
    return bnn.infer.deep_ensemble(
        lambda: _network(outputs),
        (x, y),
        likelihood=likelihood,
        num_members=3,
        epochs=30,
        batch_size=16,
        lr=1e-2,
        validation=validation,
        rng=4,
        progress=False,
        lockstep=lockstep,
        **options,
    )


def _weights(module: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in module.parameters()])


@pytest.mark.parametrize(
    "likelihood, outputs, bagging",
    [
        (bnn.HeteroscedasticGaussian(beta=0.5), 2, False),
        (bnn.Gaussian(0.5, learn_std=True), 1, True),
    ],
    ids=["beta-nll", "learned noise, bagging"],
)
def test_lockstep_training_is_sequential_training_up_to_rounding(
    likelihood: bnn.Likelihood, outputs: int, bagging: bool
) -> None:
    """Same best epochs and early stops per member; weights and learned noises equal to
    float32 rounding accumulated over the run (a wrong batch order, resample or Adam state
    moves them by ~1e-1).

    Not a Monte Carlo tolerance: both runs are deterministic and differ only by rounding,
    measured at 3.6e-7 in the weights after these 30 epochs; 1e-4 leaves room for other CPU
    kernels and stays three orders below the ~1e-1 of any semantic change (a lock-step run
    that ignores bagging fails it)."""
    sequential, sequential_history = _train(False, likelihood, outputs, bagging=bagging)
    together, together_history = _train(True, likelihood, outputs, bagging=bagging)
    for one, other in zip(sequential_history.chains, together_history.chains, strict=True):
        assert one.extras["best_epoch"] == other.extras["best_epoch"]
        assert one.extras["stopped_early"] == other.extras["stopped_early"]
        assert len(one.loss) == len(other.loss)
        assert one.val_nll == pytest.approx(other.val_nll, abs=1e-4)
    assert torch.allclose(_weights(sequential), _weights(together), atol=1e-4)
    if likelihood.learn_std if isinstance(likelihood, bnn.Gaussian) else False:
        stds = [torch.stack([lik.std for lik in e.likelihoods]) for e in (sequential, together)]
        assert torch.allclose(*stds, atol=1e-5)
        assert len(set(stds[1].tolist())) == 3  # each member learned its own noise


def test_lockstep_training_is_reproducible_and_seed_dependent() -> None:
    x, y, validation = _data()

    def train(seed: int) -> torch.Tensor:
        ensemble, _ = bnn.infer.deep_ensemble(
            lambda: nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 1)),
            (x, y),
            likelihood=bnn.Gaussian(0.3),
            num_members=2,
            epochs=3,
            batch_size=16,
            rng=seed,
            progress=False,
            lockstep=True,
        )
        return _weights(ensemble)

    before = torch.get_rng_state()
    assert torch.equal(train(0), train(0))  # dropout masks from the "fit" stream included
    assert not torch.equal(train(0), train(1))
    assert torch.equal(torch.get_rng_state(), before)  # the caller's generator untouched


def test_a_stopped_member_does_not_move_while_the_others_train() -> None:
    """Adam's momentum would move a member whose gradient is zero; a stopped member is held."""
    from torch.func import stack_module_state

    from bnn.infer.ensembles._lockstep_training import _Objective, _Step, _vectorised_losses

    x, y, _ = _data()
    objectives = [_Objective(_network(1), bnn.Gaussian(0.5)) for _ in range(2)]
    parameters, buffers = stack_module_state(objectives)  # type: ignore[arg-type]
    optimizer = torch.optim.Adam(parameters.values(), lr=0.1)
    losses_of = _vectorised_losses(objectives[0], parameters, buffers)
    batch = x[:16].expand(2, -1, -1), y[:16].expand(2, -1, -1)
    _Step(losses_of, optimizer, parameters, torch.tensor([True, True]))(*batch, "first")
    before = {k: p.detach().clone() for k, p in parameters.items()}
    _Step(losses_of, optimizer, parameters, torch.tensor([True, False]))(*batch, "second")
    for name, parameter in parameters.items():
        assert torch.equal(parameter[1], before[name][1]), name  # held
    assert not torch.equal(parameters["network.0.weight"][0], before["network.0.weight"][0])


class _Reweighted(bnn.Gaussian):
    """A Gaussian that trains on a reweighted objective (``training_log_prob`` only)."""

    def training_log_prob(self, output: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return 2.0 * self.log_prob(output, y)


class _OwnLogProb(bnn.Gaussian):
    """A Gaussian whose density is its own (``log_prob`` only): training uses it."""

    def log_prob(self, output: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return 2.0 * super().log_prob(output, y)


@pytest.mark.parametrize("kind", [_Reweighted, _OwnLogProb])
def test_a_likelihood_with_its_own_objective_needs_its_unchecked_form(kind: type) -> None:
    """Trained one after another with its own objective; refused in lock-step, where only
    ``training_log_density`` can run inside vmap."""
    x, y, _ = _data()
    likelihood = kind(0.5)
    output = torch.zeros(4, 1)
    assert torch.equal(
        likelihood.training_log_prob(output, y[:4]), 2.0 * bnn.Gaussian(0.5).log_prob(output, y[:4])
    )
    options = {"num_members": 2, "epochs": 1, "rng": 0, "progress": False}
    bnn.infer.deep_ensemble(lambda: _network(1), (x, y), likelihood=likelihood, **options)
    with pytest.raises(ValueError, match="training_log_density"):
        bnn.infer.deep_ensemble(
            lambda: _network(1), (x, y), likelihood=likelihood, lockstep=True, **options
        )


def _bag(rng: bnn.RNG, size: int) -> set[int]:
    """The rows of the bootstrap resample `deep_ensemble(bagging=True)` draws for a member."""
    generator = rng.torch_generator("bootstrap")
    return set(torch.randint(0, size, (size,), generator=generator).tolist())


def test_a_diverging_member_is_named() -> None:
    x, y, _ = _data()
    only_in_member_1 = min(_bag(bnn.RNG(0).spawn(1), 120) - _bag(bnn.RNG(0).spawn(0), 120))
    poisoned = y.clone().index_fill_(0, torch.tensor([only_in_member_1]), 1e30)
    with pytest.raises(bnn.infer.NonFiniteLossError, match=r"member\(s\) \[1\]"):
        bnn.infer.deep_ensemble(
            lambda: _network(1),
            (x, poisoned),
            likelihood=bnn.Gaussian(1.0),
            num_members=2,
            epochs=1,
            batch_size=200,
            rng=0,
            progress=False,
            lockstep=True,
            bagging=True,  # member 1's resample holds the huge target; member 0's does not
        )


@pytest.mark.parametrize(
    "factory, data, options, match",
    [
        (lambda: _network(1), "dataset", {}, "trains on \\(x, y\\) tensors"),
        (lambda: bnn.MCDropout(_network(1), add_dropout=0.1), "tensors", {}, "plain networks"),
        (
            lambda: bnn.bayesianize(_network(1)),
            "tensors",
            {},
            "plain networks",
        ),
        (
            lambda: nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.Linear(8, 1)),
            "tensors",
            {},
            "buffers",
        ),
        (lambda: _network(1), "tensors", {"workers": 2}, "workers"),
        (lambda: _network(1), "tensors", {"num_samples": 4}, "num_samples"),
        (lambda: _network(1), "tensors", {"checkpoint": "run.pt"}, "checkpoint"),
        (
            lambda: _network(1),
            "tensors",
            {"validation": Validation(torch.randn(5, 3), torch.randn(5, 1))},
            "cannot take x",
        ),
    ],
    ids=[
        "dataset",
        "mc dropout",
        "bayesian",
        "batch norm",
        "workers",
        "samples",
        "checkpoint",
        "validation inputs",
    ],
)
def test_what_lockstep_training_cannot_do_is_refused_before_training(
    factory: Any, data: str, options: dict[str, Any], match: str
) -> None:
    x, y, _ = _data()
    given: Any = (x, y) if data == "tensors" else TensorDataset(x, y)
    with pytest.raises((ValueError, TypeError), match=match):
        bnn.infer.deep_ensemble(
            factory,
            given,
            likelihood=bnn.Gaussian(0.3),
            num_members=2,
            epochs=1,
            rng=0,
            progress=False,
            lockstep=True,
            **options,
        )
