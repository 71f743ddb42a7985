"""idx image folders: reading, validation split, errors; the shipped MNIST files when present."""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from bnn.apps.datasets.images import (
    load_image_data,
    load_images,
    read_idx,
    write_idx,
    write_image_folder,
)

BENCHDATA = Path(
    os.environ.get("BNN_BENCHDATA", Path(__file__).resolve().parents[3] / "shared" / "benchdata")
)


def _write_idx(path: Path, values: np.ndarray, *, compress: bool) -> None:
    codes = {np.dtype(np.uint8): 0x08, np.dtype(">i4"): 0x0C, np.dtype(">f8"): 0x0E}
    header = struct.pack(">BBBB", 0, 0, codes[values.dtype], values.ndim)
    header += struct.pack(f">{values.ndim}I", *values.shape)
    raw = header + values.tobytes()
    path.write_bytes(gzip.compress(raw) if compress else raw)


def _folder(tmp_path: Path, *, train: int = 20, test: int = 6, compress: bool = True) -> Path:
    rng = np.random.default_rng(0)
    suffix = ".gz" if compress else ""
    for part, count in (("train", train), ("t10k", test)):
        if count == 0:
            continue
        images = rng.integers(0, 256, size=(count, 5, 4), dtype=np.uint8)
        labels = (np.arange(count) % 3).astype(np.uint8)
        _write_idx(tmp_path / f"{part}-images-idx3-ubyte{suffix}", images, compress=compress)
        _write_idx(tmp_path / f"{part}-labels-idx1-ubyte{suffix}", labels, compress=compress)
    return tmp_path


@pytest.mark.parametrize("compress", [True, False])
def test_images_round_trip(tmp_path: Path, compress: bool) -> None:
    folder = _folder(tmp_path, compress=compress)
    raw = read_idx(folder / f"train-images-idx3-ubyte{'.gz' if compress else ''}")
    images = load_images(folder, "train")
    assert images.x.shape == (20, 1, 5, 4) and images.x.dtype == torch.float32
    assert torch.equal(images.x[:, 0], raw.float() / 255)
    assert images.y.dtype == torch.int64 and images.y.tolist() == [i % 3 for i in range(20)]


def test_other_idx_types(tmp_path: Path) -> None:
    values = np.arange(6, dtype=">f8").reshape(2, 3)
    _write_idx(tmp_path / "x.idx", values, compress=False)
    assert torch.equal(
        read_idx(tmp_path / "x.idx"), torch.arange(6.0, dtype=torch.float64).view(2, 3)
    )
    _write_idx(tmp_path / "y.idx", np.array([-1, 7], dtype=">i4"), compress=False)
    assert read_idx(tmp_path / "y.idx").tolist() == [-1, 7]


def test_validation_split_is_seeded_and_disjoint(tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    data = load_image_data(folder, validation=5, rng=0)
    again = load_image_data(folder, validation=5, rng=0)
    other = load_image_data(folder, validation=5, rng=1)
    assert len(data.train) == 15 and len(data.validation) == 5 and len(data.test) == 6
    assert torch.equal(data.validation.x, again.validation.x)
    assert not torch.equal(data.validation.x, other.validation.x)
    every = torch.cat([data.train.x, data.validation.x]).flatten(1)
    assert torch.unique(every, dim=0).shape[0] == 20  # a partition of the training images
    assert data.num_classes == 3


def test_a_test_only_folder_is_an_ood_set(tmp_path: Path) -> None:
    folder = _folder(tmp_path, train=0)
    assert len(load_images(folder, "test")) == 6
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte"):
        load_images(folder, "train")


def test_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_images(tmp_path / "nowhere")
    folder = _folder(tmp_path)
    (folder / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte"):
        load_images(folder, "test")
    truncated = tmp_path / "short-idx"
    truncated.write_bytes(
        gzip.decompress((folder / "train-images-idx3-ubyte.gz").read_bytes())[:-3]
    )
    with pytest.raises(ValueError, match="truncated"):
        read_idx(truncated)
    (tmp_path / "junk").write_bytes(b"hello world")
    with pytest.raises(ValueError, match="not an idx file"):
        read_idx(tmp_path / "junk")
    with pytest.raises(ValueError, match="validation must be in"):
        load_image_data(folder, validation=20)
    with pytest.raises(ValueError, match="part must be"):
        load_images(folder, "val")  # type: ignore[arg-type]


def test_labels_must_match_images(tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    _write_idx(folder / "t10k-labels-idx1-ubyte.gz", np.zeros(4, np.uint8), compress=True)
    with pytest.raises(ValueError, match="same data set"):
        load_images(folder, "test")


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_shipped_image_sets(name: str) -> None:
    folder = BENCHDATA / "images" / name
    if not folder.is_dir():
        pytest.skip(f"{folder} is absent (benchmark data)")
    data = load_image_data(folder, validation=5000, rng=0)
    assert data.train.x.shape == (55000, 1, 28, 28) and data.test.x.shape == (10000, 1, 28, 28)
    assert data.num_classes == 10
    assert torch.bincount(data.test.y).tolist() == (
        [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009] if name == "mnist" else [1000] * 10
    )
    assert 0.0 <= float(data.train.x.min()) and float(data.train.x.max()) == 1.0


@pytest.mark.parametrize(
    "dtype", [torch.uint8, torch.int8, torch.int16, torch.int32, torch.float32, torch.float64]
)
@pytest.mark.parametrize("name", ["values.idx", "values.idx.gz"])
def test_write_idx_round_trips(tmp_path: Path, dtype: torch.dtype, name: str) -> None:
    values = (torch.arange(24) - 5).to(dtype).view(2, 3, 4)
    if dtype == torch.uint8:
        values = torch.arange(24, dtype=dtype).view(2, 3, 4)
    back = read_idx(write_idx(tmp_path / name, values))
    assert back.dtype == dtype and torch.equal(back, values)
    raw = (tmp_path / name).read_bytes()
    raw = gzip.decompress(raw) if name.endswith(".gz") else raw
    assert struct.unpack(">3I", raw[4:16]) == (2, 3, 4)  # big-endian sizes, as the format says


def test_write_image_folder_makes_an_ood_set(tmp_path: Path) -> None:
    images = torch.rand(7, 1, 6, 5, generator=torch.Generator().manual_seed(0))
    folder = write_image_folder(tmp_path / "mine", images, torch.arange(7) % 2)
    loaded = load_images(folder, "test")
    assert torch.allclose(loaded.x, images, atol=0.5 / 255 + 1e-7)  # rounded to bytes
    assert loaded.y.tolist() == [0, 1, 0, 1, 0, 1, 0]
    with pytest.raises(ValueError, match=r"\[N, H, W\]"):
        write_image_folder(tmp_path, images, torch.arange(6))
    with pytest.raises(TypeError, match="convert"):
        write_idx(tmp_path / "x.idx", torch.zeros(2, dtype=torch.int64))
