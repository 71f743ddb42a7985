"""Tensor-only files with a format name and version; loading never executes pickled code.

Saving is atomic: the file is written to a temporary file in the same folder, flushed to disk
and renamed over the target, so an interrupted save leaves the previous file intact. A process
killed mid-write (``kill -9``, SIGTERM, a scheduler's time limit) cannot remove its temporary
file, so the name records the host and process id, and the next save or load in that folder
removes the temporaries of this host's processes that no longer run.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import re
import socket
import tempfile
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import torch

__all__ = [
    "atomic_write",
    "load_versioned",
    "remove_stale_temporaries",
    "save_atomically",
    "write_text_atomically",
]


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
    remove_stale_temporaries(target.parent)
    descriptor, temporary = tempfile.mkstemp(
        prefix=f".{target.name}.", suffix=_temporary_suffix(os.getpid()), dir=target.parent
    )
    with _WRITING_LOCK:
        _WRITING.add(os.path.abspath(temporary))
    try:
        with os.fdopen(descriptor, mode) as handle:
            yield handle
            handle.flush()
            os.fchmod(handle.fileno(), 0o666 & ~_umask())  # as open() would create it
            os.fsync(handle.fileno())
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise
    finally:
        with _WRITING_LOCK:
            _WRITING.discard(os.path.abspath(temporary))
    with contextlib.suppress(OSError):  # make the rename itself durable where supported
        folder = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(folder)
        finally:
            os.close(folder)


_WRITING: set[str] = set()
"""Temporary files this process is writing now (another thread's save is not stale)."""
_WRITING_LOCK = threading.Lock()
_TEMPORARY = re.compile(r"^\..+\.(?P<host>[^.]+)\.(?P<pid>\d+)\.bnn-partial$")


def _umask() -> int:
    """The process's file-creation mask (read by setting it and putting it back)."""
    with _WRITING_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "-", socket.gethostname()) or "host"


def _temporary_suffix(pid: int) -> str:
    return f".{_host()}.{pid}.bnn-partial"


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale_temporaries(folder: str | Path) -> list[Path]:
    """Remove the temporary files in ``folder`` that a killed save of this host left behind.

    A temporary file is stale when the process that wrote it no longer runs (or is this
    process, which is not writing it now). Files of other hosts (a shared file system) are
    left alone: their processes cannot be seen from here. Returns the removed paths.
    """
    try:
        with os.scandir(folder) as entries:
            names = [entry.name for entry in entries if entry.name.endswith(".bnn-partial")]
    except OSError:  # an unreadable folder: the save or load itself reports what is wrong
        return []
    removed = []
    for name in names:
        match = _TEMPORARY.match(name)
        if match is None or match["host"] != _host():
            continue
        pid = int(match["pid"])
        path = Path(folder) / name
        with _WRITING_LOCK:
            busy = os.path.abspath(path) in _WRITING
        if busy or (pid != os.getpid() and _running(pid)):
            continue
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            removed.append(path)
    return removed


def save_atomically(state: dict[str, Any], path: str | Path) -> None:
    """``torch.save(state, path)``, atomically (see ``atomic_write``)."""
    with atomic_write(path) as handle:
        torch.save(state, handle)


def write_text_atomically(path: str | Path, text: str) -> None:
    """``Path(path).write_text(text)``, atomically."""
    with atomic_write(path, "w") as handle:
        handle.write(text)


def load_versioned(
    path: str | Path, kind: str, version: int, *, required: tuple[str, ...] = ()
) -> dict[str, Any]:
    """Read a file written with ``{"format": "bnn.<kind>", "format_version": version, ...}``.

    Only tensors, numbers, strings and containers are read (``torch.load(weights_only=True)``):
    a file holding other pickled objects is refused, and nothing in it is executed.

    Args:
        path: the file.
        kind: what the file must hold (``"SampleSet"``, ``"DeepEnsemble"``, ...).
        version: the format version this bnn reads.
        required: entries the file must have besides its format name and version.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: ``path`` is a folder, an empty, truncated or corrupted file, a file
            holding pickled objects other than tensors, a file of another kind or format
            version, or one that lacks a ``required`` entry; the message names the file.
    """
    target = Path(path)
    if target.parent.is_dir():
        remove_stale_temporaries(target.parent)
    if not target.exists():
        raise FileNotFoundError(f"no file {target}: check the path (saved with .save(path)?).")
    if target.is_dir():
        raise ValueError(f"{target} is a folder, not a bnn {kind} file; give the file's path.")
    if target.stat().st_size == 0:
        raise ValueError(
            f"{target} is empty (0 bytes), not a bnn {kind} file; it was never written "
            "completely. Save it again."
        )
    try:
        with warnings.catch_warnings():  # a plain pickle: refused below, with the reason
            warnings.filterwarnings("ignore", "Detected pickle protocol", UserWarning)
            state = torch.load(target, weights_only=True, map_location="cpu")
    except pickle.UnpicklingError as error:
        if "GLOBAL" in str(error):  # a pickled Python object: a class or function to call
            raise ValueError(
                f"{target} is not a bnn {kind} file: it holds pickled Python objects other "
                "than tensors, which bnn refuses to load (loading them could run code). Load "
                f"only files written by {kind}.save."
            ) from error
        raise ValueError(
            f"{target} is not a readable bnn {kind} file: not a tensors-only torch.save file "
            "(corrupted, or a plain pickle, which bnn refuses to load: loading it could run "
            f"code). Save it again with {kind}.save."
        ) from error
    except Exception as error:  # torch.load on arbitrary bytes fails in many ways
        raise ValueError(
            f"{target} is not a readable bnn {kind} file (truncated, corrupted or not written "
            f"by torch.save: {type(error).__name__}: {error}). Save it again."
        ) from error
    if not isinstance(state, dict) or state.get("format") != f"bnn.{kind}":
        found = (
            f"a {type(state).__name__}"
            if not isinstance(state, dict)
            else "no bnn format name"
            if state.get("format") is None
            else f"format {state.get('format')!r}"
        )
        raise ValueError(
            f"{target} is not a bnn {kind} file (it holds {found}); give a file written by "
            f"{kind}.save."
        )
    if state.get("format_version") != version:
        raise ValueError(
            f"{target} has {kind} format version {state.get('format_version')!r}; this bnn "
            f"reads version {version}. Save it again with this version of bnn."
        )
    missing = [key for key in required if key not in state]
    if missing:
        raise ValueError(
            f"{target} is a damaged bnn {kind} file: it lacks {missing}. Save it again."
        )
    return state
