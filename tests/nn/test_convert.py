"""bayesianize: MOPED keeps the pretrained function; only= converts exactly the selection."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import bnn


class ResidualBlock(nn.Module):
    """A torchvision-style basic block: conv-bn-relu-conv-bn plus identity."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + x)


def _resnet() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        ResidualBlock(8),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 10),
    )
    net.train()
    net(torch.randn(16, 3, 8, 8))  # non-trivial BatchNorm statistics
    return net.eval()


@pytest.mark.parametrize("estimator", ["reparam", "flipout", "local_reparam"])
def test_moped_reproduces_pretrained_outputs_at_posterior_mean(estimator: str) -> None:
    net = _resnet()
    x = torch.randn(4, 3, 8, 8)
    expected = net(x)
    bnn.bayesianize(net, init="moped", delta=0.1, estimator=estimator)
    with bnn.nn.posterior_mean(net):
        assert torch.allclose(net(x), expected, atol=1e-6)
    assert not torch.allclose(net(x), expected, atol=1e-4)  # sampling does perturb it


def test_batchnorm_stays_deterministic_and_everything_else_converts() -> None:
    net = bnn.bayesianize(_resnet())
    converted = {name for name, _ in bnn.nn.layers.bayesian_modules(net)}
    assert converted == {"0", "1.conv1", "1.conv2", "4"}
    assert isinstance(net[1].bn1, nn.BatchNorm2d)


@pytest.mark.parametrize(
    "only, expected",
    [
        ("4", {"4"}),
        (["0", "1.conv2"], {"0", "1.conv2"}),
        (nn.Linear, {"4"}),
        (lambda name, _module: name.startswith("1."), {"1.conv1", "1.conv2"}),
    ],
)
def test_only_converts_exactly_the_selection(only, expected) -> None:  # type: ignore[no-untyped-def]
    net = bnn.bayesianize(_resnet(), only=only)
    assert {name for name, _ in bnn.nn.layers.bayesian_modules(net)} == expected
    plain = {n for n, m in net.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)}
    assert all(
        any(n == f"{e}.module" for e in expected) or n.split(".module")[0] not in expected
        for n in plain
    )


def test_moped_std_is_delta_times_weight() -> None:
    linear = nn.Linear(3, 2)
    layer = bnn.bayesianize(linear, delta=0.2)
    assert isinstance(layer, bnn.nn.BayesianModule)
    posterior = layer.bayesian_parameters()["weight"]
    assert torch.allclose(posterior.scale, 0.2 * posterior.loc.abs(), rtol=1e-5)


def test_random_init_is_seeded() -> None:
    def build(seed: int) -> torch.Tensor:
        net = bnn.bayesianize(
            nn.Sequential(nn.Linear(3, 4)), init="random", init_std=0.05, rng=seed
        )
        return net[0].bayesian_parameters()["weight"].loc.detach().clone()

    assert torch.equal(build(0), build(0)) and not torch.equal(build(0), build(1))


def test_per_layer_priors() -> None:
    def prior(name: str, _module: nn.Module) -> bnn.nn.Prior:
        return bnn.nn.Normal(0.0, 0.1 if name == "2" else 1.0)

    net = bnn.bayesianize(nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1)), prior=prior)
    assert net[2].bayesian_parameters()["weight"].prior.std == 0.1
    assert net[0].bayesian_parameters()["weight"].prior.std == 1.0


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"only": "nonexistent"}, ValueError, "not convertible"),
        ({"only": nn.LSTM}, ValueError, "selected no layer"),
        ({"init": "zeros"}, ValueError, "init must be"),
        ({"delta": 0.0}, ValueError, "delta"),
        ({"estimator": "flipout", "only": nn.Sequential}, ValueError, "selected no layer"),
    ],
)
def test_bad_bayesianize_arguments(kwargs, error, match) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(error, match=match):
        bnn.bayesianize(nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1)), **kwargs)


def test_flipout_on_non_linear_module_is_rejected_with_advice() -> None:
    with pytest.raises(ValueError, match="Use estimator='reparam'"):
        bnn.bayesianize(nn.Sequential(nn.Linear(2, 3), nn.GRUCell(3, 3)), estimator="flipout")
