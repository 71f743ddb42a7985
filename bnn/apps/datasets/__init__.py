"""Data sets for the demo and the benchmarks: UCI regression (``uci``; see ``README.md`` here
for licences) and image folders in the MNIST idx layout (``images``; never shipped)."""

from bnn.apps.datasets.images import (
    ImageData,
    ImageSet,
    load_image_data,
    load_images,
    read_idx,
    write_idx,
    write_image_folder,
)
from bnn.apps.datasets.uci import (
    BUNDLED,
    Standardizer,
    UCISplit,
    duplicated_inputs,
    load_uci,
    num_splits,
    seeded_split,
)

__all__ = [
    "BUNDLED",
    "ImageData",
    "ImageSet",
    "Standardizer",
    "UCISplit",
    "duplicated_inputs",
    "load_image_data",
    "load_images",
    "load_uci",
    "num_splits",
    "read_idx",
    "seeded_split",
    "write_idx",
    "write_image_folder",
]
