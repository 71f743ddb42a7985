"""Progress bars: on by default, off through one environment switch."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import bnn
from bnn._progress import SWITCH, progress_bar, progress_enabled


@pytest.mark.parametrize(
    "value, shown", [("0", False), ("off", False), ("FALSE", False), ("1", True), ("", True)]
)
def test_the_switch_turns_every_bar_off(
    monkeypatch: pytest.MonkeyPatch, value: str, shown: bool
) -> None:
    monkeypatch.setenv(SWITCH, value)
    assert progress_enabled(True) is shown
    assert progress_enabled(False) is False
    assert progress_bar(range(3), desc="x", disable=False).disable is (not shown)


def test_a_training_shows_its_bar_unless_switched_off(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    x, y = torch.randn(16, 2), torch.randn(16, 1)

    def train() -> str:
        bnn.fit(nn.Linear(2, 1), (x, y), likelihood=bnn.Gaussian(1.0), epochs=2, batch_size=8)
        return capsys.readouterr().err

    monkeypatch.setenv(SWITCH, "1")
    assert "fit: 100%" in train()
    monkeypatch.setenv(SWITCH, "0")
    assert train() == ""
