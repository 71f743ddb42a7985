"""``svi``, ``sgld`` and ``sghmc`` from a ``Dataset`` or a ``DataLoader``: the same bits as from
tensors (the batch order is drawn from ``rng`` either way), exact resumption, clear refusals."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, IterableDataset, TensorDataset

import bnn
import bnn.infer


class PairDataset(Dataset[tuple[Tensor, Tensor]]):
    """Rows served one at a time (not a TensorDataset: the generic read-and-collate path)."""

    def __init__(self, x: Tensor, y: Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return self.x.shape[0]

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        return self.x[i], self.y[i]


def _problem() -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(60, 3, generator=generator)
    y = x @ torch.tensor([1.0, -2.0, 0.5]) + 0.1 * torch.randn(60, generator=generator)
    return x, y.unsqueeze(-1)


def _net() -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 1))


def _svi(data: Any, **options: Any) -> Tensor:
    posterior, _ = bnn.infer.svi(
        _net(), data, likelihood=bnn.Gaussian(0.1), steps=13, rng=3, progress=False, **options
    )
    return torch.cat([w.flatten() for w in posterior.sample_weights(4, rng=0).values()])


def _sghmc(data: Any, **options: Any) -> Tensor:
    samples, _ = bnn.infer.sghmc(
        _net(),
        data,
        likelihood=bnn.Gaussian(0.1),
        lr=1e-4,
        schedule=bnn.infer.StepSchedule(steps=14, burn_in=4, thin=2),
        rng=3,
        progress=False,
        **options,
    )
    return torch.cat([w.flatten() for w in samples.samples.values()])


RUNNERS = {"svi": _svi, "sghmc": _sghmc}


@pytest.mark.parametrize("method", sorted(RUNNERS))
def test_datasets_and_loaders_give_the_bits_of_tensors(method: str) -> None:
    """Tensors, a TensorDataset, a row-by-row Dataset and DataLoaders over both (their batch
    size used) give bit-identical results; another seed gives other results."""
    run = RUNNERS[method]
    x, y = _problem()
    reference = run((x, y), batch_size=16)
    same = [
        run(TensorDataset(x, y), batch_size=16),
        run(PairDataset(x, y), batch_size=16),
        run(DataLoader(TensorDataset(x, y), batch_size=16, shuffle=True)),
        run(DataLoader(PairDataset(x, y), batch_size=16)),
    ]
    for result in same:
        assert torch.equal(result, reference)
    assert not torch.equal(run((x, y), batch_size=8), reference)


def test_sgld_from_a_dataset_and_its_checkpoint_resume_exactly(tmp_path: Path) -> None:
    """An interrupted SGLD run over a row-by-row Dataset resumes to the uninterrupted bits."""
    x, y = _problem()
    data = PairDataset(x, y)

    def run(steps: int, path: Path | None) -> Tensor:
        samples, _ = bnn.infer.sgld(
            _net(),
            data,
            likelihood=bnn.Gaussian(0.1),
            lr=1e-4,
            batch_size=16,
            schedule=bnn.infer.StepSchedule(steps=steps, burn_in=2, thin=1),
            rng=5,
            progress=False,
            checkpoint=path,
        )
        return torch.cat([w.flatten() for w in samples.samples.values()])

    whole = run(20, None)
    path = tmp_path / "sgld.ckpt"
    with pytest.raises(KeyboardInterrupt):
        _interrupt_after_saves(lambda: run(20, path), saves=2)
    assert torch.equal(run(20, path), whole)
    assert torch.equal(run(20, None), whole)


def _interrupt_after_saves(call: Any, saves: int) -> None:
    """Run ``call`` and raise KeyboardInterrupt after the checkpoint's ``saves``-th write."""
    from bnn.infer import checkpoint as module

    original = module.Checkpoint.save
    count = 0

    def save(self: Any, state: Any) -> None:
        nonlocal count
        original(self, state)
        count += 1
        if count == saves:
            raise KeyboardInterrupt

    module.Checkpoint.save = save  # type: ignore[method-assign]
    try:
        call()
    finally:
        module.Checkpoint.save = original  # type: ignore[method-assign]


class Stream(IterableDataset[tuple[Tensor, Tensor]]):
    def __iter__(self) -> Any:
        yield torch.zeros(3), torch.zeros(1)


class NanLater(PairDataset):
    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        x, y = super().__getitem__(i)
        return (x * float("nan"), y) if i == 40 else (x, y)


class Unpaired(PairDataset):
    def __getitem__(self, i: int) -> Any:
        return self.x[i]


@pytest.mark.parametrize("method", sorted(RUNNERS))
def test_data_that_cannot_be_read_by_index_is_refused_with_the_fix(method: str) -> None:
    run = RUNNERS[method]
    x, y = _problem()
    sampler = torch.utils.data.WeightedRandomSampler(torch.ones(60), 60)
    with pytest.raises(ValueError, match="Subset of the dataset"):
        run(DataLoader(TensorDataset(x, y), batch_size=16, sampler=sampler))
    with pytest.raises(TypeError, match="map-style Dataset"):
        run(Stream())
    batches = torch.utils.data.BatchSampler(range(60), batch_size=16, drop_last=False)
    with pytest.raises(ValueError, match="batch_sampler would be ignored"):
        run(DataLoader(TensorDataset(x, y), batch_sampler=batches))
    with pytest.raises(ValueError, match="batch_size"):
        run((x, y), batch_size=0)
    with pytest.raises(TypeError, match=r"\(x, y\) pair"):
        run(Unpaired(x, y), batch_size=16)
    with pytest.raises(ValueError, match="empty"):
        run(PairDataset(x[:0], y[:0]))
    with pytest.raises(ValueError, match="cannot take x"):
        run(PairDataset(torch.zeros(60, 5), y), batch_size=16)
    with pytest.raises(ValueError, match="NaN or inf in a mini-batch"):
        run(NanLater(x, y), batch_size=16)
    with pytest.raises(TypeError, match="tensors, a map-style Dataset"):
        run({"x": x, "y": y})


