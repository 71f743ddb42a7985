"""Device-agnostic code paths: every public entry point on each available device.

CPU always runs; CUDA runs when a GPU is present and is skipped otherwise. Each case checks
that results land on the inputs' device and that a seed reproduces them there.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import bnn

DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
    ),
]


def _data(device: str) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(40, 2, generator=generator) * 2 - 1
    y = x.sum(-1, keepdim=True) + 0.1 * torch.randn(40, 1, generator=generator)
    return x.to(device), y.to(device)


def _net(device: str, seed: int = 0) -> nn.Module:
    with bnn.RNG(seed).stream("init"):
        return nn.Sequential(nn.Linear(2, 16), nn.Tanh(), nn.Linear(16, 1)).to(device)


@pytest.mark.parametrize("device", DEVICES)
def test_vi_fit_and_prediction_stay_on_device_and_reproduce(device: str) -> None:
    x, y = _data(device)

    def run() -> torch.Tensor:
        model = bnn.bayesianize(_net(device), init="random", rng=0)
        likelihood = bnn.Gaussian(0.5, learn_std=True)
        bnn.fit(model, (x, y), likelihood=likelihood, epochs=3, batch_size=8, rng=0, progress=False)
        return bnn.predict_with_uncertainty(
            model, x, likelihood=likelihood, num_samples=8, rng=1
        ).samples

    first = run()
    assert first.device.type == device and first.shape == (8, 40, 1)
    assert torch.equal(first, run())


@pytest.mark.parametrize("device", DEVICES)
def test_mc_dropout_ensemble_and_sample_set_on_device(device: str) -> None:
    x, y = _data(device)
    with bnn.RNG(0).stream("init"):
        dropout_net = nn.Sequential(nn.Linear(2, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 1))
    mc = bnn.MCDropout(dropout_net.to(device))
    assert bnn.predict_with_uncertainty(mc, x, num_samples=4, rng=0).samples.device.type == device
    ensemble, _ = bnn.infer.deep_ensemble(
        lambda: nn.Linear(2, 2).to(device),
        (x, y),
        likelihood=bnn.HeteroscedasticGaussian(),
        num_members=2,
        rng=0,
        epochs=2,
    )
    prediction = bnn.predict_with_uncertainty(ensemble, x, likelihood=bnn.HeteroscedasticGaussian())
    assert prediction.mean.device.type == device
    samples, _ = bnn.infer.sgld(
        _net(device),
        (x, y),
        likelihood=bnn.Gaussian(0.1),
        lr=1e-5,
        schedule=bnn.infer.StepSchedule(steps=6, burn_in=2, thin=2),
        rng=0,
        progress=False,
    )
    assert next(iter(samples.samples.values())).device.type == device
    assert bnn.predict_with_uncertainty(samples, x).samples.device.type == device


@pytest.mark.parametrize("device", DEVICES)
def test_lock_step_nuts_on_device(device: str) -> None:
    x, y = _data(device)
    samples, _ = bnn.infer.nuts(
        nn.Linear(2, 1).to(device),
        (x, y),
        likelihood=bnn.Gaussian(0.1),
        num_chains=2,
        warmup=10,
        draws=5,
        rng=0,
        progress=False,
    )
    assert samples.samples["weight"].device.type == device


def test_inputs_on_another_device_are_refused_with_the_fix() -> None:
    model = bnn.bayesianize(_net("cpu"), rng=0)
    with pytest.raises(ValueError, match=r"x is on meta but the model is on cpu.*x.to\('cpu'\)"):
        bnn.predict_with_uncertainty(model, torch.empty(3, 2, device="meta"))
