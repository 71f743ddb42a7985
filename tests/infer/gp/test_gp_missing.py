"""Without GPyTorch, ``bnn.infer.gp`` imports and its functions name the extra to install."""

from __future__ import annotations

import sys

import pytest
import torch

import bnn
from bnn.infer.gp.gp import gp, gpytorch_module


def test_a_missing_gpytorch_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "gpytorch", None)  # `import gpytorch` raises ImportError
    with pytest.raises(ImportError, match=r"pip install bnn-torch\[gp\]"):
        gpytorch_module()
    x = torch.rand(10, 1, dtype=torch.float64)
    with pytest.raises(ImportError, match=r"bnn-torch\[gp\]"):
        gp(None, (x, x[:, 0]), likelihood=bnn.Gaussian(0.1), progress=False)
