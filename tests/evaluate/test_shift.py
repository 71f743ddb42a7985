"""Rotation and the shift curve."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import bnn
from bnn.evaluate.metrics import accuracy, expected_calibration_error, nll
from bnn.evaluate.shift import rotate, shift_curve


@pytest.mark.parametrize("quarter", [1, 2, 3, -1])
def test_quarter_turns_equal_rot90(quarter: int) -> None:
    x = torch.rand(3, 2, 7, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    expected = torch.rot90(x, quarter, dims=(-2, -1))
    assert torch.allclose(rotate(x, 90 * quarter), expected, atol=1e-12)


def test_rotation_is_counter_clockwise_and_keeps_mass_inside() -> None:
    x = torch.zeros(1, 1, 5, 5)
    x[0, 0, 0, 2] = 1.0  # top centre
    turned = rotate(x, 90)
    assert turned[0, 0, 2, 0] == pytest.approx(1.0)  # to the left centre
    assert torch.equal(rotate(x, 0), x) and torch.equal(rotate(x, 360), x)
    disc = torch.zeros(1, 1, 21, 21)
    disc[..., 8:13, 8:13] = 1.0
    assert float(rotate(disc, 45).sum()) == pytest.approx(25.0, rel=0.02)  # bilinear keeps mass
    assert rotate(disc, 30.5).shape == disc.shape


def test_rotation_refuses_bad_input() -> None:
    with pytest.raises(ValueError, match=r"\[N, C, H, W\]"):
        rotate(torch.zeros(5, 5), 10)
    with pytest.raises(ValueError, match="floating-point"):
        rotate(torch.zeros(1, 1, 5, 5, dtype=torch.uint8), 10)
    with pytest.raises(ValueError, match="finite"):
        rotate(torch.zeros(1, 1, 5, 5), float("nan"))


def test_shift_curve_reads_each_rotation() -> None:
    torch.manual_seed(0)
    x = torch.rand(40, 1, 6, 6)
    y = torch.arange(40) % 3
    model = bnn.MCDropout(
        nn.Sequential(nn.Flatten(), nn.Linear(36, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 3))
    )
    curve = shift_curve(model, x, y, angles=[0, 90], likelihood=bnn.Categorical(), rng=5)
    again = shift_curve(model, x, y, angles=[0, 90], likelihood=bnn.Categorical(), rng=5)
    assert curve == again
    direct = bnn.predict_with_uncertainty(
        model,
        rotate(x, 90),
        num_samples=32,
        likelihood=bnn.Categorical(),
        rng=bnn.RNG(5).spawn("angle 1"),
    )
    assert isinstance(direct, bnn.likelihoods.ClassificationPrediction)
    assert curve.accuracy[1] == accuracy(direct, y)
    assert curve.nll[1] == nll(direct, y)
    assert curve.ece[1] == expected_calibration_error(direct, y)
    assert curve.entropy[1] == pytest.approx(float(direct.entropy.mean()))
    assert curve.as_dict()["angles"] == [0.0, 90.0]
    with pytest.raises(ValueError, match="angles is empty"):
        shift_curve(model, x, y, angles=[], likelihood=bnn.Categorical())
