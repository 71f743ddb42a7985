"""GPyTorch pieces of ``bnn.infer.gp``: likelihoods, kernels, means, the exact and sparse
variational models, and their training loops (``bnn.infer.gp`` checks the arguments and
wraps the result as a `GPPosterior`)."""

from __future__ import annotations

import contextlib
import copy
import math
import warnings
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn

from bnn._checks import check_positive
from bnn._progress import progress_bar
from bnn.infer.history import History
from bnn.infer.training._loop import NonFiniteLossError
from bnn.likelihoods import Bernoulli, Categorical, Gaussian, Likelihood


def gpytorch_module() -> Any:
    """The installed GPyTorch, or an ImportError naming the extra to install."""
    try:
        with warnings.catch_warnings():  # linear_operator scripts a helper with torch.jit
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            import gpytorch
    except ImportError as error:
        raise ImportError(
            "bnn.infer.gp needs GPyTorch: pip install bnn-torch[gp] (or pip install gpytorch)."
        ) from error
    return gpytorch


@contextlib.contextmanager
def _exact_linear_algebra() -> Iterator[None]:
    """Dense Cholesky everywhere (no CG, no Lanczos), GPyTorch's input warnings silenced."""
    gpytorch = gpytorch_module()
    with (
        warnings.catch_warnings(),
        gpytorch.settings.fast_computations(
            covar_root_decomposition=False, log_prob=False, solves=False
        ),
        gpytorch.settings.max_cholesky_size(2**62),
    ):
        warnings.filterwarnings("ignore", category=gpytorch.utils.warnings.GPInputWarning)
        # a sum with a low-rank kernel (LinearKernel) makes linear_operator factor the other
        # terms for a cache it may never use, adding jitter there and warning; the sums and
        # solves bnn uses are dense and exact
        warnings.filterwarnings("ignore", "A not p.d., added jitter", RuntimeWarning)
        yield


def _features(features: nn.Module, x: Tensor) -> Tensor:
    """Deep-kernel features ``[N, F]`` of ``x`` (``x`` itself for ``nn.Identity``)."""
    output: Tensor = features(x)
    if output.dim() == 1:
        output = output.unsqueeze(-1)
    return output


def _gp_likelihood(
    gpytorch: Any,
    likelihood: Likelihood,
    num_classes: int | None,
    min_noise: float = 1e-4,
    noise_prior: Any = None,
) -> Any:
    """GPyTorch's likelihood for ``likelihood``; a Gaussian's noise variance stays above
    ``min_noise`` while it learns (a fixed noise below it keeps its value)."""
    if isinstance(likelihood, Categorical):
        assert num_classes is not None

        class Softmax(gpytorch.likelihoods.SoftmaxLikelihood):  # type: ignore[misc]
            """``p(y | f) = softmax(f)``, ``f`` ``[..., N, K]``: the link of ``bnn.Categorical``.

            GPyTorch's ``forward`` transposes samples whose ``N`` equals ``K`` (a legacy
            layout), which would silently swap data and classes in a mini-batch of ``K``
            points; here the samples are always ``[..., N, K]`` (from the multitask output).
            """

            def forward(self, function_samples: Tensor, *args: Any, **kwargs: Any) -> Any:
                del args, kwargs
                return torch.distributions.Categorical(logits=function_samples)

        return Softmax(num_features=num_classes, num_classes=num_classes, mixing_weights=False)
    if isinstance(likelihood, Bernoulli):

        class LogitBernoulli(gpytorch.likelihoods.likelihood._OneDimensionalLikelihood):  # type: ignore[misc]
            """``p(y = 1 | f) = sigmoid(f)``: the link of ``bnn.Bernoulli``."""

            def forward(self, function_samples: Tensor, *args: Any, **kwargs: Any) -> Any:
                del args, kwargs
                return torch.distributions.Bernoulli(logits=function_samples)

        return LogitBernoulli()
    assert isinstance(likelihood, Gaussian)
    floor = min_noise if likelihood.learn_std else min(min_noise, 0.5 * float(likelihood.std) ** 2)
    noise = gpytorch.likelihoods.GaussianLikelihood(
        noise_prior=noise_prior, noise_constraint=gpytorch.constraints.GreaterThan(floor)
    )
    if not likelihood.learn_std:
        noise.raw_noise.requires_grad_(False)
    return noise


def _carried(likelihood: Likelihood, gp_likelihood: Any) -> Likelihood:
    if isinstance(likelihood, Bernoulli):
        return Bernoulli()
    if isinstance(likelihood, Categorical):
        return Categorical()
    return Gaussian(math.sqrt(float(gp_likelihood.noise.detach())))


def _kernel(gpytorch: Any, kernel: Any, dims: int, **batch: torch.Size) -> Any:
    """A scaled ARD kernel; ``batch_shape=[K]`` in ``batch`` makes ``K`` independent ones.
    A GPyTorch kernel object is used as it is (trained in place)."""
    if not isinstance(kernel, str):
        return kernel
    kernels = gpytorch.kernels
    base = (
        kernels.RBFKernel(ard_num_dims=dims, **batch)
        if kernel == "rbf"
        else kernels.MaternKernel(
            nu={"matern12": 0.5, "matern32": 1.5, "matern52": 2.5}[kernel],
            ard_num_dims=dims,
            **batch,
        )
    )
    return kernels.ScaleKernel(base, **batch)


