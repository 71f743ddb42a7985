"""Inference methods: each turns a model and data into ``(Posterior, History)``.

Every method has the signature
``method(model, data, *, likelihood, ..., rng=None, progress=True) -> (Posterior, History)``
and lives in one file here:

=================== ============================================== =========================
method              what it is                                     posterior
=================== ============================================== =========================
``fit``             Bayes by backprop / MAP (``vi.py``)            the model's own
``svi``             Pyro SVI with autoguides (``svi.py``)          ``SVIPosterior``
``nuts``            No-U-Turn sampler (``nuts.py``)                ``SampleSet``
``hmc``             Hamiltonian Monte Carlo (``hmc.py``)           ``SampleSet``
``sgld``/``sghmc``  stochastic-gradient MCMC (``sgmcmc.py``)        ``SampleSet``
``deep_ensemble``   deep ensembles (``ensemble.py``)               ``DeepEnsemble``
``neural_linear``   closed-form last layer (``linear.py``)         ``NeuralLinear``
``laplace``         Laplace approximation (``laplace.py``)         ``LaplacePosterior``
``swag``            SWA-Gaussian (``swag.py``)                     ``SWAGPosterior``
``multi_swag``      several SWAG runs (``swag.py``)                ``GaussianMixturePosterior``
``gp``              Gaussian processes on GPyTorch (``gp.py``)     ``GPPosterior``
``stack``           stacking of posteriors (``stacking.py``)       ``StackedPosterior``
``boost``           gradient boosting of networks (``boosting.py``) ``BoostedPosterior``
=================== ============================================== =========================

``marglik_training`` (``marglik.py``) trains a MAP network while its prior precision and noise
follow the Laplace evidence, and returns its ``LaplacePosterior``.

``docs/extending.md`` shows how to add one.
"""

from bnn.infer._loop import NonFiniteLossError
from bnn.infer._pyro_mcmc import Adaptation
from bnn.infer.boosting import BoostedPosterior, boost
from bnn.infer.ensemble import DeepEnsemble, deep_ensemble
from bnn.infer.gp import GPPosterior, gp
from bnn.infer.history import History
from bnn.infer.hmc import hmc
from bnn.infer.laplace import LaplacePosterior, laplace
from bnn.infer.linear import BayesianLinearRegression, NeuralLinear, neural_linear
from bnn.infer.marglik import marglik_training
from bnn.infer.nuts import nuts
from bnn.infer.sgmcmc import StepSchedule, sghmc, sgld
from bnn.infer.stacking import StackedPosterior, stack
from bnn.infer.svi import SVIPosterior, pyro_model, svi
from bnn.infer.swag import SWAGPosterior, multi_swag, swag
from bnn.infer.vi import KLSchedule, Validation, fit

__all__ = [
    "Adaptation",
    "BayesianLinearRegression",
    "BoostedPosterior",
    "DeepEnsemble",
    "GPPosterior",
    "History",
    "KLSchedule",
    "LaplacePosterior",
    "NeuralLinear",
    "NonFiniteLossError",
    "SVIPosterior",
    "SWAGPosterior",
    "StackedPosterior",
    "StepSchedule",
    "Validation",
    "boost",
    "deep_ensemble",
    "fit",
    "gp",
    "hmc",
    "laplace",
    "marglik_training",
    "multi_swag",
    "neural_linear",
    "nuts",
    "pyro_model",
    "sghmc",
    "sgld",
    "stack",
    "svi",
    "swag",
]
