"""UCI regression benchmark data with the standard 20 splits, and standardisation.

The yacht data set ships inside the package (see ``bnn/datasets/README.md`` for its
provenance); other data sets in the same layout load from ``data_dir``
(``data.txt``, ``index_features.txt``, ``index_target.txt``, ``index_train_{i}.txt``,
``index_test_{i}.txt``; whitespace-separated, 0-based indices).

Example:
    >>> split = bnn.apps.datasets.load_uci("yacht", split=0)
    >>> split.x_train.shape, split.x_test.shape
    (torch.Size([277, 6]), torch.Size([31, 6]))
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

__all__ = ["BUNDLED", "Standardizer", "UCISplit", "load_uci", "num_splits"]

BUNDLED = ("yacht",)


@dataclass(frozen=True)
class Standardizer:
    """Affine map to zero mean, unit std, fitted on training data (std 0 is treated as 1)."""

    mean: Tensor
    std: Tensor

    @classmethod
    def fit(cls, data: Tensor) -> Standardizer:
        mean, std = data.mean(0), data.std(0)
        return cls(mean=mean, std=torch.where(std > 0, std, torch.ones_like(std)))

    def transform(self, data: Tensor) -> Tensor:
        return (data - self.mean) / self.std

    def inverse(self, data: Tensor) -> Tensor:
        return data * self.std + self.mean


@dataclass(frozen=True)
class UCISplit:
    """One train/test split on the original scale: inputs ``[N, D]``, targets ``[N]``."""

    name: str
    split: int
    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor


def _directory(name: str, data_dir: str | Path | None) -> Path:
    if data_dir is not None:
        path = Path(data_dir) / name if (Path(data_dir) / name).is_dir() else Path(data_dir)
    elif name in BUNDLED:
        path = Path(str(resources.files("bnn") / "datasets" / name))
    else:
        raise ValueError(
            f"data set {name!r} is not bundled (bundled: {BUNDLED}); pass data_dir= pointing to "
            "a folder in the UCI benchmark layout."
        )
    if not (path / "data.txt").is_file():
        raise FileNotFoundError(f"no data.txt in {path}; expected the UCI benchmark layout.")
    return path


def _read(path: Path, dtype: type) -> np.ndarray:
    if not path.is_file():
        raise FileNotFoundError(f"missing file {path} (expected the UCI benchmark layout).")
    try:
        return np.loadtxt(path, dtype=dtype, ndmin=1)
    except ValueError as error:
        raise ValueError(f"{path} could not be parsed: {error}") from error


def _indices(path: Path, limit: int, what: str) -> np.ndarray:
    values = _read(path, float).reshape(-1)
    if values.size == 0 or not np.all(values == np.round(values)):
        raise ValueError(f"{path} must hold integer {what} indices.")
    indices = values.astype(np.int64)
    if indices.min() < 0 or indices.max() >= limit:
        raise ValueError(f"{path} has {what} index {int(indices.max())} outside [0, {limit}).")
    return indices


def num_splits(name: str, data_dir: str | Path | None = None) -> int:
    """How many ``index_train_{i}.txt`` splits the data set has."""
    return len(list(_directory(name, data_dir).glob("index_train_*.txt")))


def load_uci(
    name: str,
    split: int = 0,
    *,
    data_dir: str | Path | None = None,
    dtype: torch.dtype = torch.float32,
) -> UCISplit:
    """Load split ``split`` of a UCI regression data set.

    Args:
        name: data set name (``"yacht"`` is bundled; others need ``data_dir``).
        split: split index in ``[0, num_splits)``.
        data_dir: folder holding ``name/`` (or the data set's own folder).
        dtype: floating dtype of the returned tensors.
    """
    path = _directory(name, data_dir)
    available = num_splits(name, data_dir)
    if isinstance(split, bool) or not isinstance(split, int) or not 0 <= split < available:
        raise ValueError(f"split must be an int in [0, {available}), got {split!r}.")
    data = _read(path / "data.txt", float)
    if data.ndim != 2 or not np.isfinite(data).all():
        bad = np.argwhere(~np.isfinite(np.atleast_2d(data)))[:1]
        raise ValueError(
            f"{path / 'data.txt'} has non-finite values (first at row {int(bad[0][0])}); remove "
            "or impute those rows."
            if len(bad)
            else f"{path / 'data.txt'} is not a 2-D table."
        )
    features = _indices(path / "index_features.txt", data.shape[1], "column")
    targets = _indices(path / "index_target.txt", data.shape[1], "column")
    train = _indices(path / f"index_train_{split}.txt", data.shape[0], "row")
    test = _indices(path / f"index_test_{split}.txt", data.shape[0], "row")
    if len(targets) != 1:
        raise ValueError(f"{path / 'index_target.txt'} must name exactly one column.")
    if np.intersect1d(train, test).size:
        raise ValueError(f"split {split} of {path}: train and test indices overlap.")
    target = int(targets[0])
    x = torch.as_tensor(data[:, features], dtype=dtype)
    y = torch.as_tensor(data[:, target], dtype=dtype)
    return UCISplit(
        name=name,
        split=split,
        x_train=x[train],
        y_train=y[train],
        x_test=x[test],
        y_test=y[test],
    )
