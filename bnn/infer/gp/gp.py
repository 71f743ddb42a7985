"""Gaussian processes on GPyTorch: exact regression, sparse variational GPs, deep kernels.

Needs the optional extra: ``pip install bnn-torch[gp]`` (GPyTorch).

* ``method="exact"`` — exact GP regression: ``f | y ~ N(K_*ᵀ (K + σ² I)⁻¹ y,
  K_** − K_*ᵀ (K + σ² I)⁻¹ K_*)`` (Rasmussen & Williams 2006, eq. 2.22–2.24), hyper-parameters
  by the exact marginal likelihood. Dense ``N × N`` Cholesky (no conjugate gradients: answers
  are exact to rounding), so ``N`` up to a few thousand; ``max_exact_bytes`` guards memory.
* ``method="svgp"`` — sparse variational GP (Hensman et al. 2013/2015): ``M`` inducing points,
  mini-batches, ELBO; the variational distribution is trained by natural gradients
  (Salimbeni et al. 2018; one step of ``ngd_lr=1`` on the full batch is the optimum for a
  Gaussian likelihood) and everything else by Adam. Regression (``bnn.Gaussian``), binary
  classification (``bnn.Bernoulli``, logit link, Gauss–Hermite expected log-likelihood) and
  multi-class classification (``bnn.Categorical``: ``K`` independent latent GPs, one per class,
  each with its own kernel, mean and inducing points, softmax link — GPyTorch's
  ``SoftmaxLikelihood`` without mixing weights — and a Monte Carlo expected log-likelihood
  drawn in the stream ``"gp"`` of ``rng``; Hensman et al. 2015).
* **Deep kernel learning** (Wilson et al. 2016): pass any ``nn.Module`` as ``model``; the GP
  runs on its features ``model(x)`` and the network trains jointly with the kernel.

The result, `GPPosterior`, is a `bnn.Posterior`: ``sample_functions`` draws joint function
samples ``[S, N, 1]`` (``[S, N, K]`` logits for ``K`` classes, the classes independent) from
the posterior over ``f`` at the given inputs (a Cholesky factor of the ``N × N`` posterior
covariance of each latent GP, standard normals from the ``"predict"`` generator of ``rng``),
and it carries its observation model (``bnn.Gaussian`` with the learned noise,
``bnn.Bernoulli``, ``bnn.Categorical``), so ``bnn.predict_with_uncertainty(gp_posterior, x)``
needs no likelihood.

Example:
    >>> posterior, history = bnn.infer.gp(None, (x, y), likelihood=bnn.Gaussian(0.1,
    ...                                   learn_std=True), method="exact", epochs=100, rng=0)
    >>> bnn.predict_with_uncertainty(posterior, x_test, rng=0).interval(0.95)
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import Tensor, nn

from bnn._checks import check_positive
from bnn.infer.gp._checks import (
    KERNELS,
    MEANS,
    METHODS,
    check_arguments,
    check_exact,
    check_input_shape,
    check_learned_noise,
    check_options,
)
from bnn.infer.gp._models import (
    _carried,
    _cholesky,
    _exact_linear_algebra,
    _exact_model,
    _features,
    _gp_likelihood,
    _initialise,
    _svgp_model,
    _train_exact,
    _train_svgp,
    float64_exact_model,
    gpytorch_module,
)
from bnn.infer.history import History
from bnn.likelihoods import Gaussian, Likelihood
from bnn.posterior._evaluate import eval_mode
from bnn.posterior.protocol import check_inputs
from bnn.random.default import RNGLike, resolve_rng
from bnn.random.rng import RNG

__all__ = ["KERNELS", "MEANS", "METHODS", "GPPosterior", "gp", "gpytorch_module"]


class GPPosterior(nn.Module):
    """The posterior of a GP (made by `gp`): joint function samples, its observation model.

    Attributes:
        gp_model: the GPyTorch model (``ExactGP`` or ``ApproximateGP``), in eval mode.
        features: the deep-kernel feature network (``nn.Identity`` for a plain GP).
        likelihood: the bnn observation model the posterior carries.
        gp_likelihood: GPyTorch's likelihood object used in training.
        num_classes: ``K``, the number of independent latent GPs of a multi-class
            classifier (``bnn.Categorical``); ``None`` for one latent GP.
    """

    def __init__(
        self,
        gp_model: Any,
        features: nn.Module,
        likelihood: Likelihood,
        gp_likelihood: Any,
        *,
        num_classes: int | None = None,
        input_shape: tuple[int, ...] | None = None,
    ) -> None:
        super().__init__()
        self.gp_model = gp_model
        self.features = features
        self.likelihood = likelihood
        self.gp_likelihood = gp_likelihood
        self.num_classes = num_classes
        self.input_shape = input_shape

    @property
    def predictive_likelihood(self) -> Likelihood:
        """``bnn.Gaussian(learned noise std)``, ``bnn.Bernoulli()`` or ``bnn.Categorical()``."""
        return self.likelihood

    def functional_moments(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Posterior mean ``[N]`` and covariance ``[N, N]`` of ``f`` at ``x``.

        The exact GP solves in float64 whatever the data's dtype (a copy of the model, made
        once): with duplicated inputs and a small noise, ``K + σ² I`` is too ill-conditioned
        for a float32 Cholesky, whose jitter would silently move the mean.

        For ``K`` classes: the mean ``[K, N]`` and covariance ``[K, N, N]`` of each class's
        latent GP (the classes are independent a posteriori).
        """
        reference = next(self.gp_model.parameters(), None)
        check_inputs(x, reference, 1)
        check_input_shape(x, self.input_shape)
        self.eval()
        with torch.no_grad(), _exact_linear_algebra():
            if self.num_classes is None:
                model = float64_exact_model(self.gp_model)
                distribution = model(x.to(next(model.parameters()).dtype))  # applies features
            else:  # the batch of K latent GPs under the multitask wrapper
                strategy = self.gp_model.variational_strategy.base_variational_strategy
                distribution = strategy(_features(self.gp_model.features, x))
            mean: Tensor = distribution.mean.to(x.dtype)
            covariance: Tensor = distribution.covariance_matrix.to(x.dtype)
        return mean, covariance

    def sample_functions(
        self,
        x: Tensor,
        num_samples: int,
        *,
        rng: RNGLike = None,
        memory_budget: int | None = None,  # noqa: ARG002 - one N×N factor, no chunks
    ) -> Tensor:
        """Joint posterior samples of ``f`` at ``x``: ``[S, N, 1]`` (``[S, N, K]`` logits).

        ``f = mean + L z`` with ``L`` the Cholesky factor of the posterior covariance (jitter
        ``1e-10·mean(diag)`` and up, only if the factorisation fails) and ``z`` standard
        normals from the generator ``"predict"`` of ``rng``. Cost ``O(N³)`` per call (per
        class for ``K`` classes: each class's latent GP has its own factor and its own
        normals, ``z`` of shape ``[S, K, N]``, so the classes are independent).
        """
        mean, covariance = self.functional_moments(x)
        if self.num_classes is not None:
            factors = torch.stack([_cholesky(block) for block in covariance])  # [K, N, N]
            generator = resolve_rng(rng).torch_generator("predict", x.device)
            z = torch.randn(
                num_samples, *mean.shape, generator=generator, dtype=mean.dtype, device=mean.device
            )
            # f[s, k] = mean[k] + L[k] z[s, k], returned as [S, N, K]
            samples = mean + torch.einsum("kij,skj->ski", factors, z)
            return samples.transpose(1, 2).contiguous()
        factor = _cholesky(covariance)
        generator = resolve_rng(rng).torch_generator("predict", x.device)
        z = torch.randn(
            num_samples, mean.shape[0], generator=generator, dtype=mean.dtype, device=mean.device
        )
        return (mean + z @ factor.T).unsqueeze(-1)


