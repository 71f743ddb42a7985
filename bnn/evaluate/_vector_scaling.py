"""Vector scaling (Guo et al. 2017): one scale and one bias per class on a classifier's logits,
fitted on a calibration set; Platt scaling for a Bernoulli logit.

Temperature scaling has one parameter and cannot move the arg-max; vector scaling has ``2K``
and can correct a classifier that is over-confident about some classes and under-confident
about others, or biased towards one (the arg-max may change). Each function sample's logits
``z_s`` become ``w ⊙ z_s + b`` before the softmax; the ``S`` samples are averaged after it
(a Bayesian predictive is a mixture of categoricals). ``w`` and ``b`` minimise the
calibration-set NLL of that mixture (L-BFGS, float64, samples drawn once). ``b`` is reported
centred (a constant added to every class's logit changes nothing).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from bnn.evaluate._scaling import LogitMap, calibration_logits, minimise
from bnn.likelihoods import Bernoulli, Likelihood, class_indices
from bnn.posterior.model import as_posterior
from bnn.posterior.protocol import Posterior
from bnn.random.default import RNGLike

__all__ = ["VectorScaled", "vector_scale"]


class VectorScaled(LogitMap):
    """A classifier posterior whose logits are scaled and shifted per class.

    Made by `vector_scale`. ``sample_functions(x, S)`` returns the wrapped posterior's logits
    ``[S, N, K]`` times ``scale`` plus ``bias`` (each ``[K]``; ``[1]`` for a Bernoulli logit).

    Attributes:
        scale: per-class factor ``w`` ``[K]``.
        bias: per-class shift ``b`` ``[K]``, centred for a categorical.
        nll_before: calibration-set NLL of the wrapped posterior.
        nll_after: calibration-set NLL after scaling.
    """

    def __init__(
        self,
        posterior: Posterior,
        scale: Tensor,
        bias: Tensor,
        likelihood: Likelihood | None = None,
    ) -> None:
        super().__init__(posterior, likelihood)
        if scale.shape != bias.shape or scale.dim() != 1:
            raise ValueError(
                f"scale and bias must be vectors of one length, got {tuple(scale.shape)} and "
                f"{tuple(bias.shape)}."
            )
        if not bool(torch.isfinite(scale).all() and torch.isfinite(bias).all()):
            raise ValueError("scale and bias must be finite.")
        self.scale = scale.detach()
        self.bias = bias.detach()

    def transform(self, logits: Tensor) -> Tensor:
        """Each sample's logits times ``scale`` plus ``bias``."""
        return logits * self.scale.to(logits) + self.bias.to(logits)


def vector_scale(
    posterior: Posterior,
    x_cal: Tensor,
    y_cal: Tensor,
    *,
    likelihood: Likelihood | None = None,
    num_samples: int = 100,
    rng: RNGLike = None,
) -> VectorScaled:
    """Fit a scale and a bias per class on a calibration set; wrap the posterior.

    Minimises ``NLL(w, b) = −1/n Σ_i log (1/S) Σ_s softmax(w ⊙ z_s(x_i) + b)[y_i]`` from
    ``w = 1, b = 0`` by L-BFGS in float64 (for a Bernoulli logit: ``σ(w z + b)``, Platt
    scaling). Use a calibration set of at least tens of points per class: ``2K`` parameters
    overfit a small one.

    Args:
        posterior: any `bnn.Posterior` (or a model) whose outputs are logits ``[N, K]`` (one
            logit per input for a Bernoulli likelihood).
        x_cal: calibration inputs ``[n, ...]``, not used in training.
        y_cal: class indices ``[n]`` (0/1 for a Bernoulli likelihood).
        likelihood: ``bnn.Categorical()`` or ``bnn.Bernoulli()`` (``None``: the one the
            posterior carries, else ``Categorical``; a different one than the posterior
            carries is refused). The scaled posterior carries it.
        num_samples: function samples ``S`` drawn at ``x_cal``.
        rng: randomness of those samples.

    Returns:
        `VectorScaled` with the fitted ``scale`` and ``bias``.

    Raises:
        TypeError / ValueError: not a classification likelihood, mismatched or invalid
            targets, an empty calibration set, a non-finite objective.

    Example:
        >>> scaled = vector_scale(posterior, x_cal, y_cal, likelihood=bnn.Categorical(), rng=0)
        >>> scaled.scale, scaled.bias
    """
    posterior = as_posterior(posterior)  # a model (MCDropout, Bayesian layers) or a posterior
    likelihood, logits = calibration_logits(
        posterior, likelihood, x_cal, y_cal, num_samples, rng, "vector scaling"
    )
    binary = isinstance(likelihood, Bernoulli)
    logits = logits.reshape(*logits.shape[:2], -1)  # [S, n, K] (K = 1: a Bernoulli logit)
    if binary and logits.shape[-1] != 1:
        raise ValueError(
            f"a Bernoulli likelihood needs one logit per input, got {logits.shape[-1]}."
        )
    classes = 2 if binary else logits.shape[-1]
    labels = class_indices(y_cal, logits.shape[1], classes).to(logits.device)
    index = labels.view(1, -1, 1).expand(logits.shape[0], -1, 1)

    def nll(parameters: Tensor) -> Tensor:
        scale, bias = parameters.chunk(2)
        scaled = logits * scale + bias
        if binary:  # softmax([0, z]) = [1 − σ(z), σ(z)]
            scaled = torch.cat([torch.zeros_like(scaled), scaled], -1)
        log_probs = scaled.log_softmax(-1).gather(-1, index).squeeze(-1)
        return -(torch.logsumexp(log_probs, 0) - math.log(logits.shape[0])).mean()

    start = torch.cat([torch.ones(logits.shape[-1]), torch.zeros(logits.shape[-1])])
    parameters = minimise(nll, start.to(logits))
    scale, bias = parameters.chunk(2)
    if not binary:
        bias = bias - bias.mean()
    scaled = VectorScaled(posterior, scale, bias, likelihood)
    scaled.nll_before = float(nll(start.to(logits)))
    scaled.nll_after = float(nll(parameters))
    return scaled
