"""SampleSet: persistence, selection and input validation."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from torch.func import functional_call

import bnn
import bnn.infer


def test_toy_bnn_predict_on_sample_set_equals_per_draw_loop() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(1, 8), nn.Tanh(), nn.Linear(8, 1))
    x = torch.linspace(-1, 1, 20).unsqueeze(-1)
    y = torch.sin(3 * x)
    samples, _ = bnn.infer.nuts(
        net,
        (x, y),
        likelihood=bnn.Gaussian(0.1),
        num_chains=2,
        warmup=30,
        draws=20,
        max_tree_depth=5,
        rng=0,
        progress=False,
    )
    grid = torch.linspace(-2, 2, 9).unsqueeze(-1)
    prediction = bnn.predict_with_uncertainty(
        samples, grid, num_samples=1000, likelihood=bnn.Gaussian(0.1)
    )
    flat = samples.flat()
    reference = torch.stack(
        [functional_call(net, {k: v[s] for k, v in flat.items()}, (grid,)) for s in range(40)]
    )
    torch.testing.assert_close(prediction.samples, reference)


def test_sample_set_save_load_thin_select(tmp_path: Path) -> None:
    net = nn.Linear(2, 1)
    samples = bnn.SampleSet(
        net,
        {"weight": torch.randn(3, 10, 1, 2), "bias": torch.randn(3, 10, 1)},
        sample_stats={"diverging": torch.zeros(3, 10, dtype=torch.bool)},
    )
    samples.save(tmp_path / "s.pt")
    loaded = bnn.SampleSet.load(tmp_path / "s.pt", net)
    assert torch.equal(loaded.samples["weight"], samples.samples["weight"])
    assert torch.equal(loaded.sample_stats["diverging"], samples.sample_stats["diverging"])
    assert samples.thin(3).num_draws == 4
    assert samples.select(chains=[0, 2], draws=slice(5, None)).samples["bias"].shape == (2, 5, 1)
    x = torch.randn(4, 2)
    assert bnn.predict_with_uncertainty(samples, x, num_samples=7, rng=0).samples.shape == (7, 4, 1)
    assert bnn.predict_with_uncertainty(samples, x, num_samples=100).samples.shape == (30, 4, 1)


def test_sample_set_file_without_format_is_rejected(tmp_path: Path) -> None:
    torch.save({"weight": torch.zeros(1)}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="not a bnn SampleSet"):
        bnn.SampleSet.load(tmp_path / "bad.pt", nn.Linear(2, 1))


@pytest.mark.parametrize(
    "samples, match",
    [
        ({"nope": torch.zeros(1, 1, 1)}, "not a parameter"),
        ({"weight": torch.zeros(1, 1, 3, 3)}, "parameter shape"),
        ({"weight": torch.zeros(1, 2)}, "parameter shape"),
        ({"weight": torch.full((1, 1, 1, 2), float("nan"))}, "NaN"),
        ({}, "non-empty"),
    ],
)
def test_sample_set_rejects_bad_samples(samples: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        bnn.SampleSet(nn.Linear(2, 1), samples)
