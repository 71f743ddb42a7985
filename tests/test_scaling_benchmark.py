"""`benchmarks/scaling.py` at a toy size: every method it measures trains from a DataLoader (the
lock-step ensemble from its tensors) and predicts, and the table reports each of them."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def _benchmark() -> ModuleType:
    spec = importlib.util.spec_from_file_location("scaling", ROOT / "benchmarks" / "scaling.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_method_of_the_scaling_benchmark_trains_from_a_loader() -> None:
    pytest.importorskip("gpytorch")
    scaling = _benchmark()
    threads = torch.get_num_threads()
    try:
        methods = (*scaling.METHODS, *scaling.PEERS)
        results = [scaling.worker(method, 1024, 1, 1) for method in methods]
    finally:
        torch.set_num_threads(threads)
    for result in results:
        assert result["fit_s"] > 0 and result["peak_mb"] > 0, result
        assert torch.isfinite(torch.tensor([result["rmse"], result["log_likelihood"]])).all()
    report = scaling.table(results, [1024])
    assert all(f"| {method} |" in report for method in methods)
