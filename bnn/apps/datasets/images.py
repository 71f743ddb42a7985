"""Image classification data in the MNIST idx layout: train, validation and test tensors.

A folder holds the four files of the MNIST / Fashion-MNIST distributions (the layout of
torchvision's ``raw`` folders), each plain or gzip-compressed::

    train-images-idx3-ubyte[.gz]   train-labels-idx1-ubyte[.gz]
    t10k-images-idx3-ubyte[.gz]    t10k-labels-idx1-ubyte[.gz]

Any folder in that layout loads — only the two ``t10k`` files are needed for a test or
out-of-distribution set. Nothing is downloaded: the user names the folder. Images become
``float32`` in ``[0, 1]`` shaped ``[N, 1, H, W]``; labels ``int64`` ``[N]``.

Example:
    >>> data = load_image_data("benchdata/images/fashion-mnist", validation=5000, rng=0)
    ... # doctest: +SKIP
    >>> data.train.x.shape, data.validation.x.shape, data.test.x.shape  # doctest: +SKIP
    (torch.Size([55000, 1, 28, 28]), torch.Size([5000, 1, 28, 28]), torch.Size([10000, 1, 28, 28]))
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from bnn.random.default import RNGLike, resolve_rng

__all__ = [
    "IDX_FILES",
    "ImageData",
    "ImageSet",
    "load_image_data",
    "load_images",
    "missing_files",
    "read_idx",
    "write_idx",
    "write_image_folder",
]

IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
"""The idx file names of each part (each may end in ``.gz``)."""

_IDX_DTYPES: dict[int, np.dtype[Any]] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


@dataclass(frozen=True)
class ImageSet:
    """Images ``x`` ``[N, 1, H, W]`` (float32 in ``[0, 1]``) and labels ``y`` ``[N]`` (int64)."""

    x: Tensor
    y: Tensor

    def __len__(self) -> int:
        return int(self.y.shape[0])


@dataclass(frozen=True)
class ImageData:
    """A training set with a seeded validation split taken from it, and the test set."""

    train: ImageSet
    validation: ImageSet
    test: ImageSet

    @property
    def num_classes(self) -> int:
        return int(self.train.y.max()) + 1


def read_idx(path: str | Path) -> Tensor:
    """Read one idx file (plain or gzip) into a tensor of its stored shape and dtype.

    The header is two zero bytes, a type code (0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32,
    0x0D float32, 0x0E float64), the number of dimensions, then each size as a big-endian
    uint32 (LeCun et al., "The MNIST database").

    Raises:
        ValueError: the file is not in the idx format, or is shorter or longer than its header
            says (a truncated download).
    """
    path = Path(path)
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"{path} is not an idx file (bad magic number {raw[:4].hex()!r}).")
    dtype, ndim = _IDX_DTYPES[raw[2]], raw[3]
    header = 4 + 4 * ndim
    shape = tuple(int(size) for size in np.frombuffer(raw[4:header], dtype=">u4"))
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        raise ValueError(
            f"{path} holds {len(raw)} bytes but its header {shape} needs {expected}: the file "
            "is truncated or corrupt; download it again."
        )
    values = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    return torch.from_numpy(values.astype(dtype.newbyteorder("="), copy=True))


def write_idx(path: str | Path, values: Tensor) -> Path:
    """Write a tensor as an idx file (gzip-compressed when ``path`` ends in ``.gz``).

    Args:
        path: the file to write.
        values: ``uint8``, ``int8``, ``int16``, ``int32``, ``float32`` or ``float64``, any
            number of dimensions (images ``[N, H, W]`` uint8, labels ``[N]`` uint8).

    Returns:
        The path written. `read_idx` reads it back bit for bit.
    """
    codes = {torch.uint8: 0x08, torch.int8: 0x09, torch.int16: 0x0B, torch.int32: 0x0C}
    codes |= {torch.float32: 0x0D, torch.float64: 0x0E}
    if values.dtype not in codes:
        raise TypeError(
            "idx files hold uint8, int8, int16, int32, float32 or float64 values, not "
            f"{values.dtype}; convert the tensor first."
        )
    code = codes[values.dtype]
    array = values.detach().cpu().numpy()
    big_endian = array.astype(_IDX_DTYPES[code])
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    raw = header + big_endian.tobytes()
    path = Path(path)
    path.write_bytes(gzip.compress(raw) if path.suffix == ".gz" else raw)
    return path


def write_image_folder(
    folder: str | Path, images: Tensor, labels: Tensor, part: str = "test"
) -> Path:
    """Write images and labels as one part of an idx folder (e.g. your own OOD set).

    Args:
        folder: the folder (created if needed).
        images: ``[N, H, W]`` or ``[N, 1, H, W]``; uint8, or floats in ``[0, 1]`` (rounded to
            bytes).
        labels: ``[N]`` class indices in ``[0, 255]``.
        part: ``"test"`` (the ``t10k`` files; enough for an OOD set) or ``"train"``.

    Returns:
        The folder; `load_images` reads it.
    """
    if part not in IDX_FILES:
        raise ValueError(f"part must be 'train' or 'test', got {part!r}.")
    if images.ndim == 4 and images.shape[1] == 1:
        images = images[:, 0]
    if images.ndim != 3 or labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise ValueError(
            f"images must be [N, H, W] (or [N, 1, H, W]) with labels [N], got "
            f"{tuple(images.shape)} and {tuple(labels.shape)}."
        )
    if images.is_floating_point():
        images = (images.clamp(0, 1) * 255).round().to(torch.uint8)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    images_name, labels_name = IDX_FILES[part]
    write_idx(folder / f"{images_name}.gz", images.to(torch.uint8))
    write_idx(folder / f"{labels_name}.gz", labels.to(torch.uint8))
    return folder


def missing_files(folder: str | Path, part: Literal["train", "test"]) -> list[str]:
    """The idx files of ``part`` that ``folder`` lacks (neither plain nor ``.gz``)."""
    folder = Path(folder)
    return [
        name
        for name in IDX_FILES[part]
        if not ((folder / name).is_file() or (folder / f"{name}.gz").is_file())
    ]


def _find(folder: Path, name: str) -> Path:
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"{folder} has no {name} (nor {name}.gz). An image folder holds the MNIST idx files "
        f"{', '.join(IDX_FILES['train'] + IDX_FILES['test'])} (each may be gzip-compressed); "
        "a test or out-of-distribution set needs only the t10k files."
    )


def load_images(folder: str | Path, part: Literal["train", "test"] = "test") -> ImageSet:
    """Load the ``train`` or ``test`` (``t10k``) images and labels of an idx folder.

    Args:
        folder: a folder in the MNIST idx layout (see the module docstring).
        part: ``"train"`` or ``"test"``.

    Returns:
        An `ImageSet`: ``x`` ``[N, 1, H, W]`` float32 in ``[0, 1]``, ``y`` ``[N]`` int64.

    Raises:
        FileNotFoundError: the folder or one of the part's two files is missing (named).
        ValueError: a file is not idx, the images are not ``[N, H, W]`` bytes, or the counts
            of images and labels differ.
    """
    if part not in IDX_FILES:
        raise ValueError(f"part must be 'train' or 'test', got {part!r}.")
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"image folder {folder} does not exist.")
    images_file, labels_file = (_find(folder, name) for name in IDX_FILES[part])
    images, labels = read_idx(images_file), read_idx(labels_file)
    if images.dtype != torch.uint8 or images.ndim != 3:
        raise ValueError(
            f"{images_file} must hold uint8 images [N, H, W], got {images.dtype} "
            f"{tuple(images.shape)}."
        )
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise ValueError(
            f"{labels_file} holds {tuple(labels.shape)} labels for {images.shape[0]} images in "
            f"{images_file}; the two files must come from the same data set."
        )
    x = images.unsqueeze(1).to(torch.float32) / 255.0
    return ImageSet(x=x, y=labels.to(torch.int64))


def load_image_data(
    folder: str | Path, *, validation: int = 5000, rng: RNGLike = None
) -> ImageData:
    """Training images minus a seeded validation split, and the test images, of an idx folder.

    Args:
        folder: a folder with all four idx files.
        validation: images moved from the training set to the validation split (≥ 0 and less
            than the training set).
        rng: seeds the split (the ``"validation split"`` generator): the same seed gives the
            same split on every machine.

    Returns:
        An `ImageData` (``train``, ``validation``, ``test``).
    """
    train = load_images(folder, "train")
    if isinstance(validation, bool) or not isinstance(validation, int):
        raise TypeError(f"validation must be an int, got {validation!r}.")
    if not 0 <= validation < len(train):
        raise ValueError(
            f"validation must be in [0, {len(train)}) for {len(train)} training images, "
            f"got {validation}."
        )
    generator = resolve_rng(rng).torch_generator("validation split")
    order = torch.randperm(len(train), generator=generator)
    held, kept = order[:validation], order[validation:]
    return ImageData(
        train=ImageSet(train.x[kept], train.y[kept]),
        validation=ImageSet(train.x[held], train.y[held]),
        test=load_images(folder, "test"),
    )
