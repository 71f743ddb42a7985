"""`GPPosterior`: the trained GP as a `bnn.Posterior` (made by `bnn.infer.gp.gp`).

Per-input predictives in closed form (``closed_form_prediction``, used by
``bnn.predict_with_uncertainty``: no ``N × N`` matrix), joint function samples on request
(``sample_functions``: one Cholesky factor of the ``N × N`` posterior covariance), and the
observation model it was trained with (``predictive_likelihood``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from bnn.infer.gp._checks import check_input_shape
from bnn.infer.gp._models import (
    _cholesky,
    _exact_linear_algebra,
    _features,
    float64_exact_model,
)
from bnn.infer.gp._predictive import gp_prediction, marginal_moments
from bnn.likelihoods import Likelihood, Prediction
from bnn.posterior.protocol import check_inputs, check_memory_budget
from bnn.random.default import RNGLike, resolve_rng
from bnn.random.rng import RNG

__all__ = ["GPPosterior"]


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

    def marginal_moments(
        self, x: Tensor, *, memory_budget: int | None = None
    ) -> tuple[Tensor, Tensor]:
        """Posterior mean and variance of ``f`` at each input, ``[N]`` each (``[K, N]``).

        No ``N × N`` matrix: blocks of inputs sized to ``memory_budget`` (bytes; ``None``: the
        default for ``x``'s device), each costing ``block × N_train`` (``block × M`` for SVGP).
        """
        reference = next(self.gp_model.parameters(), None)
        check_inputs(x, reference, 1)
        check_input_shape(x, self.input_shape)
        budget = check_memory_budget(memory_budget, x.device)
        self.eval()
        return marginal_moments(
            self.gp_model, x, num_classes=self.num_classes, memory_budget=budget
        )

    def closed_form_prediction(
        self,
        x: Tensor,
        *,
        likelihood: Likelihood | None,
        num_samples: int,
        rng: RNG,
        memory_budget: int,
    ) -> Prediction:
        """The predictive at each input from the per-input moments of ``f`` (never ``N × N``).

        Regression: the exact Gaussian ``N(μ, σ_f² + σ²)`` per input (GPyTorch's
        ``likelihood(model(x))``, marginal by marginal); classification: ``num_samples``
        draws of each input's ``f`` through the link. See ``bnn.infer.gp._predictive``.
        """
        mean, variance = self.marginal_moments(x, memory_budget=memory_budget)
        generator = rng.torch_generator("predict", x.device)
        return gp_prediction(mean, variance, likelihood, num_samples, generator)

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
