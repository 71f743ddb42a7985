"""Tensor-only files with a format name and version; loading never executes pickled code."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

__all__ = ["load_versioned"]


def load_versioned(path: str | Path, kind: str, version: int) -> dict[str, Any]:
    """Read a file written with ``{"format": "bnn.<kind>", "format_version": version, ...}``.

    Raises:
        ValueError: the file is not a bnn ``kind`` file, or has another format version.
    """
    state = torch.load(path, weights_only=True, map_location="cpu")
    if not isinstance(state, dict) or state.get("format") != f"bnn.{kind}":
        raise ValueError(f"{path} is not a bnn {kind} file.")
    if state.get("format_version") != version:
        raise ValueError(
            f"{path} has {kind} format version {state.get('format_version')!r}; this bnn "
            f"reads version {version}."
        )
    return state
