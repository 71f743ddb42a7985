"""Log predictive density of held-out data under a posterior (validation during training).

Inference methods that monitor a validation set (``bnn.fit`` with early stopping) score it
here, below prediction in the layering, so ``bnn.infer`` never imports ``bnn.predict``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from bnn.likelihoods import Likelihood
from bnn.posterior.protocol import Posterior
from bnn.random.default import RNGLike

__all__ = ["log_predictive_density"]


def log_predictive_density(
    posterior: Posterior,
    x: Tensor,
    y: Tensor,
    *,
    likelihood: Likelihood,
    num_samples: int,
    rng: RNGLike = None,
) -> Tensor:
    """``log (1/S) Σ_s p(y_i | f_s(x_i))`` per datum, ``[N]``, from ``S`` function samples.

    Args:
        posterior: any `Posterior`.
        x: inputs ``[N, ...]``.
        y: targets ``[N, ...]``.
        likelihood: the observation model (its evaluation form).
        num_samples: ``S``.
        rng: randomness of the function samples (stream ``"predict"``).

    Example:
        >>> lpd = log_predictive_density(posterior, x_val, y_val,
        ...                              likelihood=bnn.Gaussian(0.1), num_samples=20, rng=0)
    """
    with torch.no_grad():
        samples = posterior.sample_functions(x, num_samples, rng=rng)
        return likelihood.predict(samples).log_likelihood(y)
