"""Data sets for the demo and the UCI benchmark (see ``README.md`` here for licences)."""

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
    "Standardizer",
    "UCISplit",
    "duplicated_inputs",
    "load_uci",
    "num_splits",
    "seeded_split",
]
