"""Gaussian processes: the closed form in float64, SVGP = exact at Z = X, joint samples.

Skipped when GPyTorch (the ``gp`` extra) is not installed.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from torch import Tensor, nn

import bnn

with warnings.catch_warnings():  # linear_operator scripts a helper with torch.jit on import
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    pytest.importorskip("gpytorch")

from bnn.infer.gp.gp import GPPosterior, gp  # noqa: E402

LENGTHSCALE, OUTPUTSCALE = 0.3, 1.3


def _std(std: float) -> float:
    """The std a ``bnn.Gaussian(std)`` holds (its log is stored in float32)."""
    return float(bnn.Gaussian(std).std)


def _rbf(a: Tensor, b: Tensor, lengthscale: float = LENGTHSCALE) -> Tensor:
    return OUTPUTSCALE * torch.exp(-0.5 * (a - b.T) ** 2 / lengthscale**2)


def _exact_posterior(x: Tensor, y: Tensor, xs: Tensor, noise: float) -> tuple[Tensor, Tensor]:
    """``K_*ᵀ (K + σ²I)⁻¹ y``, ``K_** − K_*ᵀ (K + σ²I)⁻¹ K_*`` (Rasmussen & Williams 2.23-24)."""
    k = _rbf(x, x) + noise**2 * torch.eye(len(x), dtype=torch.float64)
    k_star = _rbf(x, xs)
    return k_star.T @ torch.linalg.solve(k, y), _rbf(xs, xs) - k_star.T @ torch.linalg.solve(
        k, k_star
    )


def _data(n: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, dtype=torch.float64, generator=g) * 2 - 1
    return x, torch.sin(3 * x).squeeze(-1) + 0.1 * torch.randn(n, dtype=torch.float64, generator=g)


XS = torch.linspace(-1.2, 1.2, 9, dtype=torch.float64)[:, None]


def _fixed_exact(x: Tensor, y: Tensor) -> GPPosterior:
    posterior, _ = gp(
        None,
        (x, y),
        likelihood=bnn.Gaussian(0.1),
        method="exact",
        mean="zero",
        lengthscale=LENGTHSCALE,
        outputscale=OUTPUTSCALE,
        train_hyperparameters=False,
        progress=False,
    )
    return posterior


def test_exact_gp_equals_the_closed_form_in_float64() -> None:
    x, y = _data(40)
    mean, covariance = _fixed_exact(x, y).functional_moments(XS)
    expected_mean, expected_covariance = _exact_posterior(x, y, XS, _std(0.1))
    # cond(K + σ²I) ≤ 1 + λ_max/σ² ≈ 4e3 here: both solves agree to ~1e-16 · 4e3 · |y|
    torch.testing.assert_close(mean, expected_mean, rtol=0, atol=1e-11)
    torch.testing.assert_close(covariance, expected_covariance, rtol=0, atol=1e-11)


def test_exact_gp_hyperparameters_by_marginal_likelihood() -> None:
    x, y = _data(60, 1)
    posterior, history = gp(
        None,
        (x, y),
        likelihood=bnn.Gaussian(0.5, learn_std=True),
        method="exact",
        mean="zero",
        epochs=150,
        lr=0.05,
        progress=False,
    )
    assert history.loss[-1] < history.loss[0]
    noise = history.noise_std
    assert isinstance(posterior.predictive_likelihood, bnn.Gaussian)
    assert float(posterior.predictive_likelihood.std) == pytest.approx(noise, rel=1e-6)
    # the posterior is the closed form with the learned hyper-parameters
    (lengthscale,) = history.lengthscale
    outputscale = history.outputscale
    k = outputscale * torch.exp(-0.5 * (x - x.T) ** 2 / lengthscale**2)
    k_star = outputscale * torch.exp(-0.5 * (x - XS.T) ** 2 / lengthscale**2)
    expected = k_star.T @ torch.linalg.solve(k + noise**2 * torch.eye(60, dtype=torch.float64), y)
    mean, _ = posterior.functional_moments(XS)
    torch.testing.assert_close(mean, expected, rtol=0, atol=1e-6)  # noise_std: float32 std
    prediction = bnn.predict_with_uncertainty(posterior, XS, rng=0)  # carries its noise
    assert prediction.std.shape == (9, 1)


def test_svgp_with_inducing_points_at_the_inputs_recovers_the_exact_posterior() -> None:
    # q(u) optimal for a Gaussian likelihood is reached by one full-batch natural-gradient
    # step of size 1; with Z = X the SVGP predictive is then the exact posterior, up to the
    # jitter added to K_zz and to the predictive covariance (1e-12 here, K_zz well conditioned:
    # points 0.14 apart, lengthscale 0.1, so the error is ~1e-12 · cond(K_zz) ≈ 1e-11).
    x = torch.linspace(-1, 1, 15, dtype=torch.float64)[:, None]
    y = torch.sin(3 * x).squeeze(-1)
    kwargs = dict(
        likelihood=bnn.Gaussian(0.1),
        mean="zero",
        lengthscale=0.1,
        outputscale=OUTPUTSCALE,
        train_hyperparameters=False,
        progress=False,
    )
    exact, _ = gp(None, (x, y), method="exact", **kwargs)  # type: ignore[arg-type]
    sparse, _ = gp(
        None,
        (x, y),
        method="svgp",
        inducing_points=x.clone(),
        learn_inducing=False,
        ngd_lr=1.0,
        epochs=1,
        jitter=1e-12,
        **kwargs,  # type: ignore[arg-type]
    )
    for a, b in zip(exact.functional_moments(XS), sparse.functional_moments(XS), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-9)


def test_svgp_without_natural_gradients_reaches_the_same_optimum_by_adam() -> None:
    """``ngd_lr=None``: the Cholesky-parameterised q(u) trained by Adam (500 full-batch steps,
    lr 0.05) reaches the optimum one natural-gradient step reaches — with Z = X the exact
    posterior (measured: 2.6e-12 from it; checked to 1e-6)."""
    x = torch.linspace(-1, 1, 15, dtype=torch.float64)[:, None]
    y = torch.sin(3 * x).squeeze(-1)
    kwargs = dict(
        likelihood=bnn.Gaussian(0.1),
        mean="zero",
        lengthscale=0.1,
        outputscale=OUTPUTSCALE,
        train_hyperparameters=False,
        progress=False,
    )
    exact, _ = gp(None, (x, y), method="exact", **kwargs)  # type: ignore[arg-type]
    sparse, _ = gp(
        None,
        (x, y),
        method="svgp",
        inducing_points=x.clone(),
        learn_inducing=False,
        ngd_lr=None,
        epochs=500,
        lr=0.05,
        jitter=1e-12,
        rng=0,
        **kwargs,  # type: ignore[arg-type]
    )
    strategy = sparse.gp_model.variational_strategy
    assert type(strategy._variational_distribution).__name__ == "CholeskyVariationalDistribution"
    for a, b in zip(exact.functional_moments(XS), sparse.functional_moments(XS), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def test_sampled_functions_have_the_stated_covariance_and_follow_the_seed() -> None:
    x, y = _data(30, 2)
    posterior = _fixed_exact(x, y)
    points = XS[::2]
    mean, covariance = posterior.functional_moments(points)
    s = 20_000
    samples = posterior.sample_functions(points, s, rng=0)[..., 0]
    assert samples.shape == (s, 5)
    # MCSE of a sample covariance of Gaussians: sqrt((Σ_ii Σ_jj + Σ_ij²) / S)
    variance = covariance.diagonal()
    mcse = ((variance[:, None] * variance[None, :] + covariance**2) / s).sqrt()
    empirical = torch.cov(samples.T)
    assert bool(((empirical - covariance).abs() <= 4.5 * mcse).all())
    assert bool(((samples.mean(0) - mean).abs() <= 4.5 * (variance / s).sqrt()).all())
    assert torch.equal(
        posterior.sample_functions(points, 7, rng=3), posterior.sample_functions(points, 7, rng=3)
    )
    assert not torch.equal(
        posterior.sample_functions(points, 7, rng=3), posterior.sample_functions(points, 7, rng=4)
    )


def test_svgp_classification_and_minibatches() -> None:
    g = torch.Generator().manual_seed(3)
    x = torch.rand(400, 2, dtype=torch.float64, generator=g) * 2 - 1
    y = (x[:, 0] ** 2 + x[:, 1] ** 2 < 0.5).double()
    posterior, history = gp(
        None,
        (x, y),
        likelihood=bnn.Bernoulli(),
        method="svgp",
        num_inducing=32,
        batch_size=100,
        epochs=40,
        lr=0.05,
        rng=0,
        progress=False,
    )
    prediction = bnn.predict_with_uncertainty(posterior, x, rng=0)  # carries its Bernoulli
    assert bnn.evaluate.metrics.accuracy(prediction, y) > 0.9
    assert history.loss[-1] < history.loss[0]
    again, _ = gp(
        None,
        (x, y),
        likelihood=bnn.Bernoulli(),
        method="svgp",
        num_inducing=32,
        batch_size=100,
        epochs=2,
        lr=0.05,
        rng=0,
        progress=False,
    )
    other, _ = gp(
        None,
        (x, y),
        likelihood=bnn.Bernoulli(),
        method="svgp",
        num_inducing=32,
        batch_size=100,
        epochs=2,
        lr=0.05,
        rng=0,
        progress=False,
    )
    torch.testing.assert_close(
        again.functional_moments(x[:5]), other.functional_moments(x[:5]), rtol=0, atol=0
    )


def test_deep_kernel_learning_trains_the_features_jointly() -> None:
    x, y = _data(80, 4)
    with bnn.RNG(0).stream("init"):
        features = nn.Sequential(nn.Linear(1, 8), nn.Tanh(), nn.Linear(8, 2)).double()
    before = [p.detach().clone() for p in features.parameters()]
    posterior, history = gp(
        features,
        (x, y),
        likelihood=bnn.Gaussian(0.3, learn_std=True),
        method="exact",
        epochs=60,
        lr=0.02,
        progress=False,
    )
    assert any(not torch.equal(a, b) for a, b in zip(before, features.parameters(), strict=True))
    assert history.loss[-1] < history.loss[0]
    assert len(history.lengthscale) == 2  # one per feature
    prediction = bnn.predict_with_uncertainty(posterior, x, rng=0)
    assert bnn.evaluate.metrics.rmse(prediction, y) < 0.3


def test_deep_kernel_svgp_with_dropout_features_follows_only_its_rng() -> None:
    # The inducing points are features of training inputs: computed in eval mode, so a
    # dropout feature network draws nothing from the global generator there, and one rng
    # gives one posterior whatever the caller's global seed.
    x, y = _data(60, 5)

    def fit(global_seed: int) -> Tensor:
        torch.manual_seed(global_seed)
        with bnn.RNG(0).stream("init"):
            features = nn.Sequential(nn.Linear(1, 8), nn.Tanh(), nn.Dropout(0.2)).double()
        posterior, _ = gp(
            features,
            (x, y),
            likelihood=bnn.Gaussian(0.3),
            method="svgp",
            num_inducing=8,
            epochs=2,
            rng=0,
            progress=False,
        )
        return posterior.sample_functions(x[:5], 4, rng=1)

    assert torch.equal(fit(1), fit(2))


def test_too_large_an_exact_gp_is_refused_with_the_memory_it_needs() -> None:
    x = torch.zeros(50_000, 1, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"74\.5 GiB.*method='svgp'"):
        gp(None, (x, x[:, 0]), likelihood=bnn.Gaussian(0.1), method="exact")


def test_bad_input_is_refused() -> None:
    x, y = _data(10)
    with pytest.raises(ValueError, match="classification needs method='svgp'"):
        gp(None, (x, (y > 0).double()), likelihood=bnn.Bernoulli(), method="exact")
    with pytest.raises(TypeError, match="likelihood"):
        gp(None, (x, y), likelihood=bnn.HeteroscedasticGaussian())
    with pytest.raises(ValueError, match="same number"):
        gp(None, (x, y[:5]), likelihood=bnn.Gaussian(0.1))
    with pytest.raises(ValueError, match="kernel must be"):
        gp(None, (x, y), likelihood=bnn.Gaussian(0.1), kernel="periodic")
    with pytest.raises(ValueError, match="D independent outputs"):
        gp(None, (x, torch.stack([y, y], -1).unsqueeze(-1)), likelihood=bnn.Gaussian(0.1))
    with pytest.raises(ValueError, match=r"\[N, D\]"):
        gp(None, (x[:, :, None], y), likelihood=bnn.Gaussian(0.1))
    assert math.isfinite(float(y.sum()))


def test_joint_samples_at_many_close_float32_inputs_do_not_fail() -> None:
    """A float32 posterior covariance at 300 close inputs is numerically indefinite; sampling
    must still work, with the stated marginal variances."""
    generator = torch.Generator().manual_seed(3)
    x = torch.rand(200, 1, generator=generator) * 4 - 2
    y = torch.sin(2 * x[:, 0]) + 0.25 * torch.randn(200, generator=generator)
    posterior, _ = gp(
        None, (x, y), likelihood=bnn.Gaussian(0.3), train_hyperparameters=False, progress=False
    )
    grid = torch.linspace(-2, 2, 300).unsqueeze(-1)
    samples = posterior.sample_functions(grid, 4000, rng=0)
    assert samples.dtype == torch.float32 and bool(torch.isfinite(samples).all())
    _, covariance = posterior.functional_moments(grid)
    variance = covariance.diagonal().double()
    sample_variance = samples[..., 0].double().var(0)
    # the sample variance of 4000 normal draws: relative standard error sqrt(2/3999)
    relative = (sample_variance - variance).abs() / variance.clamp_min(1e-6)
    assert float(relative.max()) < 5 * math.sqrt(2 / 3999) + 0.01


def _blobs(n: int, seed: int) -> tuple[Tensor, Tensor]:
    """Three well-separated Gaussian blobs in 2-D (centres 2.6 apart, std 0.5), labels 0, 1, 2."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.tensor([[0.0, 1.5], [-1.3, -0.75], [1.3, -0.75]], dtype=torch.float64)
    y = torch.arange(n) % 3
    return centres[y] + 0.5 * torch.randn(n, 2, dtype=torch.float64, generator=g), y


