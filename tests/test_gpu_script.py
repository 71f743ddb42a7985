"""`benchmarks/gpu.sh` keeps working without a GPU: its CPU dry run, as CI executes it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

import bnn

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_script_dry_run_on_cpu_writes_its_tables(tmp_path: Path) -> None:
    environment = os.environ | {"PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    completed = subprocess.run(
        ["bash", "benchmarks/gpu.sh", "--device", "cpu", "--quick", "--output", str(tmp_path)],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    result = json.loads((tmp_path / "gpu.json").read_text())
    assert set(result["training"]["batch 32"]) == {
        "plain_ms_per_step",
        "reparam",
        "local_reparam",
        "flipout",
    }
    assert result["prediction"]["sample_set"] > 0
    assert [(row["chains"], row["compiled"]) for row in result["nuts"]] == [
        (2, False),
        (4, False),
        (2, True),
    ]
    table = (tmp_path / "gpu.md").read_text()
    assert "| NUTS chains |" in table and "passed" in (tmp_path / "gpu-tests.txt").read_text()
    if (ROOT.parent / "shared" / "benchdata" / "images" / "mnist").is_dir():
        report = (tmp_path / "images-fashion-mnist" / "images.md").read_text()
        assert "| map |" in report and "| laplace |" in report
    else:
        assert "image benchmark skipped" in completed.stdout


def test_gpu_script_refuses_an_unknown_argument() -> None:
    completed = subprocess.run(
        ["bash", "benchmarks/gpu.sh", "--devices", "cpu"], cwd=ROOT, capture_output=True, text=True
    )
    assert completed.returncode == 2 and "unknown argument --devices" in completed.stderr


def test_accelerators_get_larger_default_chunks_than_the_cpu() -> None:
    assert bnn.posterior.default_memory_budget("cpu") == bnn.posterior.DEFAULT_MEMORY_BUDGET
    cuda = torch.device("cuda")
    assert bnn.posterior.default_memory_budget(cuda) == bnn.posterior.ACCELERATOR_MEMORY_BUDGET
    assert bnn.posterior.ACCELERATOR_MEMORY_BUDGET > bnn.posterior.DEFAULT_MEMORY_BUDGET
