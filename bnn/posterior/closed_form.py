"""`ClosedFormPredictive`: a posterior that can hand over its predictive without sampling.

``bnn.predict_with_uncertainty`` asks such a posterior first; when it returns a `Prediction`
that is the answer, when it returns ``None`` the usual function samples are drawn. A Laplace
posterior uses this for the linearised (GLM) predictive (closed form for a Gaussian
likelihood, probit approximation for a categorical one).

Example:
    >>> posterior.predictive = "glm"          # a bnn.posterior.GaussianPosterior
    >>> bnn.predict_with_uncertainty(posterior, x)   # exact Gaussian, no sampling
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from torch import Tensor

from bnn.likelihoods import Likelihood, Prediction
from bnn.random.rng import RNG

__all__ = ["ClosedFormPredictive"]


@runtime_checkable
class ClosedFormPredictive(Protocol):
    """A posterior whose predictive may come without function samples (or with its own)."""

    def closed_form_prediction(
        self,
        x: Tensor,
        *,
        likelihood: Likelihood | None,
        num_samples: int,
        rng: RNG,
        memory_budget: int,
    ) -> Prediction | None:
        """The predictive at ``x`` ``[N, ...]``, or ``None`` to be predicted from samples.

        Args:
            x: inputs ``[N, ...]`` (type and shape already checked).
            likelihood: the observation model the prediction resolved (the caller's or the
                posterior's own).
            num_samples: what the caller asked for (for any samples the prediction carries).
            rng: randomness (generator ``"predict"``).
            memory_budget: bytes one vectorised chunk may use.
        """
        ...