def gp(
    model: nn.Module | None,
    data: tuple[Tensor, Tensor],
    *,
    likelihood: Likelihood,
    num_classes: int | None = None,
    method: str = "exact",
    kernel: str = "rbf",
    mean: str = "constant",
    lengthscale: float | None = None,
    outputscale: float | None = None,
    train_hyperparameters: bool = True,
    epochs: int = 100,
    lr: float = 0.05,
    num_inducing: int = 128,
    inducing_points: Tensor | None = None,
    learn_inducing: bool = True,
    ngd_lr: float = 0.1,
    jitter: float | None = None,
    batch_size: int | None = None,
    max_exact_bytes: int = 2**31,
    min_noise: float = 1e-4,
    rng: RNGLike = None,
    progress: bool = True,
) -> tuple[GPPosterior, History]:
    """Fit a GP (exact or sparse variational, optionally on deep-kernel features).

    Args:
        model: ``None`` (a GP on ``x``) or a feature network ``nn.Module`` (deep kernel
            learning: the GP runs on ``model(x)`` ``[N, F]``; trained jointly, in place).
        data: ``(x, y)``: inputs ``[N, D]`` (any shape ``[N, ...]`` with a feature network),
            targets ``[N]`` or ``[N, 1]`` (0/1 for ``Bernoulli``; class indices
            ``0 … K−1`` for ``Categorical``, integer or whole-number floats, not one-hot).
        likelihood: ``bnn.Gaussian(std)`` (fixed noise) or ``bnn.Gaussian(std,
            learn_std=True)`` (noise learned from ``std``), ``bnn.Bernoulli()`` (binary, logit
            link) or ``bnn.Categorical()`` (``K`` classes: ``K`` independent latent GPs,
            softmax link); the classifiers need ``method="svgp"``.
        num_classes: ``K`` for ``bnn.Categorical`` (at least 2; ``None``: the largest label
            plus one — pass it when some classes are missing from the training data).
        method: ``"exact"`` or ``"svgp"``.
        kernel: ``"rbf"``, ``"matern12"``, ``"matern32"`` or ``"matern52"``, scaled by an
            output scale; one lengthscale per input feature (ARD); with ``K`` classes each
            latent GP has its own.
        mean: ``"constant"`` (learned) or ``"zero"``.
        lengthscale: initial lengthscale (``None``: GPyTorch's default, ≈ 0.69).
        outputscale: initial output scale, the prior variance (``None``: GPyTorch's
            default, ≈ 0.69).
        train_hyperparameters: ``False`` keeps kernel, mean and noise fixed (exact: nothing
            is trained; SVGP: only the variational distribution).
        epochs: passes over the data (exact: full-batch steps).
        lr: Adam's learning rate (hyper-parameters, inducing locations, features).
        num_inducing: ``M`` inducing points for SVGP, initialised at ``M`` training inputs
            drawn without replacement from the generator ``"inducing"`` of ``rng``.
        inducing_points: explicit initial inducing locations ``[M, F]`` (in feature space;
            for ``K`` classes repeated for each class, or ``[K, M, F]``).
        learn_inducing: optimise the inducing locations.
        ngd_lr: natural-gradient step of the variational distribution (1 is exact in one
            full-batch step for a Gaussian likelihood; smaller for mini-batches and the
            classifiers).
        jitter: diagonal jitter SVGP adds to ``K_zz`` and the predictive covariance
            (``None``: GPyTorch's ``variational_cholesky_jitter``, 1e-6 in float64, 1e-4 in
            float32); SVGP's moments differ from the exact ones by about this much.
        batch_size: SVGP mini-batch size (``None``: full batch); shuffled by the generator
            ``"data"`` of ``rng``.
        max_exact_bytes: refuse an exact GP whose ``N × N`` matrices would need more memory.
        min_noise: the smallest noise variance ``σ²`` a learned Gaussian noise may reach
            (GPyTorch's default constraint, ``1e-4``; a fixed ``bnn.Gaussian(σ)`` is kept as
            given). A learned noise at this floor or below 1 % of the targets' standard
            deviation warns: the GP then interpolates its training data (duplicated inputs,
            rounded targets), and its predictive density spikes at training inputs.
        rng: randomness: inducing points (generator ``"inducing"``), shuffling (generator
            ``"data"``), GPyTorch's draws in training (stream ``"gp"``: the variational
            initialisation and, for ``Categorical``, the Monte Carlo samples of the expected
            log-likelihood), so the same ``rng`` trains the same posterior; the feature
            network's initialisation is the caller's (build it in ``rng.stream("init")``).
        progress: show a tqdm bar.

    Returns:
        ``(GPPosterior, History)``; ``history.loss`` per epoch (negative marginal
        log-likelihood or negative ELBO per datum), ``history.seconds``, and the learned
        ``noise_std``, ``lengthscale`` (a list of ``F``), ``outputscale`` (a float); for
        ``K`` classes ``lengthscale`` is ``K`` lists of ``F`` and ``outputscale`` a list of
        ``K``. ``posterior.sample_functions(x, S)`` gives ``[S, N, 1]`` (``[S, N, K]``
        logits for ``K`` classes).

    Raises:
        ImportError: GPyTorch is not installed (``pip install bnn-torch[gp]``).
        ValueError: an exact GP larger than ``max_exact_bytes`` (with the memory it needs),
            a classifier with ``method="exact"``, invalid data (labels outside ``0 … K−1``,
            one-hot targets) or options.

    Example:
        >>> posterior, _ = gp(None, (x, y), likelihood=bnn.Gaussian(0.1, learn_std=True),
        ...                   method="svgp", num_inducing=64, batch_size=256, epochs=20, rng=0)
    """
    start = time.perf_counter()
    x, y, num_classes = check_arguments(model, data, likelihood, method, kernel, mean, num_classes)
    check_options(epochs, num_inducing, lr, ngd_lr, jitter, batch_size)
    check_positive("min_noise", min_noise)
    if method == "exact":
        check_exact(x, likelihood, max_exact_bytes)
    gpytorch = gpytorch_module()
    generator = resolve_rng(rng)
    features = nn.Identity() if model is None else model
    gp_likelihood = _gp_likelihood(gpytorch, likelihood, num_classes, min_noise)
    if method == "exact":
        gp_model = _exact_model(gpytorch, x, y, features, kernel, mean, gp_likelihood)
    else:
        inducing_points = _inducing_points(
            model, features, x, inducing_points, num_inducing, generator
        )
        gp_model = _svgp_model(
            gpytorch, inducing_points, features, kernel, mean, learn_inducing, jitter, num_classes
        )
    gp_model = gp_model.to(device=x.device, dtype=x.dtype)
    gp_likelihood = gp_likelihood.to(device=x.device, dtype=x.dtype)
    if isinstance(likelihood, Gaussian):  # set in the data's dtype, not rounded via float32
        gp_likelihood.noise = likelihood.std.detach().to(x.dtype) ** 2
    _initialise(gp_model, lengthscale, outputscale)
    history = History("gp", metrics={"loss": []}, extras={"method": method})
    train = _train_exact if method == "exact" else _train_svgp
    with generator.stream("gp"):  # GPyTorch's own draws (variational initialisation)
        train(
            gpytorch,
            gp_model,
            gp_likelihood,
            x,
            y,
            epochs=epochs,
            lr=lr,
            ngd_lr=ngd_lr,
            batch_size=batch_size,
            train_hyperparameters=train_hyperparameters,
            rng=generator,
            progress=progress,
            history=history,
        )
    posterior = _trained_posterior(gp_model, features, likelihood, gp_likelihood, num_classes, x)
    if isinstance(likelihood, Gaussian) and likelihood.learn_std:
        check_learned_noise(float(gp_likelihood.noise.detach()) ** 0.5, y, min_noise)
    _record_hyperparameters(history, gp_model, posterior.likelihood, num_classes, start)
    return posterior, history


