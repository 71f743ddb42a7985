"""Posteriors that wrap another: the shared pass-through, and one that carries a likelihood.

`PosteriorWrapper` passes the wrapped posterior's function samples and observation model
through; recalibration (temperature and std scaling, conformal prediction) subclasses it.
`WithLikelihood` attaches an observation model to a posterior that carries none, so that
posteriors with *different* likelihoods can be combined (e.g. stacked) and predicted without a
``likelihood=`` argument.

Example:
    >>> dropout = bnn.posterior.WithLikelihood(mc_dropout_model, bnn.Gaussian(0.3))
    >>> ensemble = bnn.posterior.WithLikelihood(deep_ens, bnn.HeteroscedasticGaussian())
    >>> stacked, _ = bnn.infer.stack([dropout, ensemble, gp_posterior], x_val, y_val, rng=0)
"""

from __future__ import annotations

from torch import Tensor

from bnn.likelihoods import Likelihood
from bnn.posterior.model import as_posterior
from bnn.posterior.protocol import CarriesLikelihood, Posterior
from bnn.random.default import RNGLike

__all__ = ["PosteriorWrapper", "WithLikelihood"]


class PosteriorWrapper:
    """Shared part of posteriors that wrap another: its samples and observation model
    passed through.

    Args:
        posterior: any `bnn.Posterior`.
    """

    def __init__(self, posterior: Posterior) -> None:
        if not isinstance(posterior, Posterior):
            raise TypeError(f"posterior must be a bnn Posterior, got {type(posterior).__name__}.")
        self.posterior = posterior

    @property
    def predictive_likelihood(self) -> Likelihood | None:
        """The wrapped posterior's own observation model, if it carries one."""
        inner = self.posterior
        return inner.predictive_likelihood if isinstance(inner, CarriesLikelihood) else None

    def sample_functions(
        self,
        x: Tensor,
        num_samples: int,
        *,
        rng: RNGLike = None,
        memory_budget: int | None = None,
    ) -> Tensor:
        """The wrapped posterior's function samples ``[S, N, ...]``."""
        return self.posterior.sample_functions(x, num_samples, rng=rng, memory_budget=memory_budget)


class WithLikelihood(PosteriorWrapper):
    """A posterior (or a model with Bayesian layers / MC dropout) with its observation model.

    ``sample_functions`` is the wrapped posterior's, draw for draw;
    ``bnn.predict_with_uncertainty(wrapped, x)`` and `bnn.infer.stack` use ``likelihood``.

    Args:
        posterior: a `bnn.Posterior`, or a model `bnn.posterior.as_posterior` accepts.
        likelihood: the observation model of its outputs, e.g. ``bnn.Gaussian(0.3)``.

    Raises:
        TypeError: ``likelihood`` is not a bnn ``Likelihood``; ``posterior`` is neither a
            posterior nor a model with a posterior.

    Example:
        >>> wrapped = WithLikelihood(model, bnn.Gaussian(0.3))
        >>> bnn.predict_with_uncertainty(wrapped, x, rng=0).std   # [N, 1]
    """

    def __init__(self, posterior: object, likelihood: Likelihood) -> None:
        if not isinstance(likelihood, Likelihood):
            raise TypeError(
                f"likelihood must be a bnn Likelihood (e.g. bnn.Gaussian(0.1)), got "
                f"{type(likelihood).__name__}."
            )
        super().__init__(as_posterior(posterior))
        self.likelihood = likelihood

    @property
    def predictive_likelihood(self) -> Likelihood:
        """The attached observation model."""
        return self.likelihood
