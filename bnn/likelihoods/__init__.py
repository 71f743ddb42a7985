"""Observation models and the predictive distributions they make from function samples."""

from bnn.likelihoods._base import (
    Likelihood,
    Prediction,
    align_targets,
    class_indices,
    same_observation_model,
)
from bnn.likelihoods.classification import Bernoulli, Categorical, ClassificationPrediction
from bnn.likelihoods.per_sample import PerSampleLikelihood
from bnn.likelihoods.regression import (
    Gaussian,
    HeteroscedasticGaussian,
    MixtureDensity,
    RegressionPrediction,
    require_one_std,
)

__all__ = [
    "align_targets",
    "class_indices",
    "Bernoulli",
    "Categorical",
    "ClassificationPrediction",
    "Gaussian",
    "HeteroscedasticGaussian",
    "Likelihood",
    "MixtureDensity",
    "PerSampleLikelihood",
    "Prediction",
    "RegressionPrediction",
    "require_one_std",
    "same_observation_model",
]
