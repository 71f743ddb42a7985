"""Inference methods: each turns a model and data into ``(Posterior, History)``.

Every method has the signature
``method(model, data, *, likelihood, ..., rng=None, progress=True) -> (Posterior, History)``.
Methods live in families, one package each; what every family shares sits at this level.

=================== ============================================== =========================
method              family (package) and file                      posterior
=================== ============================================== =========================
``fit``             Bayes by backprop / MAP (``training/fit.py``)  the model's own
``svi``             Pyro SVI (``variational/svi.py``)              ``SVIPosterior``
``nuts``            No-U-Turn sampler (``mcmc/nuts.py``)           ``SampleSet``
``hmc``             Hamiltonian Monte Carlo (``mcmc/hmc.py``)      ``SampleSet``
``sgld``/``sghmc``  stochastic-gradient MCMC (``mcmc/sgmcmc.py``)  ``SampleSet``
``laplace``         Laplace (``laplace/laplace.py``)               ``LaplacePosterior``
``marglik_training`` evidence training (``laplace/marglik.py``)    ``LaplacePosterior``
``neural_linear``   closed-form last layer (``laplace/linear.py``) ``NeuralLinear``
``deep_ensemble``   deep ensembles (``ensembles/ensemble.py``)     ``DeepEnsemble``
``swag``            SWA-Gaussian (``ensembles/swag.py``)           ``SWAGPosterior``
``multi_swag``      several SWAG runs (``ensembles/swag.py``)      ``GaussianMixturePosterior``
``stack``           stacking (``ensembles/stacking.py``)           ``StackedPosterior``
``boost``           boosting (``ensembles/boosting.py``)           ``BoostedPosterior``
``gp``              GPs on GPyTorch (``gp/gp.py``)                 ``GPPosterior`` (or
                                                                   ``IndependentOutputsGP``)
=================== ============================================== =========================

Shared by every family (and importing none of them): ``training/`` (``fit`` and the mini-batch
loop), ``history.py`` (the one ``History``), ``checkpoint.py`` (the checkpoint format) and
``_log_joint.py`` (a network's log prior + log likelihood over its weights, which MCMC, SVI and
evidence training evaluate). Families do not import each other; import-linter checks both rules.

The module paths from before the families (``bnn.infer.vi``, ``bnn.infer.swag``, ...) still
import, as aliases of the modules' new homes. ``docs/extending.md`` shows how to add a method.
"""

import importlib as _importlib
import sys as _sys

from bnn.infer.ensembles.boosting import BoostedPosterior, boost
from bnn.infer.ensembles.ensemble import DeepEnsemble, deep_ensemble
from bnn.infer.ensembles.stacking import StackedPosterior, stack
from bnn.infer.ensembles.swag import SWAGPosterior, multi_swag, swag
from bnn.infer.gp import GPPosterior, IndependentOutputsGP, gp
from bnn.infer.history import History
from bnn.infer.laplace.laplace import LaplacePosterior, laplace
from bnn.infer.laplace.linear import BayesianLinearRegression, NeuralLinear, neural_linear
from bnn.infer.laplace.marglik import marglik_training
from bnn.infer.mcmc._pyro_mcmc import Adaptation
from bnn.infer.mcmc.hmc import hmc
from bnn.infer.mcmc.nuts import nuts
from bnn.infer.mcmc.sgmcmc import StepSchedule, sghmc, sgld
from bnn.infer.training._loop import NonFiniteLossError
from bnn.infer.training.fit import KLSchedule, Validation, fit
from bnn.infer.variational.svi import SVIPosterior, pyro_model, svi

MOVED_MODULES = {
    "vi": "training.fit",
    "svi": "variational.svi",
    "nuts": "mcmc.nuts",
    "hmc": "mcmc.hmc",
    "sgmcmc": "mcmc.sgmcmc",
    "marglik": "laplace.marglik",
    "linear": "laplace.linear",
    "ensemble": "ensembles.ensemble",
    "swag": "ensembles.swag",
    "stacking": "ensembles.stacking",
    "boosting": "ensembles.boosting",
}
"""Public modules that moved into a family: old name under ``bnn.infer`` -> new path."""

for _old, _new in MOVED_MODULES.items():
    _sys.modules.setdefault(f"{__name__}.{_old}", _importlib.import_module(f"{__name__}.{_new}"))

__all__ = [
    "Adaptation",
    "BayesianLinearRegression",
    "BoostedPosterior",
    "DeepEnsemble",
    "GPPosterior",
    "History",
    "IndependentOutputsGP",
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