def _mean(gpytorch: Any, mean: Any, **batch: torch.Size) -> Any:
    if not isinstance(mean, str):
        return mean
    means = gpytorch.means
    return means.ConstantMean(**batch) if mean == "constant" else means.ZeroMean(**batch)


def _exact_model(
    gpytorch: Any,
    x: Tensor,
    y: Tensor,
    features: nn.Module,
    kernel: Any,
    mean: Any,
    gp_likelihood: Any,
) -> Any:
    with torch.no_grad():
        dims = _features(features, x[:1]).shape[-1]

    class Exact(gpytorch.models.ExactGP):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__(x, y, gp_likelihood)
            self.features = features
            self.mean_module = _mean(gpytorch, mean)
            self.covar_module = _kernel(gpytorch, kernel, dims)

        def forward(self, inputs: Tensor) -> Any:
            z = _features(self.features, inputs)
            return gpytorch.distributions.MultivariateNormal(
                self.mean_module(z), self.covar_module(z)
            )

    return Exact()


def _svgp_model(
    gpytorch: Any,
    inducing: Tensor,
    features: nn.Module,
    kernel: Any,
    mean: Any,
    learn_inducing: bool,
    jitter: float | None,
    num_classes: int | None = None,
    natural: bool = True,
) -> Any:
    """An SVGP; for ``num_classes = K``, ``K`` independent latent GPs (a batch of ``K``); the
    variational distribution in natural parameters (for natural gradients) or by its
    Cholesky factor (for Adam)."""
    variational = gpytorch.variational
    batch: dict[str, torch.Size] = {}
    if num_classes is not None:
        batch["batch_shape"] = torch.Size([num_classes])
        if inducing.dim() == 2:  # the same initial locations for each class
            inducing = inducing.unsqueeze(0).repeat(num_classes, 1, 1)
        if inducing.dim() != 3 or inducing.shape[0] != num_classes:
            raise ValueError(
                f"inducing_points for {num_classes} classes must be [M, F] or "
                f"[{num_classes}, M, F], got {tuple(inducing.shape)}."
            )

    class SVGP(gpytorch.models.ApproximateGP):  # type: ignore[misc]
        def __init__(self) -> None:
            family = (
                variational.NaturalVariationalDistribution
                if natural
                else variational.CholeskyVariationalDistribution
            )
            distribution = family(inducing.shape[-2], **batch)
            strategy = variational.VariationalStrategy(
                self,
                inducing.clone(),
                distribution,
                learn_inducing_locations=learn_inducing,
                jitter_val=jitter,
            )
            if num_classes is not None:  # outputs [N, K]: one latent GP per class
                strategy = variational.IndependentMultitaskVariationalStrategy(
                    strategy, num_tasks=num_classes
                )
            super().__init__(strategy)
            self.features = features
            self.mean_module = _mean(gpytorch, mean, **batch)
            self.covar_module = _kernel(gpytorch, kernel, inducing.shape[-1], **batch)

        def forward(self, z: Tensor) -> Any:
            return gpytorch.distributions.MultivariateNormal(
                self.mean_module(z), self.covar_module(z)
            )

        def __call__(self, inputs: Tensor, **kwargs: Any) -> Any:
            return super().__call__(_features(self.features, inputs), **kwargs)

    return SVGP()


def _initialise(gp_model: Any, lengthscale: float | None, outputscale: float | None) -> None:
    if lengthscale is None and outputscale is None:
        return
    kernel = gp_model.covar_module
    dtype = kernel.raw_outputscale.dtype
    if lengthscale is not None:
        value = check_positive("lengthscale", lengthscale)
        kernel.base_kernel.lengthscale = torch.tensor(value, dtype=dtype)  # exact, not float32
    if outputscale is not None:
        value = check_positive("outputscale", outputscale)
        kernel.outputscale = torch.tensor(value, dtype=dtype)


def _hyperparameters(gp_model: Any, gp_likelihood: Any, exclude: set[int]) -> list[nn.Parameter]:
    unique = {id(p): p for p in [*gp_model.parameters(), *gp_likelihood.parameters()]}
    return [p for key, p in unique.items() if p.requires_grad and key not in exclude]


def _train_exact(
    gpytorch: Any,
    gp_model: Any,
    gp_likelihood: Any,
    x: Tensor,
    y: Tensor,
    *,
    epochs: int,
    lr: float,
    train_hyperparameters: bool,
    progress: bool,
    history: History,
    **_: Any,
) -> None:
    if not train_hyperparameters or epochs == 0:
        return
    objective = gpytorch.mlls.ExactMarginalLogLikelihood(gp_likelihood, gp_model)
    optimizer = torch.optim.Adam(_hyperparameters(gp_model, gp_likelihood, set()), lr=lr)
    gp_model.train()
    gp_likelihood.train()
    with _exact_linear_algebra():
        for epoch in progress_bar(range(epochs), desc="gp (exact)", disable=not progress):
            loss = -objective(gp_model(x), y)
            _step(optimizer, loss, epoch)
            history.record(loss=float(loss.detach()))


