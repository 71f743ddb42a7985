"""Warm-up adaptation of the lock-step NUTS, per chain on ``[C]``/``[C, D]`` tensors: dual
averaging of the step size (Hoffman & Gelman 2014) and Stan's windowed diagonal metric."""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["DualAveraging", "adaptation_windows", "regularised_variance"]


class DualAveraging:
    """Nesterov dual averaging of log step size (Hoffman & Gelman 2014, §3.2), per chain."""

    def __init__(self, step_size: Tensor, target: float) -> None:
        self.mu = torch.log(10 * step_size)
        self.target = target
        self.t = 0
        self.h_bar = torch.zeros_like(step_size)
        self.log_step_bar = torch.zeros_like(step_size)

    def update(self, accept: Tensor) -> Tensor:
        self.t += 1
        eta = 1.0 / (self.t + 10)
        self.h_bar = (1 - eta) * self.h_bar + eta * (self.target - accept)
        log_step = self.mu - math.sqrt(self.t) / 0.05 * self.h_bar
        weight = self.t**-0.75
        self.log_step_bar = weight * log_step + (1 - weight) * self.log_step_bar
        return log_step.exp()

    def final(self) -> Tensor:
        return self.log_step_bar.exp()


def adaptation_windows(warmup: int) -> list[tuple[int, int]]:
    """Stan's slow adaptation windows ``[start, stop)`` of the mass matrix (NumPyro's
    ``build_adaptation_schedule``): an initial buffer of 75 iterations, windows of 25, 50,
    100, ... iterations (the last one stretched to the terminal buffer), and a terminal
    buffer of 50 iterations that adapt the step size only. A warm-up shorter than
    75 + 25 + 50 has buffers of 15 % and 10 % and one window in between; one shorter than
    20 adapts the step size only.
    """
    if warmup < 20:
        return []
    initial, terminal, size = 75, 50, 25
    if initial + terminal + size > warmup:
        initial, terminal = int(0.15 * warmup), int(0.1 * warmup)
        size = warmup - initial - terminal
    start, end = initial, warmup - terminal
    windows = []
    while start < end:
        if 3 * size <= end - start:
            following = 2 * size
        else:
            size = following = end - start
        windows.append((start, start + size))
        start, size = start + size, following
    return windows


def regularised_variance(samples: Tensor) -> Tensor:
    """Stan's diagonal metric from a window's draws ``[n, C, D]``: the sample variance shrunk
    towards ``1e-3`` with weight ``5 / (n + 5)`` (ones for a single draw)."""
    n = samples.shape[0]
    variance = samples.var(0, unbiased=True) if n > 1 else torch.ones_like(samples[0])
    return (n / (n + 5.0)) * variance + 1e-3 * (5.0 / (n + 5.0))
