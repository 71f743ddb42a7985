"""Conformalised quantile regression around a mixture-density head: exact coverage in
simulation (within the Beta band of ``tests/evaluate/test_recalibrate.py``) although the head
is wrong about both modes, and its intervals follow the head's quantiles."""

from __future__ import annotations

import torch
from torch import Tensor

import bnn
from bnn.evaluate.recalibrate import conformalize
from tests.evaluate.test_recalibrate import K_SD, Fixed, _coverage_sd


def _bimodal(n: int, seed: int) -> tuple[Tensor, Tensor]:
    """``y`` is ``±(1 + x)`` with equal odds plus noise 0.2: two modes that move with x."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, generator=g, dtype=torch.float64)
    sign = torch.randint(0, 2, (n, 1), generator=g).double() * 2 - 1
    return x, sign * (1 + x) + 0.2 * torch.randn(n, 1, generator=g, dtype=torch.float64)


def _wrong_mixture(x: Tensor) -> Tensor:
    """A two-component head with the modes too close and too narrow: ``[1, N, 6]``."""
    logits = torch.zeros(x.shape[0], 2, dtype=x.dtype)
    means = torch.cat([-0.7 * (1 + x), 0.7 * (1 + x)], -1)
    raw_stds = torch.full((x.shape[0], 2), -2.0, dtype=x.dtype)  # softplus: std ≈ 0.13
    return torch.cat([logits, means, raw_stds], -1).unsqueeze(0)


def test_cqr_around_a_wrong_mixture_density_head_covers_exactly() -> None:
    n, m, repetitions, level = 99, 100, 200, 0.9
    head = bnn.MixtureDensity(2)
    coverage, own = [], []
    for r in range(repetitions):
        x_cal, y_cal = _bimodal(n, 100 + 2 * r)
        x_test, y_test = _bimodal(m, 101 + 2 * r)
        conformal = conformalize(
            Fixed(_wrong_mixture), x_cal, y_cal, method="cqr", likelihood=head, rng=r
        )
        prediction = bnn.predict_with_uncertainty(conformal, x_test, rng=r)
        lower, upper = prediction.interval()
        coverage.append(float(((y_test >= lower) & (y_test <= upper)).double().mean()))
        inner = head.predict(_wrong_mixture(x_test))
        own_lower, own_upper = inner.interval(level)
        own.append(float(((y_test >= own_lower) & (y_test <= own_upper)).double().mean()))
    mean = sum(coverage) / repetitions
    exact, sd = _coverage_sd(n, level, m, repetitions)
    alone = sum(own) / repetitions
    print(f"CQR coverage {mean:.4f} (exact {exact:.4f} ± {sd:.4f}); the head alone {alone:.4f}")
    assert abs(mean - exact) <= K_SD * sd
    assert alone < level - 10 * sd  # the head alone is badly over-confident
