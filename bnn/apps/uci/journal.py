"""A UCI run's journal: each finished split saved as it finishes, so a long run can resume.

A run of many splits can take hours (kin8nm's stack: about 16 minutes per split on two
cores). ``run_uci(..., journal=path)`` appends each split's `SplitResult` to a JSON-lines file
the moment it finishes (flushed to disk); ``resume=True`` reads it back and trains only the
splits it lacks. Split ``i`` draws from ``RNG(seed).spawn(i)`` alone, so a resumed run gives
the same results as an uninterrupted one.

The first line is the run's header (data set, method, seed, recalibration, tuning and every
default); resuming a journal written with other settings is refused, naming the difference.
The header also lists the bnn versions that wrote to the journal: resuming with another one
warns (same seed, same bits holds within one version) and adds it to the list.
A last line cut short by a killed process is dropped (that split trains again). An existing
journal is never overwritten: without ``resume`` it is refused.

Example:
    >>> run_uci("kin8nm", "stack", splits=20, journal="out/uci-splits.jsonl")  # killed at 7
    >>> run_uci("kin8nm", "stack", splits=20, journal="out/uci-splits.jsonl", resume=True)
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

from bnn._io import write_text_atomically
from bnn._version import installed_version
from bnn.apps.uci.report import SplitResult

__all__ = ["FORMAT", "Journal"]

FORMAT = "bnn-uci-journal"
VERSION = 1


class Journal:
    """An open journal file; `record` appends one split's result and flushes it to disk."""

    def __init__(self, path: Path, done: dict[int, SplitResult]) -> None:
        self.path = path
        self.done = done
        """The splits read back when resuming, by split index."""

    @classmethod
    def open(cls, path: str | Path, header: dict[str, Any], *, resume: bool) -> Journal:
        """Start a journal at ``path``, or with ``resume`` continue the one there (a missing or
        empty file starts a new one).

        Resuming rewrites the file to its header and whole lines (dropping a line cut short
        by a killed process), so that later results start on lines of their own.

        Raises:
            ValueError: without ``resume``, ``path`` already holds finished splits (they are
                never overwritten: resume, or remove the file); resuming a journal of another
                run (its header differs from ``header``) or a file that is not a journal.
        """
        path = Path(path)
        first = json.loads(json.dumps({"format": FORMAT, "version": VERSION, **header}))
        first[VERSIONS] = [installed_version()]
        written = path.exists() and path.stat().st_size > 0
        if written and not resume:
            lines = len(path.read_text(encoding="utf-8").splitlines())
            raise ValueError(
                f"{path} already holds a journal ({max(lines - 1, 0)} finished splits); resume "
                "it (--resume), or remove it or give another output folder to start over."
            )
        done: dict[int, SplitResult] = {}
        if written:
            earlier, done = _read(path, first)
            first[VERSIONS] = _versions_with_this_one(path, earlier.get(VERSIONS, []))
        records = [first, *(asdict(done[split]) for split in sorted(done))]
        text = "".join(json.dumps(record, sort_keys=True) + "\n" for record in records)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_text_atomically(path, text)
        return cls(path, done)

    def record(self, result: SplitResult) -> None:
        """Append ``result`` as one line, flushed and synced before returning."""
        with self.path.open("a", encoding="utf-8") as file:
            _write_line(file, asdict(result))


ADDED_SETTINGS: dict[str, Any] = {"ensemble_lockstep": False}
"""Defaults added after journals were written, at the value those runs had: an older journal
lacks them and resumes under that value (and is refused under another)."""


def _with_added_settings(written: dict[str, Any]) -> dict[str, Any]:
    defaults = written.get("defaults")
    if not isinstance(defaults, dict):
        return written
    return written | {"defaults": ADDED_SETTINGS | defaults}


VERSIONS = "bnn_versions"
"""The header's key of the bnn versions that wrote to the journal (not a setting: a run may
resume under another version)."""


def _versions_with_this_one(path: Path, earlier: list[str]) -> list[str]:
    """The versions that wrote the journal at ``path`` and this one, warning if it is new."""
    versions = list(earlier)
    this = installed_version()
    if this not in versions:
        writers = ", ".join(versions) or "a version that did not record itself"
        warnings.warn(
            f"{path} was written by bnn {writers}; this is bnn {this}. Its splits are kept, "
            "so the run mixes versions: same seed, same bits holds only within one version.",
            stacklevel=3,
        )
        versions.append(this)
    return versions


def _write_line(file: Any, record: dict[str, Any]) -> None:
    file.write(json.dumps(record, sort_keys=True) + "\n")
    file.flush()
    os.fsync(file.fileno())


def _read(path: Path, header: dict[str, Any]) -> tuple[dict[str, Any], dict[int, SplitResult]]:
    """The results of the journal at ``path``, after checking that it belongs to this run."""
    lines = path.read_text(encoding="utf-8").split("\n")
    try:
        written = json.loads(lines[0])
    except json.JSONDecodeError:
        written = None
    if not isinstance(written, dict) or written.get("format") != FORMAT:
        raise ValueError(
            f"{path} is not a bnn UCI journal; remove it or give another output folder."
        )
    written = _with_added_settings(written)
    settings = (header.keys() | written.keys()) - {VERSIONS}
    changed = sorted(k for k in settings if header.get(k) != written.get(k))
    if changed:
        raise ValueError(
            f"cannot resume {path}: it was written with other settings (different "
            f"{', '.join(changed)}); remove it or give another output folder to start over."
        )
    names = {field.name for field in fields(SplitResult)}
    done: dict[int, SplitResult] = {}
    for line in lines[1:]:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue  # an empty last line, or one cut short when its process was killed
        result = SplitResult(**{key: value for key, value in record.items() if key in names})
        done[result.split] = result
    return written, done
