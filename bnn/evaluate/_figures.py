"""The figure every plot draws on: a matplotlib ``Figure`` that notebooks show, made without
pyplot; matplotlib (the ``plots`` extra) is imported on first use."""

from __future__ import annotations

import functools
import io
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def _figure(width: float = 5.0, height: float = 3.6) -> Figure:
    figure: Figure = _notebook_figure_class()(figsize=(width, height), layout="constrained")
    return figure


@functools.cache
def _notebook_figure_class() -> type[Figure]:
    """A matplotlib ``Figure`` that Jupyter shows as a PNG, without pyplot or ``%matplotlib``.

    Built on first use, so that matplotlib stays an optional extra.
    """
    try:
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError(
            "bnn's plots need matplotlib, an optional extra: pip install 'bnn-torch[plots]'."
        ) from error

    class NotebookFigure(Figure):
        """A ``Figure`` with a PNG representation for IPython's display machinery."""

        def _repr_png_(self) -> bytes:
            buffer = io.BytesIO()
            self.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
            return buffer.getvalue()

    return NotebookFigure


def _numpy(tensor: Tensor) -> np.ndarray:
    return tensor.detach().cpu().to(torch.float64).numpy()
