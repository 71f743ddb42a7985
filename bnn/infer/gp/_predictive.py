"""The GP's predictive at each input in closed form: per-input moments, no ``N × N`` matrix.

``bnn.predict_with_uncertainty`` reports per-input predictive distributions, so a GP needs
only the posterior mean and the *diagonal* of the posterior covariance of ``f`` at the test
inputs: ``O(N_test · N_train)`` memory for an exact GP (``O(N_test · M)`` for SVGP), computed
in blocks of test inputs sized to the memory budget. Joint samples (an ``N × N`` Cholesky)
are drawn only by ``GPPosterior.sample_functions``, when a caller asks for them.

* Regression (``bnn.Gaussian``): the exact Gaussian ``N(μ(x), σ_f²(x) + σ²)`` per input — the
  predictive GPyTorch's ``likelihood(model(x))`` gives, marginal by marginal; its ``samples``
  are draws of ``f`` per input (independent across inputs).
* Classification: the per-input marginals of ``f`` pushed through the link by Monte Carlo
  (``S`` draws per input, as GPyTorch's likelihoods do), without the joint factor.

Example:
    >>> prediction = bnn.predict_with_uncertainty(gp_posterior, x_test)   # exact, no sampling
    >>> prediction.std, prediction.log_likelihood(y_test)
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from bnn.infer.gp._models import _exact_linear_algebra, _features, float64_exact_model
from bnn.likelihoods import Gaussian, Likelihood, Prediction
from bnn.posterior._glm import glm_prediction

__all__ = ["gp_prediction", "marginal_moments"]

_BLOCK_COPIES = 4  # cross-covariance, its solve, and two workspaces of the same size in flight


def marginal_moments(
    gp_model: Any, x: Tensor, *, num_classes: int | None, memory_budget: int
) -> tuple[Tensor, Tensor]:
    """Posterior mean and variance of ``f`` at each input: ``[N]`` each (``[K, N]``).

    Blocks of test inputs are sized so that their ``block × N_train`` cross-covariances (or
    ``block × M`` for SVGP) fit ``memory_budget``; an exact GP solves in float64 (see
    ``GPPosterior.functional_moments``).
    """
    model = float64_exact_model(gp_model) if num_classes is None else gp_model
    dtype = next(model.parameters()).dtype
    block = _block_size(model, dtype, memory_budget)
    exact = _ExactSolve.of(model) if hasattr(model, "train_inputs") else None
    means, variances = [], []
    with torch.no_grad(), _exact_linear_algebra():
        for chunk in torch.split(x, block):
            if exact is not None:
                mean, variance = exact.moments(model, chunk.to(dtype))
            else:
                distribution = _latent_distribution(model, chunk.to(dtype), num_classes)
                mean, variance = distribution.mean, distribution.variance
            means.append(mean.to(x.dtype))
            variances.append(variance.clamp_min(0).to(x.dtype))
    return torch.cat(means, -1), torch.cat(variances, -1)


def gp_prediction(
    mean: Tensor,
    variance: Tensor,
    likelihood: Likelihood | None,
    num_samples: int,
    generator: torch.Generator,
) -> Prediction:
    """The predictive from per-input moments of ``f`` (`marginal_moments`).

    Args:
        mean: ``[N]`` (one latent GP) or ``[K, N]`` (``K`` classes).
        variance: the same shape as ``mean``.
        likelihood: the observation model (``None``: noise-free regression).
        num_samples: draws of ``f`` per input the prediction carries.
        generator: their source (the ``"predict"`` generator of the caller's ``rng``).

    Returns:
        For regression a one-component Gaussian prediction (``loc``, ``scale`` ``[1, N, 1]``;
        ``epistemic`` the variance of ``f``, ``aleatoric`` the noise); for classification the
        likelihood's prediction from ``S`` per-input draws ``[S, N, 1]`` (``[S, N, K]``).
    """
    columns = mean.unsqueeze(-1) if mean.dim() == 1 else mean.T  # [N, 1] or [N, K]
    if likelihood is None or isinstance(likelihood, Gaussian):
        covariance = variance.reshape(-1, 1, 1)
        return glm_prediction(columns, covariance, likelihood, num_samples, generator, "probit")
    stds = (variance.unsqueeze(-1) if variance.dim() == 1 else variance.T).sqrt()
    noise = torch.randn(
        (num_samples, *columns.shape), generator=generator, dtype=mean.dtype, device=mean.device
    )
    return likelihood.predict(columns + stds * noise)


class _ExactSolve:
    """The exact GP's training solve, made once per (float64) model and kept on it.

    ``L`` is the Cholesky factor of ``K + σ² I`` on the training features and
    ``α = (K + σ² I)⁻¹ (y − m)``; at test features ``z``: mean ``m(z) + K_z α`` and variance
    ``k(z, z) − ‖L⁻¹ K_zᵀ‖²`` per input (R&W 2006, Algorithm 2.1) — GPyTorch's exact
    predictive, marginal by marginal, without its test-by-test covariance.
    """

    def __init__(self, model: Any) -> None:
        with torch.no_grad(), _exact_linear_algebra():
            self.features = _features(model.features, model.train_inputs[0])
            covariance = model.covar_module(self.features).to_dense()
            noise = model.likelihood.noise.reshape(()).to(covariance)
            self.factor = _train_cholesky(covariance + noise * torch.eye(len(covariance)).to(noise))
            residual = (model.train_targets - model.mean_module(self.features)).unsqueeze(-1)
            self.alpha = torch.cholesky_solve(residual, self.factor).squeeze(-1)

    @classmethod
    def of(cls, model: Any) -> _ExactSolve:
        cached = model.__dict__.get("_bnn_exact_solve")
        if cached is None:
            cached = model.__dict__["_bnn_exact_solve"] = cls(model)
        return cached  # type: ignore[no-any-return]

    def moments(self, model: Any, x: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and variance of ``f`` at inputs ``x`` ``[B, ...]``: ``[B]`` each."""
        z = _features(model.features, x)
        cross = model.covar_module(z, self.features).to_dense()  # [B, N_train]
        mean = model.mean_module(z) + cross @ self.alpha
        whitened = torch.linalg.solve_triangular(self.factor, cross.T, upper=False)
        prior: Tensor = model.covar_module(z, diag=True)
        return mean, prior - whitened.square().sum(0)


def _train_cholesky(matrix: Tensor) -> Tensor:
    """The Cholesky factor of ``K + σ² I``, with jitter ``1e-10·mean(diag)`` and up only if
    the plain factorisation fails (as GPyTorch's ``psd_safe_cholesky``)."""
    scale = float(matrix.diagonal().mean().abs()) or 1.0
    identity = torch.eye(matrix.shape[0], dtype=matrix.dtype, device=matrix.device)
    for exponent in range(-10, -3):
        jitter = 0.0 if exponent == -10 else scale * 10.0**exponent
        factor, info = torch.linalg.cholesky_ex(matrix + jitter * identity)
        if int(info) == 0:
            lower: Tensor = factor
            return lower
    raise ValueError(
        "the training covariance K + σ² I is not positive definite even with jitter; "
        "raise min_noise or check the inputs for NaN."
    )


def _latent_distribution(model: Any, x: Tensor, num_classes: int | None) -> Any:
    """GPyTorch's posterior over ``f`` at ``x`` (a batch of ``K`` for a multi-class SVGP)."""
    if num_classes is None:
        return model(x)  # applies the deep-kernel features itself
    strategy = model.variational_strategy.base_variational_strategy
    return strategy(_features(model.features, x))


def _block_size(model: Any, dtype: torch.dtype, memory_budget: int) -> int:
    """Test inputs per block: ``_BLOCK_COPIES`` cross-covariances of ``block × points``."""
    train_inputs = getattr(model, "train_inputs", None)
    if train_inputs is not None:
        points = int(train_inputs[0].shape[0])
    else:
        strategy = model.variational_strategy
        inducing = getattr(strategy, "base_variational_strategy", strategy).inducing_points
        points = int(inducing.shape[-2]) * (int(inducing.shape[0]) if inducing.dim() == 3 else 1)
    per_input = _BLOCK_COPIES * max(points, 1) * torch.finfo(dtype).bits // 8
    return max(1, memory_budget // per_input)
