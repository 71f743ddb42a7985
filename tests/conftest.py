"""Suite-wide settings: the one switch that silences bnn's progress bars.

Examples, docs blocks and notebooks show progress as a user sees it (``progress=True`` is the
default everywhere); the tests turn every bar off through the environment variable
``BNN_PROGRESS=0``, which subprocesses (the CLI, notebook kernels, executors) inherit, rather
than through the examples' text.
"""

from __future__ import annotations

import os

from bnn._progress import SWITCH

os.environ[SWITCH] = "0"
