"""bnn: Bayesian deep learning for PyTorch — reproducible randomness, calibrated uncertainty.

The names here are the ones the README's two screens use; everything else lives in its
subpackage: ``bnn.random`` (control randomness), ``bnn.nn`` (Bayesian layers, priors,
MC dropout), ``bnn.likelihoods``, ``bnn.posterior`` (the contract),
``bnn.infer`` (one file per inference method), ``bnn.evaluate`` (metrics, calibration,
ArviZ, plots) and ``bnn.parallel``. Importing ``bnn`` imports them all, so
``bnn.infer.nuts`` needs no import of its own.
"""

from bnn.evaluate.calibration import calibration
from bnn.evaluate.convergence import summary
from bnn.evaluate.diagnostics import to_arviz
from bnn.infer.training.fit import fit
from bnn.likelihoods import (
    Bernoulli,
    Categorical,
    Gaussian,
    HeteroscedasticGaussian,
    MixtureDensity,
)
from bnn.nn import (
    BayesConv1d,
    BayesConv2d,
    BayesConv3d,
    BayesConvTranspose2d,
    BayesLinear,
    MCDropout,
    bayesianize,
)
from bnn.posterior import Posterior, SampleSet
from bnn.predict import predict_with_uncertainty
from bnn.random import RNG, deterministic_mode, seed_everything, seed_sweep

__all__ = [
    "RNG",
    "BayesConv1d",
    "BayesConv2d",
    "BayesConv3d",
    "BayesConvTranspose2d",
    "BayesLinear",
    "Bernoulli",
    "Categorical",
    "Gaussian",
    "HeteroscedasticGaussian",
    "MCDropout",
    "MixtureDensity",
    "Posterior",
    "SampleSet",
    "bayesianize",
    "calibration",
    "deterministic_mode",
    "fit",
    "predict_with_uncertainty",
    "seed_everything",
    "seed_sweep",
    "summary",
    "to_arviz",
]
