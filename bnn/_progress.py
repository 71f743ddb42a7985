"""Progress bars for long calls: a widget in Jupyter, text elsewhere, never a warning.

``tqdm.auto`` picks the notebook widget inside Jupyter, but without ``ipywidgets`` it warns
("IProgress not found") and writes its text bar to stderr. ``progress_bar`` uses the widget when
it can, and otherwise a plain text bar on stdout in a notebook (stderr in a terminal, where bars
belong), so a notebook shows progress without warnings or error-coloured output.

Bars are on by default. The environment variable ``BNN_PROGRESS=0`` (or ``false``/``off``)
turns off every bar of ``bnn`` at once, whatever ``progress=`` a call passes: the one switch for
logs of batch jobs and for test suites.

Example:
    >>> for epoch in progress_bar(range(10), desc="fit", disable=False):
    ...     pass
"""

from __future__ import annotations

import importlib.util
import os
import sys
import warnings
from collections.abc import Iterable
from typing import Any, TypeVar

from tqdm.std import TqdmWarning
from tqdm.std import tqdm as text_bar

# Libraries bnn builds on (Pyro) import ``tqdm.auto``, which warns once, at import, in a
# notebook without ipywidgets. Importing it here first, quietly, keeps that warning away.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", TqdmWarning)
    import tqdm.auto  # noqa: F401

__all__ = ["SWITCH", "progress_bar", "progress_enabled"]

SWITCH = "BNN_PROGRESS"
"""The environment variable that turns every progress bar of bnn off (``0``, ``false``, ``off``)."""

Item = TypeVar("Item")


def progress_enabled(progress: bool) -> bool:
    """``progress``, unless the environment switch ``BNN_PROGRESS`` turns bars off."""
    return progress and os.environ.get(SWITCH, "").strip().lower() not in ("0", "false", "off")


def progress_bar(iterable: Iterable[Item], *, desc: str, disable: bool) -> Any:
    """A tqdm bar over ``iterable`` (``disable=True`` or ``BNN_PROGRESS=0``: no output at all)."""
    disable = not progress_enabled(not disable)
    if disable or not _in_notebook():
        return text_bar(iterable, desc=desc, disable=disable)
    if importlib.util.find_spec("ipywidgets") is None:
        return text_bar(iterable, desc=desc, file=sys.stdout)
    from tqdm.notebook import tqdm as widget_bar

    return widget_bar(iterable, desc=desc)


def _in_notebook() -> bool:
    """Whether this runs in a Jupyter kernel (not a terminal IPython or plain Python)."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"