def test_full_batch_methods_read_a_dataset_or_loader_whole() -> None:
    """NUTS and boosting read a Dataset or a sequential DataLoader into the tensors they would
    be given: the same bits."""
    x, y = _problem()

    def nuts(data: Any) -> Tensor:
        samples, _ = bnn.infer.nuts(
            nn.Linear(3, 1),
            data,
            likelihood=bnn.Gaussian(0.1),
            num_chains=1,
            warmup=5,
            draws=5,
            rng=0,
            progress=False,
        )
        return torch.cat([w.flatten() for w in samples.samples.values()])

    def boost(data: Any) -> Tensor:
        boosted, _ = bnn.infer.boost(
            lambda: nn.Linear(3, 1),
            data,
            likelihood=bnn.Gaussian(0.1),
            num_stages=2,
            epochs=3,
            rng=0,
            progress=False,
        )
        return bnn.predict_with_uncertainty(boosted, x, rng=0).mean

    for run in (nuts, boost):
        reference = run((x, y))
        assert torch.equal(run(PairDataset(x, y)), reference)
        assert torch.equal(run(DataLoader(TensorDataset(x, y), batch_size=7)), reference)
        # a shuffling, dropping loader is read in the dataset's order, every row
        shuffled = DataLoader(PairDataset(x, y), batch_size=7, shuffle=True, drop_last=True)
        assert torch.equal(run(shuffled), reference)
    with pytest.raises(TypeError, match=r"\(x, y\) pair"):
        nuts(Unpaired(x, y))


def test_laplace_and_gp_take_a_dataset() -> None:
    """Laplace reads a Dataset in its batch_size batches, the GP reads it whole: the same
    posterior as from tensors."""
    x, y = _problem()
    net = _net()

    def laplace_mean(data: Any) -> Tensor:
        posterior, _ = bnn.infer.laplace(
            net, data, likelihood=bnn.Gaussian(0.1), subset="all", batch_size=16, progress=False
        )
        return bnn.predict_with_uncertainty(posterior, x, rng=0).std

    torch.testing.assert_close(laplace_mean(PairDataset(x, y)), laplace_mean((x, y)))
    pytest.importorskip("gpytorch")

    def gp_std(data: Any) -> Tensor:
        posterior, _ = bnn.infer.gp(
            None, data, likelihood=bnn.Gaussian(0.1), epochs=3, rng=0, progress=False
        )
        return bnn.predict_with_uncertainty(posterior, x).std

    assert torch.equal(gp_std(PairDataset(x, y)), gp_std((x, y)))


def test_one_noise_std_per_output_goes_where_it_is_modelled() -> None:
    """A Gaussian with one std per output: boosting learns one per column; a GP with several
    outputs gives each output its own; the methods that model one noise refuse it."""
    x, _ = _problem()
    y = torch.stack([x[:, 0], 3 * x[:, 1]], -1) + torch.tensor([0.1, 1.0]) * torch.randn(
        60, 2, generator=torch.Generator().manual_seed(1)
    )
    boosted, _ = bnn.infer.boost(
        lambda: nn.Linear(3, 2),
        (x, y),
        likelihood=bnn.Gaussian([1.0, 1.0], learn_std=True),
        num_stages=20,
        shrinkage=0.5,
        rng=0,
        progress=False,
    )
    learned = boosted.likelihood.std.detach()
    assert learned.shape == (2,) and learned[1] > 3 * learned[0]  # noise stds 0.1 and 1.0
    per_output = bnn.Gaussian([0.1, 1.0])
    for call in (
        lambda: bnn.infer.neural_linear(nn.Identity(), (x, y), likelihood=per_output),
        lambda: bnn.infer.laplace(nn.Linear(3, 2), (x, y), likelihood=per_output),
        lambda: bnn.infer.marglik_training(nn.Linear(3, 2), (x, y), likelihood=per_output),
    ):
        with pytest.raises(ValueError, match="one noise std for every output"):
            call()
    pytest.importorskip("gpytorch")
    posterior, _ = bnn.infer.gp(
        None, (x.double(), y.double()), likelihood=per_output, epochs=0, rng=0, progress=False
    )
    torch.testing.assert_close(posterior.predictive_likelihood.std, per_output.std)
    with pytest.raises(ValueError, match="one noise std for every output"):
        bnn.infer.gp(None, (x, y[:, 0]), likelihood=per_output, progress=False)
    with pytest.raises(ValueError, match="3 noise stds"):
        bnn.infer.gp(None, (x, y), likelihood=bnn.Gaussian([0.1, 0.2, 0.3]), progress=False)
