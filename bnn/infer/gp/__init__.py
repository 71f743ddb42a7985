"""Gaussian processes on GPyTorch (the ``gp`` extra): exact, sparse variational, deep kernel.

Read first: ``gp.py`` (the public function ``gp``) and ``_posterior.py`` (``GPPosterior``, the
result). Then ``_predictive.py`` (the closed-form per-input predictive
``bnn.predict_with_uncertainty`` uses), ``_data.py`` (tensors, or a ``DataLoader`` for
SVGP), ``_outputs.py`` (several independent outputs: one GP per target column,
``IndependentOutputsGP``), ``_models.py`` (the GPyTorch models and their training loops)
and ``_checks.py`` (the data, likelihood and option checks, and the exact GP's memory check,
all run before any training).

Contract: ``gp(model_or_None, data, *, likelihood, method, kernel, ..., rng=None,
progress=True) -> (GPPosterior, History)``; with a network, the GP sits on its features
(deep kernel learning). The posterior carries its own observation model
(``predictive_likelihood``), so prediction needs no likelihood argument.
"""

from bnn.infer.gp._outputs import IndependentOutputsGP
from bnn.infer.gp.gp import KERNELS, MEANS, METHODS, GPPosterior, gp, gpytorch_module

__all__ = [
    "KERNELS",
    "MEANS",
    "METHODS",
    "GPPosterior",
    "IndependentOutputsGP",
    "gp",
    "gpytorch_module",
]
