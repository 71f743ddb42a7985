"""The linearised (GLM) predictive of a Gaussian weight posterior (Immer et al. 2021).

Linearising the network around the posterior mean, ``f(x, θ) ≈ f(x, θ̄) + J(x)(θ − θ̄)``,
turns ``θ ~ N(θ̄, Σ)`` into a Gaussian over function values at each input,
``N(f(x, θ̄), J Σ Jᵀ)`` (per input ``[C, C]``). With a Gaussian likelihood the predictive is
that Gaussian plus the noise, in closed form; with a categorical one the softmax of it is
approximated by the probit approximation ``softmax(μ / sqrt(1 + π/8 · diag Σ_f))``
(MacKay 1992; Spiegelhalter & Lauritzen 1990) or averaged over function samples.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from bnn.likelihoods import (
    Categorical,
    ClassificationPrediction,
    Gaussian,
    Likelihood,
    Prediction,
    RegressionPrediction,
)

__all__ = [
    "LinearisedRegressionPrediction",
    "ProbitPrediction",
    "check_glm_likelihood",
    "glm_prediction",
]


@dataclass(frozen=True)
class LinearisedRegressionPrediction(RegressionPrediction):
    """The Gaussian ``N(f(x, θ̄), J Σ Jᵀ + σ²)`` per output: one component, exact moments.

    ``loc`` and ``scale`` are ``[1, N, ...]`` (mean and total std), so densities, CDFs and
    intervals are those of the Gaussian; ``epistemic`` is ``J Σ Jᵀ`` and ``aleatoric`` is
    ``σ²``. ``samples`` are draws from the linearised function distribution ``[S, N, ...]``.

    Attributes:
        function_variance: ``diag(J Σ Jᵀ)`` ``[N, ...]``.
        noise_variance: ``σ²``, broadcastable to ``[N, ...]`` (0 without a likelihood).
    """

    function_variance: Tensor | None = None
    noise_variance: Tensor | None = None

    @property
    def epistemic(self) -> Tensor:
        """``diag(J Σ Jᵀ)`` ``[N, ...]``."""
        assert self.function_variance is not None
        return self.function_variance

    @property
    def aleatoric(self) -> Tensor:
        """``σ²`` ``[N, ...]``."""
        assert self.noise_variance is not None and self.function_variance is not None
        return self.noise_variance.expand_as(self.function_variance)

    def rescale(self, shift: Tensor | float, scale: Tensor | float) -> RegressionPrediction:
        """The prediction of ``shift + scale · y`` (see ``RegressionPrediction.rescale``)."""
        base = super().rescale(shift, scale)
        factor = torch.as_tensor(scale, dtype=self.loc.dtype, device=self.loc.device)
        assert self.function_variance is not None and self.noise_variance is not None
        return LinearisedRegressionPrediction(
            samples=self.samples * factor + shift,
            loc=base.loc,
            scale=base.scale,
            function_variance=self.function_variance * factor**2,
            noise_variance=self.noise_variance * factor**2,
        )


@dataclass(frozen=True)
class ProbitPrediction(ClassificationPrediction):
    """Probit-approximated class probabilities of a linearised network.

    ``class_probs`` is ``[1, N, K]``: ``softmax(μ / sqrt(1 + π/8 · diag Σ_f))``, so ``probs``
    and ``entropy`` are the probit predictive; ``expected_entropy`` (hence the mutual
    information) averages over ``sample_probs`` ``[S, N, K]``, the softmax of samples from the
    linearised function distribution (``samples``).
    """

    sample_probs: Tensor | None = None

    @property
    def expected_entropy(self) -> Tensor:
        """``E_f H[softmax f]`` ``[N]`` over the linearised function samples."""
        assert self.sample_probs is not None
        probs = self.sample_probs
        return -(probs * torch.log(probs.clamp_min(1e-45))).sum(-1).mean(0)


def check_glm_likelihood(likelihood: Likelihood | None) -> None:
    """Refuse a likelihood the linearised predictive has no form for.

    Raises:
        ValueError: anything but ``None``, `bnn.Gaussian` or `bnn.Categorical`.
    """
    if likelihood is None or isinstance(likelihood, Gaussian | Categorical):
        return
    raise ValueError(
        f"the linearised (GLM) predictive supports bnn.Gaussian and bnn.Categorical "
        f"likelihoods, not {type(likelihood).__name__}; set posterior.predictive = 'samples'."
    )


def glm_prediction(
    mean: Tensor,
    covariance: Tensor,
    likelihood: Likelihood | None,
    num_samples: int,
    generator: torch.Generator,
    link: str,
) -> Prediction:
    """The predictive from the linearised function distribution at ``N`` inputs.

    Args:
        mean: ``f(x, θ̄)`` ``[N, *out]``.
        covariance: ``J Σ Jᵀ`` ``[N, C, C]`` with ``C = prod(out)``.
        likelihood: ``None`` (noise-free regression), `bnn.Gaussian` or `bnn.Categorical`.
        num_samples: function samples ``S`` the prediction carries.
        generator: source of the function samples.
        link: ``"probit"`` (closed form) or ``"mc"`` (average over the samples), categorical.

    Returns:
        `LinearisedRegressionPrediction`, `ProbitPrediction` or ``ClassificationPrediction``.
    """
    check_glm_likelihood(likelihood)
    n = mean.shape[0]
    flat = mean.reshape(n, -1)
    eigenvalues, vectors = torch.linalg.eigh(covariance)
    root = vectors * eigenvalues.clamp_min(0).sqrt().unsqueeze(-2)  # [N, C, C]
    noise = torch.randn(
        (num_samples, *flat.shape), generator=generator, dtype=mean.dtype, device=mean.device
    )
    samples = (flat + torch.einsum("ncd,snd->snc", root, noise)).reshape(num_samples, *mean.shape)
    variance = covariance.diagonal(dim1=-2, dim2=-1).clamp_min(0).reshape(mean.shape)
    if isinstance(likelihood, Categorical):
        if link == "mc":
            return likelihood.predict(samples)
        probs = (mean / (1 + math.pi / 8 * variance).sqrt()).softmax(-1)
        return ProbitPrediction(
            samples=samples,
            class_probs=probs.unsqueeze(0),
            sample_probs=samples.softmax(-1),
        )
    noise_variance = (
        likelihood.std.detach().to(mean) ** 2
        if isinstance(likelihood, Gaussian)
        else torch.zeros((), dtype=mean.dtype, device=mean.device)
    )
    return LinearisedRegressionPrediction(
        samples=samples,
        loc=mean.unsqueeze(0),
        scale=(variance + noise_variance).sqrt().unsqueeze(0),
        function_variance=variance,
        noise_variance=noise_variance,
    )
