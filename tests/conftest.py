"""Suite-wide settings: the one switch that silences bnn's progress bars, and one torch thread
per worker under ``pytest -n 2``.

Examples, docs blocks and notebooks show progress as a user sees it (``progress=True`` is the
default everywhere); the tests turn every bar off through the environment variable
``BNN_PROGRESS=0``, which subprocesses (the CLI, notebook kernels, executors) inherit, rather
than through the examples' text.
"""

from __future__ import annotations

import os

if os.environ.get("PYTEST_XDIST_WORKER"):  # `pytest -n 2`: one torch thread per worker process
    # (set before torch is imported; two processes of two spinning OpenMP threads each on two
    # cores make small networks many times slower)
    os.environ.setdefault("OMP_NUM_THREADS", "1")

from bnn._progress import SWITCH  # noqa: E402 - after the thread setting

os.environ[SWITCH] = "0"
