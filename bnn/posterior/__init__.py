"""The contract: posteriors that draw function samples, and the ones built from models.

Every inference method returns a `Posterior`; see ``bnn.posterior.protocol``.
"""

from bnn.posterior.augment import TestTimeAugmentation
from bnn.posterior.log_predictive import log_predictive_density
from bnn.posterior.model import ModelPosterior, PointEstimate, as_posterior, has_posterior
from bnn.posterior.protocol import (
    DEFAULT_MEMORY_BUDGET,
    CarriesLikelihood,
    Draws,
    ParameterPosterior,
    Posterior,
)
from bnn.posterior.samples import SampleSet

__all__ = [
    "DEFAULT_MEMORY_BUDGET",
    "CarriesLikelihood",
    "Draws",
    "ModelPosterior",
    "ParameterPosterior",
    "PointEstimate",
    "Posterior",
    "SampleSet",
    "TestTimeAugmentation",
    "as_posterior",
    "has_posterior",
    "log_predictive_density",
]
