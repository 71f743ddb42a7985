"""One checked pass over training data in batches (Laplace, neural-linear)."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, IterableDataset, TensorDataset

import bnn
from bnn.infer._batches import DATASET_BATCH, data_batches


class _CountingRows(Dataset[tuple[Tensor, Tensor]]):
    """Rows made on demand, counting how many were read."""

    def __init__(self, rows: int) -> None:
        self.rows = rows
        self.reads = 0

    def __len__(self) -> int:
        return self.rows

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        self.reads += 1
        return torch.full((3,), float(index)), torch.tensor([float(index)])


def test_a_dataset_is_read_one_batch_at_a_time_in_index_order() -> None:
    data = _CountingRows(2500)
    batches = data_batches(data)
    assert len(batches) == 3  # 1024 + 1024 + 452 rows
    iterator = iter(batches)
    x, y = next(iterator)
    assert data.reads == DATASET_BATCH and x.shape == (DATASET_BATCH, 3)
    rows = torch.cat([y, *(b for _, b in iterator)]).squeeze(-1)
    assert torch.equal(rows, torch.arange(2500.0))


def test_tensors_are_split_in_batch_size_rows_and_kept_whole_without_one() -> None:
    x, y = torch.randn(10, 2), torch.randn(10, 1)
    assert [b[0].shape[0] for b in data_batches((x, y), 4)] == [4, 4, 2]
    (whole,) = list(data_batches((x, y)))
    assert whole[0] is x and whole[1] is y


def test_bad_batches_are_refused_where_they_arrive() -> None:
    x, y = torch.randn(8, 2), torch.randn(8, 1)
    y[6] = float("nan")
    loader = DataLoader(TensorDataset(x, y), batch_size=4)
    batches = iter(data_batches(loader))
    next(batches)  # the first batch is clean
    with pytest.raises(ValueError, match="y contains NaN or inf"):
        next(batches)
    with pytest.raises(ValueError, match="x has 8 rows and y 5"):
        data_batches((x, y[:5]))
    with pytest.raises(ValueError, match="no rows"):
        data_batches(DataLoader(TensorDataset(x[:0], y[:0]), batch_size=4))
    with pytest.raises(TypeError, match="a Dataset or a DataLoader"):
        data_batches(x)
    with pytest.raises(ValueError, match="batch_size"):
        data_batches((x, y), 0)


def test_laplace_refuses_a_nan_in_a_later_batch_of_a_loader() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 1))
    x, y = torch.randn(64, 2), torch.randn(64, 1)
    y[50] = float("inf")
    with pytest.raises(ValueError, match="y contains NaN or inf"):
        bnn.infer.laplace(
            net,
            DataLoader(TensorDataset(x, y), batch_size=16),
            likelihood=bnn.Gaussian(0.1),
            hessian="kron",
            progress=False,
        )


class _NoRows(IterableDataset[tuple[Tensor, Tensor]]):
    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter([])


def test_laplace_refuses_an_iterable_dataset_with_no_rows() -> None:
    net = nn.Sequential(nn.Linear(2, 4), nn.Tanh(), nn.Linear(4, 1))
    with pytest.raises(ValueError, match="the data has no rows"):
        bnn.infer.laplace(
            net,
            DataLoader(_NoRows(), batch_size=4),
            likelihood=bnn.Gaussian(0.1),
            hessian="kron",
            progress=False,
        )