def _multiclass(x: Tensor, y: Tensor, rng: int, epochs: int) -> GPPosterior:
    posterior, _ = gp(
        None,
        (x, y),
        likelihood=bnn.Categorical(),
        method="svgp",
        num_inducing=16,
        epochs=epochs,
        lr=0.05,
        ngd_lr=0.3,
        rng=rng,
        progress=False,
    )
    return posterior


def test_svgp_multiclass_classification() -> None:
    x, y = _blobs(300, 0)
    x_test, y_test = _blobs(300, 1)
    # batches of 99, 99, 99 and 3: a mini-batch of K points keeps its [N, K] layout
    posterior, history = gp(
        None,
        (x, y),
        likelihood=bnn.Categorical(),
        method="svgp",
        num_inducing=16,
        batch_size=99,
        epochs=4,
        lr=0.05,
        ngd_lr=0.3,
        rng=0,
        progress=False,
    )
    assert history.loss[-1] < history.loss[0]
    assert posterior.num_classes == 3
    assert isinstance(posterior.predictive_likelihood, bnn.Categorical)
    assert len(history.outputscale) == 3 and len(history.lengthscale) == 3  # one per class
    assert all(len(per_class) == 2 for per_class in history.lengthscale)  # ARD over 2 inputs
    prediction = bnn.predict_with_uncertainty(posterior, x_test, num_samples=64, rng=0)
    assert isinstance(prediction, bnn.likelihoods.ClassificationPrediction)  # its Categorical
    assert prediction.class_probs.shape == (64, 300, 3)
    torch.testing.assert_close(
        prediction.class_probs.sum(-1), torch.ones(64, 300, dtype=torch.float64)
    )
    assert bnn.evaluate.metrics.accuracy(prediction, y_test) >= 0.9
    true_class = prediction.probs.gather(-1, y_test[:, None]).mean()
    assert float(true_class) > 1 / 3 + 0.3
    assert posterior.sample_functions(x_test[:4], 5, rng=0).shape == (5, 4, 3)