def _trained_posterior(
    gp_model: Any,
    features: nn.Module,
    likelihood: Likelihood,
    gp_likelihood: Any,
    num_classes: int | None,
    x: Tensor,
) -> GPPosterior:
    """The trained model in eval mode as a `GPPosterior` carrying its observation model."""
    gp_model.eval()
    gp_likelihood.eval()
    return GPPosterior(
        gp_model,
        features,
        _carried(likelihood, gp_likelihood),
        gp_likelihood,
        num_classes=num_classes,
        input_shape=tuple(x.shape[1:]),
    )


def _inducing_points(
    model: nn.Module | None,
    features: nn.Module,
    x: Tensor,
    given: Tensor | None,
    num_inducing: int,
    generator: RNG,
) -> Tensor:
    """``given``, or ``num_inducing`` training inputs (in feature space) drawn without
    replacement; the features in eval mode (no dropout draws, no batch-norm updates)."""
    if given is not None:
        with torch.no_grad(), eval_mode(features):
            dims = (_features(features, x[:1]) if model is not None else x[:1]).shape[-1]
        if not isinstance(given, Tensor) or given.dim() not in (2, 3) or given.shape[-1] != dims:
            shape = tuple(given.shape) if isinstance(given, Tensor) else type(given).__name__
            raise ValueError(
                f"inducing_points must be [M, {dims}] (or [K, M, {dims}] for K classes): "
                f"locations in the {dims}-dimensional feature space; got {shape}."
            )
        return given
    with torch.no_grad(), eval_mode(features):
        inputs = _features(features, x) if model is not None else x
    n = x.shape[0]
    chosen = torch.randperm(n, generator=generator.torch_generator("inducing"))
    return inputs[chosen[: min(num_inducing, n)].to(x.device)]


def _record_hyperparameters(
    history: History, gp_model: Any, carried: Likelihood, num_classes: int | None, start: float
) -> None:
    """Seconds since ``start`` and the learned lengthscales, output scales and Gaussian noise,
    in ``history.extras``."""
    kernel_module = gp_model.covar_module
    lengthscales = kernel_module.base_kernel.lengthscale.detach()
    outputscales = kernel_module.outputscale.detach()
    history.extras.update(
        seconds=time.perf_counter() - start,
        lengthscale=lengthscales.flatten().tolist()
        if num_classes is None
        else lengthscales.reshape(num_classes, -1).tolist(),
        outputscale=float(outputscales) if num_classes is None else outputscales.tolist(),
    )
    if isinstance(carried, Gaussian):
        history.extras["noise_std"] = float(carried.std)
