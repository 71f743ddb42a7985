"""MCDropout: stochastic dropout only, BatchNorm untouched, clear errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import bnn


def test_eval_mode_keeps_dropout_random_and_batchnorm_in_eval() -> None:
    net = nn.Sequential(
        nn.Linear(3, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Dropout(0.5), nn.Linear(8, 1)
    )
    model = bnn.MCDropout(net).eval()
    running_mean = net[1].running_mean.clone()
    x = torch.randn(16, 3)
    assert not torch.equal(model(x), model(x))
    assert torch.equal(net[1].running_mean, running_mean)
    assert not net.training and not net[3].training  # modes restored after the call


def test_train_mode_is_the_plain_model() -> None:
    net = nn.Sequential(nn.Linear(3, 8), nn.BatchNorm1d(8), nn.Dropout(0.5), nn.Linear(8, 1))
    model = bnn.MCDropout(net).train()
    running_mean = net[1].running_mean.clone()
    model(torch.randn(16, 3))
    assert not torch.equal(net[1].running_mean, running_mean)


def test_add_dropout_inserts_before_each_linear_without_changing_keys() -> None:
    net = nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Linear(8, 1))
    keys = set(net.state_dict())
    model = bnn.MCDropout(net, add_dropout=0.2).eval()
    assert set(net.state_dict()) == keys
    assert len(model.added) == 2
    x = torch.randn(4, 3)
    assert not torch.equal(model(x), model(x))


def test_no_dropout_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="add_dropout=p"):
        bnn.MCDropout(nn.Sequential(nn.Linear(2, 2)))


@pytest.mark.parametrize("rate", [0.0, 1.0, -0.1, True])
def test_invalid_added_rate(rate: float) -> None:
    with pytest.raises(ValueError, match="add_dropout"):
        bnn.MCDropout(nn.Linear(2, 2), add_dropout=rate)


def test_alpha_dropout_is_rejected_with_advice() -> None:
    with pytest.raises(TypeError, match="nn.Dropout"):
        bnn.MCDropout(nn.Sequential(nn.Linear(2, 2), nn.AlphaDropout(0.1)))


def test_channel_dropout_masks_whole_channels() -> None:
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Dropout2d(0.5))
    model = bnn.MCDropout(net).eval()
    assert model.mask_shapes(torch.randn(2, 1, 5, 5)) == [(2, 4, 1, 1)]
    samples = bnn.predict_with_uncertainty(
        model, torch.randn(2, 1, 5, 5), num_samples=30, rng=0
    ).samples
    zero_channels = (samples.abs().sum((-1, -2)) == 0).float().mean()
    assert 0.3 < float(zero_channels) < 0.7