def test_multiclass_training_and_sampling_follow_the_seed() -> None:
    x, y = _blobs(90, 2)
    points = x[:6]
    posteriors = []
    # the ELBO's Monte Carlo draws come from the stream "gp" of rng, not the global RNG's state
    for rng, global_seed in ((0, 1), (0, 2), (1, 1)):
        with torch.random.fork_rng():
            torch.manual_seed(global_seed)
            posteriors.append(_multiclass(x, y, rng, epochs=3))
    first, second, other = posteriors
    assert all(
        torch.equal(a, b) for a, b in zip(first.parameters(), second.parameters(), strict=True)
    )
    assert torch.equal(
        first.sample_functions(points, 7, rng=3), second.sample_functions(points, 7, rng=3)
    )
    assert not torch.equal(
        first.sample_functions(points, 7, rng=3), other.sample_functions(points, 7, rng=3)
    )
    assert not torch.equal(
        first.sample_functions(points, 7, rng=3), first.sample_functions(points, 7, rng=4)
    )
    assert any(
        not torch.equal(a, b) for a, b in zip(first.parameters(), other.parameters(), strict=True)
    )


def test_multiclass_samples_have_each_class_covariance_and_independent_classes() -> None:
    x, y = _blobs(60, 3)
    posterior = _multiclass(x, y, 0, epochs=3)
    points = torch.tensor([[0.0, 1.5], [0.3, 1.0], [0.0, 0.0], [2.5, 2.5]], dtype=torch.float64)
    mean, covariance = posterior.functional_moments(points)
    assert mean.shape == (3, 4) and covariance.shape == (3, 4, 4)
    # close points are correlated within a class (≈ 0.67), so shared normals across classes
    # would show as cross-class covariance
    assert float(covariance[:, 0, 1].min()) > 0.5 * float(covariance[:, 0, 0].max())
    s = 20_000
    samples = posterior.sample_functions(points, s, rng=0)
    assert samples.shape == (s, 4, 3)
    # all 12 outputs (class-major) at once: block-diagonal covariance, one block per class
    flat = samples.transpose(1, 2).reshape(s, 12)
    stated = torch.zeros(12, 12, dtype=torch.float64)
    for k in range(3):
        stated[4 * k : 4 * k + 4, 4 * k : 4 * k + 4] = covariance[k]
    # MCSE of a sample covariance of Gaussians: sqrt((Σ_ii Σ_jj + Σ_ij²) / S)
    variance = stated.diagonal()
    mcse = ((variance[:, None] * variance[None, :] + stated**2) / s).sqrt()
    empirical = torch.cov(flat.T)
    assert bool(((empirical - stated).abs() <= 4.5 * mcse).all())  # cross-class blocks ≈ 0
    assert bool(((flat.mean(0) - mean.flatten()).abs() <= 4.5 * (variance / s).sqrt()).all())


