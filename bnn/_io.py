"""Tensor-only files with a format name and version; loading never executes pickled code.

Saving is atomic: the file is written to a temporary file in the same folder, flushed to disk
and renamed over the target, so an interrupted save leaves the previous file intact.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import torch

__all__ = ["atomic_write", "load_versioned", "save_atomically", "write_text_atomically"]


@contextlib.contextmanager
def atomic_write(path: str | Path, mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path``; on success fsync it and rename it onto ``path``.

    On any error (or ``KeyboardInterrupt``) the temporary file is removed and ``path`` keeps
    its previous content. The folder must exist.
    """
    target = Path(path)
    if not target.parent.is_dir():
        raise FileNotFoundError(
            f"cannot save to {target}: the folder {target.parent} does not exist; create it first."
        )
    descriptor, temporary = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(descriptor, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    with contextlib.suppress(OSError):  # make the rename itself durable where supported
        folder = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)


def save_atomically(state: dict[str, Any], path: str | Path) -> None:
    """``torch.save(state, path)``, atomically (see ``atomic_write``)."""
    with atomic_write(path) as handle:
        torch.save(state, handle)


def write_text_atomically(path: str | Path, text: str) -> None:
    """``Path(path).write_text(text)``, atomically."""
    with atomic_write(path, "w") as handle:
        handle.write(text)


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
