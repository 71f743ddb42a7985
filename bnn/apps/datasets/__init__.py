"""Data sets for the demo and the benchmarks: UCI regression (``uci``; see ``README.md`` here
for licences), image folders in the MNIST idx layout (``images``; never shipped) and synthetic
regression with a known noise level (``synthetic``)."""

from bnn.apps.datasets.images import (
    ImageData,
    ImageSet,
    load_image_data,
    load_images,
    read_idx,
    write_idx,
    write_image_folder,
)
from bnn.apps.datasets.synthetic import (
    SyntheticRegression,
    friedman,
    oracle_scores,
    synthetic_regression,
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
    "SyntheticRegression",
    "UCISplit",
    "duplicated_inputs",
    "friedman",
    "load_image_data",
    "load_images",
    "load_uci",
    "num_splits",
    "oracle_scores",
    "read_idx",
    "seeded_split",
    "synthetic_regression",
    "write_idx",
    "write_image_folder",
]