def _train_svgp(
    gpytorch: Any,
    gp_model: Any,
    gp_likelihood: Any,
    x: Tensor,  # noqa: ARG001 - the common signature; the batches come from data
    y: Tensor,  # noqa: ARG001
    *,
    epochs: int,
    lr: float,
    ngd_lr: float | None,
    batch_size: int | None,
    data: Any,
    train_hyperparameters: bool,
    rng: Any,
    progress: bool,
    history: History,
) -> None:
    n = data.size
    variational = list(gp_model.variational_parameters())
    natural = None if ngd_lr is None else gpytorch.optim.NGD(variational, num_data=n, lr=ngd_lr)
    others = _hyperparameters(gp_model, gp_likelihood, {id(p) for p in variational})
    if not train_hyperparameters:
        strategy = gp_model.variational_strategy
        inducing = getattr(strategy, "base_variational_strategy", strategy).inducing_points
        feature_ids = {id(p) for p in gp_model.features.parameters()}
        others = [p for p in others if p is inducing or id(p) in feature_ids]
    if natural is None:  # the Cholesky-parameterised distribution trains with Adam too
        others = variational + others
    adam = torch.optim.Adam(others, lr=lr) if others else None
    objective = gpytorch.mlls.VariationalELBO(gp_likelihood, gp_model, num_data=n)
    shuffle = rng.torch_generator("data")
    gp_model.train()
    gp_likelihood.train()
    with _exact_linear_algebra():
        for epoch in progress_bar(range(epochs), desc="gp (svgp)", disable=not progress):
            total = 0.0
            for inputs, targets in data.epoch(batch_size, shuffle):
                for optimizer in (natural, adam):
                    if optimizer is not None:
                        optimizer.zero_grad()
                loss = -objective(gp_model(inputs), targets)
                if not bool(torch.isfinite(loss)):
                    raise NonFiniteLossError(f"non-finite ELBO in epoch {epoch}; lower lr.")
                loss.backward()
                for optimizer in (natural, adam):
                    if optimizer is not None:
                        optimizer.step()
                total += float(loss.detach()) * len(inputs)
            history.record(loss=total / n)


def _step(optimizer: torch.optim.Optimizer, loss: Tensor, epoch: int) -> None:
    if not bool(torch.isfinite(loss)):
        raise NonFiniteLossError(f"non-finite marginal likelihood in epoch {epoch}; lower lr.")
    optimizer.zero_grad()
    loss.backward()  # type: ignore[no-untyped-call]
    optimizer.step()


def float64_exact_model(gp_model: Any) -> Any:
    """A float64 copy of an exact GP in eval mode, made once and kept on the model (outside
    its state dict); other models are returned as they are."""
    gpytorch = gpytorch_module()
    if not isinstance(gp_model, gpytorch.models.ExactGP):
        return gp_model
    if next(gp_model.parameters()).dtype == torch.float64:
        return gp_model
    cached = gp_model.__dict__.get("_bnn_float64")
    if cached is None:
        cached = copy.deepcopy(gp_model).double().eval()
        train_inputs = tuple(t.double() for t in cached.train_inputs)
        cached.set_train_data(train_inputs, cached.train_targets.double(), strict=False)
        gp_model.__dict__["_bnn_float64"] = cached
    return cached


def _cholesky(covariance: Tensor) -> Tensor:
    """A factor ``L`` with ``L Lᵀ ≈ covariance`` ``[N, N]``, computed in float64.

    A posterior covariance at many close inputs is numerically rank-deficient, and in float32
    its rounding errors make it indefinite. The factor is computed in float64 with jitter
    ``1e-10·mean(diag)`` and up, only if needed; if even ``1e-4·mean(diag)`` fails, the
    covariance's eigendecomposition with negative eigenvalues set to 0 gives the factor (the
    nearest positive semi-definite matrix).
    """
    matrix = covariance.double()
    matrix = 0.5 * (matrix + matrix.T)
    scale = float(matrix.diagonal().mean().abs()) or 1.0
    identity = torch.eye(matrix.shape[0], dtype=matrix.dtype, device=matrix.device)
    for exponent in range(-10, -3):
        jitter = 0.0 if exponent == -10 else scale * 10.0**exponent
        factor, info = torch.linalg.cholesky_ex(matrix + jitter * identity)
        if int(info) == 0:
            lower: Tensor = factor.to(covariance.dtype)
            return lower
    eigenvalues, eigenvectors = torch.linalg.eigh(matrix)
    if not bool(torch.isfinite(eigenvalues).all()):
        raise ValueError("the posterior covariance has non-finite entries; check the inputs.")
    root: Tensor = eigenvectors * eigenvalues.clamp_min(0).sqrt()
    return root.to(covariance.dtype)
