"""Any GPyTorch kernel and mean, priors on hyper-parameters: the exact posterior they define,
the objective GPyTorch defines with the priors, clear refusals. Skipped without GPyTorch."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch import Tensor

import bnn

with warnings.catch_warnings():  # linear_operator scripts a helper with torch.jit on import
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    gpytorch = pytest.importorskip("gpytorch")

from bnn.infer.gp.gp import gp  # noqa: E402


def _periodic_data(n: int = 120) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(n, 1, dtype=torch.float64, generator=g) * 6
    y = torch.sin(2 * math.pi * x[:, 0] / 1.5) + 0.3 * x[:, 0]
    return x, y + 0.1 * torch.randn(n, dtype=torch.float64, generator=g)


def _sum_kernel() -> tuple[object, object, object]:
    kernels = gpytorch.kernels
    periodic = kernels.ScaleKernel(kernels.PeriodicKernel()).double()
    linear = kernels.LinearKernel().double()
    periodic.base_kernel.period_length = 1.5
    periodic.base_kernel.lengthscale = 0.8
    periodic.outputscale = 1.0
    linear.variance = 0.05
    return periodic + linear, periodic, linear


def _dense(kernel: object, a: Tensor, b: Tensor) -> Tensor:
    return kernel(a, b).to_dense()  # type: ignore[operator, no-any-return]


def test_a_sum_of_periodic_and_linear_kernels_gives_its_exact_posterior() -> None:
    x, y = _periodic_data()
    kernel, periodic, linear = _sum_kernel()
    posterior, history = gp(
        None,
        (x, y),
        likelihood=bnn.Gaussian(0.1),
        kernel=kernel,
        mean="zero",
        train_hyperparameters=False,
        progress=False,
    )
    x_test = torch.linspace(-1, 8, 40, dtype=torch.float64)[:, None]
    with torch.no_grad():  # the sum by hand: each part's dense matrix
        noise = float(bnn.Gaussian(0.1).std) ** 2 * torch.eye(len(x), dtype=torch.float64)
        k = _dense(periodic, x, x) + _dense(linear, x, x) + noise
        k_star = _dense(periodic, x, x_test) + _dense(linear, x, x_test)
        k_diag = (_dense(periodic, x_test, x_test) + _dense(linear, x_test, x_test)).diagonal()
    mean = k_star.T @ torch.linalg.solve(k, y)
    variance = k_diag - (k_star * torch.linalg.solve(k, k_star)).sum(0)
    prediction = bnn.predict_with_uncertainty(posterior, x_test, rng=0)
    # cond(K + σ²I) ≈ 1e4 here: the two float64 solves agree to ~1e-12
    torch.testing.assert_close(prediction.mean[:, 0], mean, rtol=0, atol=1e-9)
    torch.testing.assert_close(prediction.epistemic[:, 0], variance, rtol=0, atol=1e-9)
    # the periodic part extrapolates: beyond the data the mean keeps oscillating
    assert float(prediction.mean[-8:, 0].max() - prediction.mean[-8:, 0].min()) > 1.0
    assert set(history.hyperparameters) == {
        "kernels.0.outputscale",
        "kernels.0.base_kernel.lengthscale",
        "kernels.0.base_kernel.period_length",
        "kernels.1.variance",
    }
    assert history.hyperparameters["kernels.0.base_kernel.period_length"] == pytest.approx(1.5)
    assert "lengthscale" not in history.extras  # no single lengthscale to report


def test_a_kernel_object_is_trained_in_place_and_a_prior_enters_the_objective() -> None:
    x, y = _periodic_data(60)

    def fit(prior: object) -> tuple[object, bnn.infer.History]:
        kernels = gpytorch.kernels
        kernel = kernels.ScaleKernel(kernels.RBFKernel(lengthscale_prior=prior)).double()
        _, history = gp(
            None,
            (x, y),
            likelihood=bnn.Gaussian(0.3, learn_std=True),
            kernel=kernel,
            epochs=3,
            progress=False,
        )
        return kernel, history

    prior = gpytorch.priors.GammaPrior(20.0, 10.0)  # lengthscale about 2
    with_prior, history = fit(prior)
    without, plain = fit(None)
    # same start (GPyTorch's defaults): the first loss differs by −log p(ℓ₀) / N exactly
    initial = torch.nn.functional.softplus(torch.zeros((), dtype=torch.float64))
    expected = -float(prior.log_prob(initial)) / len(x)
    assert history.loss[0] - plain.loss[0] == pytest.approx(expected, rel=1e-6)
    trained = with_prior.base_kernel.lengthscale.detach()  # type: ignore[attr-defined]
    assert float(trained) != pytest.approx(float(initial))  # trained in place
    assert history.hyperparameters["base_kernel.lengthscale"] == pytest.approx(float(trained))
    assert "lengthscale" in history.extras and "outputscale" in history.extras


def test_a_noise_prior_enters_the_objective() -> None:
    x, y = _periodic_data(60)
    prior = gpytorch.priors.GammaPrior(2.0, 100.0)

    def first_loss(noise_prior: object) -> float:
        _, history = gp(
            None,
            (x, y),
            likelihood=bnn.Gaussian(0.3, learn_std=True),
            noise_prior=noise_prior,
            epochs=1,
            progress=False,
        )
        return history.loss[0]

    noise_variance = torch.tensor(float(bnn.Gaussian(0.3).std) ** 2, dtype=torch.float64)
    expected = -float(prior.log_prob(noise_variance)) / len(x)
    assert first_loss(prior) - first_loss(None) == pytest.approx(expected, rel=1e-5)


def test_bad_kernels_and_means_are_refused_with_what_to_do() -> None:
    x, y = _periodic_data(20)
    kwargs = {"likelihood": bnn.Gaussian(0.1), "progress": False}
    with pytest.raises(TypeError, match=r"kernel must be a name .* gpytorch\.kernels\.Kernel"):
        gp(None, (x, y), kernel=torch.nn.Linear(1, 1), **kwargs)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"gpytorch\.means\.Mean"):
        gp(None, (x, y), mean=3.0, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="kernel must be one of"):
        gp(None, (x, y), kernel="cosine", **kwargs)  # type: ignore[arg-type]
    kernel = gpytorch.kernels.RBFKernel().double()
    with pytest.raises(ValueError, match="set them on your kernel object"):
        gp(None, (x, y), kernel=kernel, lengthscale=0.5, **kwargs)  # type: ignore[arg-type]
    labels = (x[:, 0] * 3 // 6).long()
    with pytest.raises(ValueError, match=r"batch_shape=torch\.Size\(\[3\]\)"):
        gp(
            None,
            (x, labels),
            likelihood=bnn.Categorical(),
            method="svgp",
            num_classes=3,
            kernel=kernel,
            progress=False,
        )


def _loader_problem() -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(5)
    x = torch.rand(600, 2, dtype=torch.float64, generator=g) * 4 - 2
    return x, torch.sin(2 * x[:, 0]) * x[:, 1] + 0.1 * torch.randn(
        600, dtype=torch.float64, generator=g
    )


def test_svgp_from_a_dataloader_equals_svgp_from_the_same_tensors() -> None:
    x, y = _loader_problem()
    kwargs = dict(
        likelihood=bnn.Gaussian(0.3, learn_std=True),
        method="svgp",
        num_inducing=20,
        epochs=8,
        rng=0,
        progress=False,
    )
    from_tensors, history = gp(None, (x, y), **kwargs)  # type: ignore[arg-type]
    # one full batch either way: the ELBO sums the same terms (in another order), and the
    # inducing points are the same rows (randperm(N) from the "inducing" generator); the
    # loader's own generator keeps its seed draw off the global stream GPyTorch draws from
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(x, y),
        batch_size=600,
        generator=torch.Generator().manual_seed(0),
    )
    from_loader, loader_history = gp(None, loader, **kwargs)  # type: ignore[arg-type]
    torch.testing.assert_close(
        torch.tensor(loader_history.loss), torch.tensor(history.loss), rtol=1e-9, atol=0
    )
    x_test = x[:50]
    for a, b in zip(
        from_loader.marginal_moments(x_test), from_tensors.marginal_moments(x_test), strict=True
    ):
        torch.testing.assert_close(a, b, rtol=1e-7, atol=1e-9)


def test_svgp_trains_from_shuffled_minibatches_of_a_loader() -> None:
    x, y = _loader_problem()
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(x[:500], y[:500].unsqueeze(-1)),  # [N, 1] targets too
        batch_size=50,
        shuffle=True,
        generator=torch.Generator().manual_seed(0),
    )
    posterior, history = gp(
        None,
        loader,
        likelihood=bnn.Gaussian(0.3, learn_std=True),
        method="svgp",
        num_inducing=32,
        epochs=15,
        ngd_lr=0.1,
        rng=0,
        progress=False,
    )
    assert history.loss[-1] < history.loss[0]
    prediction = bnn.predict_with_uncertainty(posterior, x[500:])
    assert bnn.evaluate.metrics.rmse(prediction, y[500:]) < 0.2  # noise 0.1, signal sd ~0.8
    assert history.noise_std < 0.2


def test_a_dataloader_is_refused_where_it_cannot_work() -> None:
    x, y = _loader_problem()
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=100)
    with pytest.raises(ValueError, match="exact GP factors all N"):
        gp(None, loader, likelihood=bnn.Gaussian(0.1), method="exact", progress=False)
    with pytest.raises(ValueError, match="DataLoader brings its own batches"):
        gp(None, loader, likelihood=bnn.Gaussian(0.1), method="svgp", batch_size=10)
    labels = (x[:, 0] > 0).long()
    classes = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, labels), batch_size=100)
    with pytest.raises(ValueError, match="num_classes=K"):
        gp(None, classes, likelihood=bnn.Categorical(), method="svgp", progress=False)
    bad = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(x, torch.where(x[:, 0] > 1.9, torch.nan, y)), batch_size=100
    )
    with pytest.raises(ValueError, match="NaN or inf"):
        gp(None, bad, likelihood=bnn.Gaussian(0.1), method="svgp", epochs=1, progress=False)
