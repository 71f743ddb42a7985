"""Deterministic mode sets and restores the torch flags and the cuBLAS workspace variable."""

from __future__ import annotations

import os

import pytest
import torch

import bnn


def flags() -> tuple[bool, bool, bool, bool, str | None]:
    return (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
        os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
    )


def test_context_manager_sets_and_restores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    torch.backends.cudnn.benchmark = True
    before = flags()
    try:
        with bnn.deterministic_mode():
            assert flags() == (True, False, True, False, ":4096:8")
        assert flags() == before
    finally:
        torch.backends.cudnn.benchmark = False


def test_call_without_with_stays_on_until_switched_off() -> None:
    before = flags()
    try:
        bnn.deterministic_mode(True)
        assert torch.are_deterministic_algorithms_enabled()
    finally:
        bnn.deterministic_mode(False)
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
    assert not torch.are_deterministic_algorithms_enabled()


def test_seed_everything_deterministic_flag() -> None:
    try:
        bnn.seed_everything(0, deterministic=True)
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.backends.cudnn.deterministic
    finally:
        bnn.deterministic_mode(False)
        torch.backends.cudnn.deterministic = False


def test_enabled_must_be_bool() -> None:
    with pytest.raises(TypeError, match="enabled must be a bool"):
        bnn.deterministic_mode("yes")  # type: ignore[arg-type]
