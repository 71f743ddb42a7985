"""The contract: posteriors that draw function samples, and the ones built from models.

Every inference method returns a `Posterior`; see ``bnn.posterior.protocol``.
"""

from bnn.posterior.augment import TestTimeAugmentation
from bnn.posterior.closed_form import ClosedFormPredictive
from bnn.posterior.gaussian import GaussianMixturePosterior, GaussianPosterior
from bnn.posterior.log_predictive import log_predictive_density
from bnn.posterior.marginal import MarginalPredictive
from bnn.posterior.model import ModelPosterior, PointEstimate, as_posterior, has_posterior
from bnn.posterior.protocol import (
    ACCELERATOR_MEMORY_BUDGET,
    DEFAULT_MEMORY_BUDGET,
    CarriesLikelihood,
    Draws,
    ParameterPosterior,
    Posterior,
    default_memory_budget,
)
from bnn.posterior.samples import SampleSet
from bnn.posterior.wrapper import PosteriorWrapper, WithLikelihood

__all__ = [
    "ACCELERATOR_MEMORY_BUDGET",
    "DEFAULT_MEMORY_BUDGET",
    "CarriesLikelihood",
    "ClosedFormPredictive",
    "Draws",
    "GaussianMixturePosterior",
    "GaussianPosterior",
    "MarginalPredictive",
    "ModelPosterior",
    "ParameterPosterior",
    "PointEstimate",
    "PosteriorWrapper",
    "Posterior",
    "SampleSet",
    "TestTimeAugmentation",
    "WithLikelihood",
    "as_posterior",
    "default_memory_budget",
    "has_posterior",
    "log_predictive_density",
]
