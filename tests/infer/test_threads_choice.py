"""``threads=`` of the training loops: small models on one thread, the user's choice kept."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import bnn
import bnn._threads as threads_module
from bnn._threads import SMALL_STEP_WORK, chosen_threads


class Recorder(nn.Module):
    """A linear layer that records torch's thread count at every forward with gradients (the
    training steps, not the input probes)."""

    def __init__(self, inputs: int, outputs: int) -> None:
        super().__init__()
        self.linear = nn.Linear(inputs, outputs)
        self.seen: list[int] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled():
            self.seen.append(torch.get_num_threads())
        return self.linear(x)  # type: ignore[no-any-return]


@pytest.fixture
def two_threads(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """Torch at 2 threads as at start-up, no thread variables: "auto" may choose."""
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    monkeypatch.setattr(threads_module, "_STARTUP_THREADS", 2)
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    yield
    torch.set_num_threads(previous)


def _fit(model: nn.Module, **options: object) -> None:
    x, y = torch.randn(64, 3), torch.randn(64, 1)
    bnn.fit(model, (x, y), likelihood=bnn.Gaussian(0.5), epochs=1, batch_size=16, progress=False,
            **options)  # fmt: skip


@pytest.mark.usefixtures("two_threads")
def test_a_small_model_trains_on_one_thread_and_the_count_is_restored() -> None:
    model = Recorder(3, 1)
    _fit(model)
    assert set(model.seen) == {1}
    assert torch.get_num_threads() == 2


@pytest.mark.usefixtures("two_threads")
def test_an_explicit_count_none_or_a_large_model_keep_their_threads() -> None:
    pinned, untouched = Recorder(3, 1), Recorder(3, 1)
    _fit(pinned, threads=2)
    _fit(untouched, threads=None)
    assert set(pinned.seen) == set(untouched.seen) == {2}
    wide = nn.Linear(3, 1)
    rows = SMALL_STEP_WORK // sum(p.numel() for p in wide.parameters()) + 1
    assert chosen_threads("auto", wide, rows) is None
    assert chosen_threads("auto", wide, rows - 2) == 1


@pytest.mark.usefixtures("two_threads")
def test_the_users_choice_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    model = Recorder(3, 1)
    _fit(model)
    assert set(model.seen) == {2}
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.setattr(threads_module, "_STARTUP_THREADS", 4)  # the user set 2 since
    assert chosen_threads("auto", model, 16) is None


@pytest.mark.usefixtures("two_threads")
def test_samplers_choose_too() -> None:
    model = Recorder(3, 1)
    x, y = torch.randn(32, 3), torch.randn(32, 1)
    schedule = bnn.infer.StepSchedule(steps=4, burn_in=2)
    bnn.infer.sgld(model, (x, y), likelihood=bnn.Gaussian(0.5), schedule=schedule, rng=0,
                   progress=False)  # fmt: skip
    assert set(model.seen) == {1}


def test_invalid_thread_counts_are_refused() -> None:
    for bad in (0, -1, 1.5, "all", True):
        with pytest.raises(ValueError, match="threads must be 'auto', None or a positive int"):
            _fit(nn.Linear(3, 1), threads=bad)
