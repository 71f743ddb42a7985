"""Several independent GP outputs: output ``d`` is the single-output GP on column ``d`` (same
bits), predictions ``[N, D]`` with each output's own noise, clear refusals. Skipped without
GPyTorch."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch import Tensor, nn

import bnn
from bnn.evaluate.metrics import nll

with warnings.catch_warnings():  # linear_operator scripts a helper with torch.jit on import
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    gpytorch = pytest.importorskip("gpytorch")

NOISE = (0.05, 0.3, 0.1)


def _data(n: int = 60) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, 2, dtype=torch.float64, generator=g)
    f = torch.stack([torch.sin(6 * x[:, 0]), 3 * x[:, 1] ** 2, x[:, 0] - x[:, 1]], -1)
    return x, f + torch.tensor(NOISE, dtype=torch.float64) * torch.randn(
        n, 3, dtype=torch.float64, generator=g
    )


@pytest.mark.parametrize("method", ["exact", "svgp"])
def test_each_output_is_the_single_output_gp_on_its_column(method: str) -> None:
    """Predictive means, stds and joint samples of output d equal, bit for bit, those of
    ``gp`` on ``y[:, d]`` with ``rng.spawn(f"output-{d}")``; the carried noise is each
    output's own."""
    x, y = _data()
    options = {"likelihood": bnn.Gaussian(0.5, learn_std=True), "method": method, "epochs": 20}
    options |= {"num_inducing": 16, "batch_size": 30} if method == "svgp" else {}
    posterior, history = bnn.infer.gp(None, (x, y), rng=0, progress=False, **options)
    assert isinstance(posterior, bnn.infer.IndependentOutputsGP)
    x_test = torch.linspace(0, 1, 7, dtype=torch.float64).unsqueeze(-1).repeat(1, 2)
    together = bnn.predict_with_uncertainty(posterior, x_test, rng=0)
    draws = posterior.sample_functions(x_test, 4, rng=1)
    assert together.mean.shape == (7, 3) and draws.shape == (4, 7, 3)
    for d in range(3):
        single, single_history = bnn.infer.gp(
            None, (x, y[:, d]), rng=bnn.RNG(0).spawn(f"output-{d}"), progress=False, **options
        )
        alone = bnn.predict_with_uncertainty(single, x_test, rng=0)
        assert torch.equal(together.mean[:, d], alone.mean[:, 0])
        assert torch.equal(together.std[:, d], alone.std[:, 0])
        assert torch.equal(
            draws[..., d],
            single.sample_functions(x_test, 4, rng=bnn.RNG(1).spawn(f"output-{d}"))[..., 0],
        )
        assert history.chains[d].noise_std == single_history.noise_std
        assert history.noise_std[d] == single_history.noise_std
    carried = posterior.predictive_likelihood.std
    torch.testing.assert_close(carried, torch.tensor(history.noise_std, dtype=carried.dtype))


def test_learned_noises_find_each_outputs_own_level() -> None:
    """With 400 points the learned noise stds are within 25 % of (0.05, 0.3, 0.1) — the
    maximum-likelihood noise of an exact GP has a relative s.d. near 1/√(2N) = 3.5 %, plus
    the smoothing bias of a fitted function; a shared noise would miss two of them by 2–6×."""
    x, y = _data(400)
    _, history = bnn.infer.gp(
        None,
        (x, y),
        likelihood=bnn.Gaussian(0.5, learn_std=True),
        epochs=150,
        rng=0,
        progress=False,
    )
    for learned, true in zip(history.noise_std, NOISE, strict=True):
        assert abs(learned / true - 1) < 0.25, (learned, true)


def test_a_kernel_object_and_a_feature_network_are_copied_per_output() -> None:
    x, y = _data()
    kernel = gpytorch.kernels.ScaleKernel(gpytorch.kernels.RBFKernel(ard_num_dims=2)).double()
    before = kernel.base_kernel.lengthscale.detach().clone()
    posterior, _ = bnn.infer.gp(
        None,
        (x, y),
        likelihood=bnn.Gaussian(0.1),
        kernel=kernel,
        epochs=30,
        rng=0,
        progress=False,
    )
    lengthscales = [o.gp_model.covar_module.base_kernel.lengthscale for o in posterior.outputs]
    assert not torch.equal(lengthscales[0], lengthscales[1])  # each output its own kernel
    assert torch.equal(kernel.base_kernel.lengthscale.detach(), before)  # the given one intact
    features = nn.Linear(2, 2).double()
    deep, _ = bnn.infer.gp(
        features, (x, y), likelihood=bnn.Gaussian(0.1), epochs=5, rng=0, progress=False
    )
    assert deep.outputs[0].features is not deep.outputs[1].features


def test_several_outputs_are_refused_where_they_do_not_apply() -> None:
    x, y = _data()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=20)
    with pytest.raises(ValueError, match="D independent outputs"):
        bnn.infer.gp(None, loader, likelihood=bnn.Gaussian(0.1), method="svgp", progress=False)
    posterior, _ = bnn.infer.gp(
        None, (x, y), likelihood=bnn.Gaussian(0.1), epochs=1, rng=0, progress=False
    )
    with pytest.raises(ValueError, match="carries its own observation model"):
        bnn.predict_with_uncertainty(posterior, x, likelihood=bnn.Gaussian(0.2))
    with pytest.raises(ValueError, match="3 noise stds"):
        posterior.predictive_likelihood.predict(torch.zeros(2, 5, 1, dtype=torch.float64))
    assert math.isfinite(nll(bnn.predict_with_uncertainty(posterior, x), y))
