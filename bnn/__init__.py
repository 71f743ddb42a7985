"""bnn: Bayesian deep learning for PyTorch — reproducible randomness, calibrated uncertainty."""

from bnn import data, infer, metrics, plots, priors
from bnn.augment import AugmentedDataset, TestTimeAugmentation
from bnn.calibration import CalibrationReport, calibration
from bnn.convert import bayesianize
from bnn.default_rng import RNGLike, get_rng, resolve_rng, seed_everything, use_rng
from bnn.determinism import deterministic_mode
from bnn.diagnostics import ConvergenceWarning, Summary, summary, to_arviz
from bnn.dropout import MCDropout
from bnn.early_stopping import EarlyStopping
from bnn.ensemble import DeepEnsemble
from bnn.heads import BayesianLinearRegression, NeuralLinear
from bnn.infer.vi import History, NonFiniteLossError, fit
from bnn.layers import (
    BayesConv1d,
    BayesConv2d,
    BayesConv3d,
    BayesConvTranspose2d,
    BayesianModule,
    BayesianParameter,
    BayesLinear,
    kl_divergence,
    posterior_mean,
)
from bnn.likelihoods import (
    Bernoulli,
    Categorical,
    Gaussian,
    HeteroscedasticGaussian,
    Likelihood,
    MixtureDensity,
)
from bnn.posterior import ModelPosterior, PointEstimate, Posterior, as_posterior
from bnn.predict import predict_with_uncertainty
from bnn.prediction import ClassificationPrediction, Prediction, RegressionPrediction
from bnn.rng import RNG, seed_worker
from bnn.sample_set import SampleSet
from bnn.sweep import SweepResult, seed_sweep

__all__ = [
    "RNG",
    "AugmentedDataset",
    "BayesConv1d",
    "BayesConv2d",
    "BayesConv3d",
    "BayesConvTranspose2d",
    "BayesLinear",
    "BayesianModule",
    "BayesianLinearRegression",
    "BayesianParameter",
    "CalibrationReport",
    "ConvergenceWarning",
    "DeepEnsemble",
    "Bernoulli",
    "Categorical",
    "ClassificationPrediction",
    "EarlyStopping",
    "Gaussian",
    "HeteroscedasticGaussian",
    "History",
    "Likelihood",
    "MCDropout",
    "MixtureDensity",
    "ModelPosterior",
    "NeuralLinear",
    "NonFiniteLossError",
    "PointEstimate",
    "Posterior",
    "Prediction",
    "RNGLike",
    "RegressionPrediction",
    "SampleSet",
    "Summary",
    "SweepResult",
    "TestTimeAugmentation",
    "as_posterior",
    "bayesianize",
    "calibration",
    "data",
    "infer",
    "deterministic_mode",
    "fit",
    "get_rng",
    "kl_divergence",
    "metrics",
    "plots",
    "posterior_mean",
    "predict_with_uncertainty",
    "priors",
    "resolve_rng",
    "seed_everything",
    "seed_sweep",
    "seed_worker",
    "summary",
    "to_arviz",
    "use_rng",
]