def test_bad_multiclass_input_is_refused() -> None:
    x, y = _blobs(30, 4)
    categorical = bnn.Categorical()
    with pytest.raises(ValueError, match="classification needs method='svgp'"):
        gp(None, (x, y), likelihood=categorical, method="exact")
    with pytest.raises(ValueError, match=r"\[0, 1\] for num_classes = 2.*raise num_classes"):
        gp(None, (x, y), likelihood=categorical, method="svgp", num_classes=2)
    one_hot = nn.functional.one_hot(y, 3)
    with pytest.raises(ValueError, match=r"one-hot.*argmax"):
        gp(None, (x, one_hot), likelihood=categorical, method="svgp")
    with pytest.raises(ValueError, match=r"one-hot.*argmax"):
        gp(None, (x, one_hot.double()), likelihood=categorical, method="svgp", num_classes=3)
    for bad in (1, 0, 2.5, True):
        with pytest.raises(ValueError, match=r"num_classes must be an int >= 2.*num_classes=K"):
            gp(None, (x, y), likelihood=categorical, num_classes=bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"single class.*num_classes=K"):
        gp(None, (x, torch.zeros_like(y)), likelihood=categorical, method="svgp")
    with pytest.raises(ValueError, match=r"lie in \[0, 1\], got values in \[-1, 1\]"):
        gp(None, (x, y - 1), likelihood=categorical, method="svgp")
    with pytest.raises(ValueError, match="whole numbers"):
        gp(None, (x, y + 0.5), likelihood=categorical, method="svgp")
    with pytest.raises(ValueError, match="num_classes is for likelihood=bnn.Categorical"):
        gp(None, (x, y.double()), likelihood=bnn.Gaussian(0.1), num_classes=3)
