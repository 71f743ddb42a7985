"""The linearised predictive from per-layer factors equals the dense-Jacobian ``J Σ Jᵀ``.

`LaplacePosterior.functional_moments` with ``hessian="kron"`` or ``"diag"`` on whole Linear /
convolution layers forms ``J Σ Jᵀ`` from each layer's inputs and output Jacobians; the
reference is `bnn.posterior.GaussianPosterior.functional_moments` (per-input Jacobians of all
selected weights, ``factor.functional``) on the same posterior.
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

import bnn
from bnn.posterior.gaussian import GaussianPosterior


def _problem(kind: str, outputs: int) -> tuple[nn.Module, Tensor, Tensor, bnn.Likelihood]:
    generator = torch.Generator().manual_seed(0)
    with bnn.RNG(0).stream("init"):
        if kind == "mlp":
            net: nn.Module = nn.Sequential(
                nn.Linear(4, 7), nn.Tanh(), nn.Linear(7, 5), nn.Tanh(), nn.Linear(5, outputs)
            )
            x = torch.randn(40, 4, generator=generator)
        else:
            net = nn.Sequential(
                nn.Conv2d(1, 3, 3, padding=1),
                nn.Tanh(),
                nn.Conv2d(3, 2, 3, stride=2),
                nn.Flatten(),
                nn.Linear(18, outputs),
            )
            x = torch.randn(40, 1, 7, 7, generator=generator)
    net = net.double()
    x = x.double()
    if outputs == 1:
        return net, x, torch.randn(40, 1, generator=generator).double(), bnn.Gaussian(0.3)
    return net, x, torch.randint(0, outputs, (40,), generator=generator), bnn.Categorical()


@pytest.mark.parametrize("hessian", ["kron", "diag"])
@pytest.mark.parametrize(("kind", "outputs"), [("mlp", 1), ("mlp", 3), ("conv", 1), ("conv", 3)])
def test_factored_functional_equals_the_dense_jacobian_reference(
    hessian: str, kind: str, outputs: int
) -> None:
    net, x, y, likelihood = _problem(kind, outputs)
    posterior, _ = bnn.infer.laplace(
        net,
        (x, y),
        likelihood=likelihood,
        subset="all",
        hessian=hessian,
        progress=False,  # type: ignore[arg-type]
    )
    assert posterior._factored_layers is not None
    mean, covariance = posterior.functional_moments(x[:25])
    reference_mean, reference = GaussianPosterior.functional_moments(posterior, x[:25])
    torch.testing.assert_close(mean, reference_mean, rtol=0, atol=1e-14)
    # float64: both sums of the same products in another order, ~1e-16 relative
    torch.testing.assert_close(covariance, reference, rtol=1e-12, atol=1e-15)
    # blocks of one or two inputs: the same numbers
    small = posterior.functional_moments(x[:25], memory_budget=2_000)[1]
    torch.testing.assert_close(small, covariance, rtol=1e-12, atol=1e-15)


def test_the_linearisation_point_is_the_posterior_mean_not_the_live_weights() -> None:
    net, x, y, likelihood = _problem("mlp", 3)
    posterior, _ = bnn.infer.laplace(
        net, (x, y), likelihood=likelihood, subset="all", hessian="kron", progress=False
    )
    before = posterior.functional_moments(x)
    with torch.no_grad():
        for parameter in net.parameters():
            parameter.add_(0.5)  # the user keeps training the network
    after = posterior.functional_moments(x)
    reference = GaussianPosterior.functional_moments(posterior, x)
    for a, b, c in zip(before, after, reference, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
        torch.testing.assert_close(b, c, rtol=1e-12, atol=1e-15)


def test_layers_the_factors_cannot_take_use_the_per_input_jacobians() -> None:
    # a diagonal posterior over a LayerNorm's parameters: no per-layer form, dense path
    with bnn.RNG(0).stream("init"):
        net = nn.Sequential(nn.Linear(3, 6), nn.LayerNorm(6), nn.Tanh(), nn.Linear(6, 1)).double()
    x = torch.randn(30, 3, dtype=torch.float64)
    y = torch.randn(30, 1, dtype=torch.float64)
    posterior, _ = bnn.infer.laplace(
        net, (x, y), likelihood=bnn.Gaussian(0.3), subset="all", hessian="diag", progress=False
    )
    assert posterior._factored_layers is None
    prediction = bnn.predict_with_uncertainty(posterior, x)
    reference = GaussianPosterior.functional_moments(posterior, x)[1]
    torch.testing.assert_close(prediction.epistemic, reference.reshape(30, 1), rtol=1e-12, atol=0)

    # a convolution applied twice (shared weights; its diagonal is fitted from per-input
    # Jacobians): the per-layer pass refuses it, the prediction falls back to those
    with bnn.RNG(0).stream("init"):
        shared = nn.Conv2d(2, 2, 3, padding=1).double()
        head = nn.Linear(2 * 5 * 5, 1).double()

    class Twice(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.shared = shared
            self.head = head

        def forward(self, inputs: Tensor) -> Tensor:
            hidden = torch.tanh(self.shared(torch.tanh(self.shared(inputs))))
            return self.head(hidden.flatten(1))  # type: ignore[no-any-return]

    x = torch.randn(30, 2, 5, 5, dtype=torch.float64)
    posterior, _ = bnn.infer.laplace(
        Twice(),
        (x, y),
        likelihood=bnn.Gaussian(0.3),
        subset="all",
        hessian="diag",
        progress=False,
    )
    assert posterior._factored_layers is not None  # whole layers: tried first
    covariance = posterior.functional_moments(x)[1]
    reference = GaussianPosterior.functional_moments(posterior, x)[1]
    torch.testing.assert_close(covariance, reference, rtol=1e-12, atol=0)
    assert posterior._factored_layers is None  # and not tried again
