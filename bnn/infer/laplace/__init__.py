"""Gaussian posteriors around a trained network: Laplace, evidence training, neural-linear.

``laplace`` fits a Gaussian at the trained weights whose precision is the curvature of the loss
(the generalised Gauss-Newton matrix; full, KFAC or diagonal; the last layer, all weights or
any subset)
plus the prior precision, which the marginal likelihood can tune. ``marglik_training`` trains
the network while its prior precision and noise follow that evidence. ``neural_linear`` is the
exact case of a last-layer Gaussian: Bayesian linear regression on the network's features.

Read first: ``laplace.py`` (the fitting function: checks, subset, curvature sums). Then:

- ``_selection.py``: which parameters a subset names, and the Kronecker-factored layers.
- ``_curvature.py``: the curvature sums over the data (per-layer Kronecker factors, diagonal,
  full GGN) in memory-budgeted chunks.
- ``_posterior.py``: ``LaplacePosterior`` — covariance factors, GLM / MC predictive, sampling.
- ``_functional.py``: the GLM predictive's ``J Σ Jᵀ`` from each layer's inputs and output
  Jacobians (KFAC and diagonal posteriors of whole Linear / convolution layers).
- ``_tuning.py``: the prior precision by marginal likelihood, grid search or GLM NLL.
- ``marglik.py``: ``marglik_training``; ``linear.py``: ``neural_linear`` and
  ``BayesianLinearRegression``.

Contract: ``laplace(model, data, *, likelihood, subset, hessian, prior_precision, ...) ->
(LaplacePosterior, History)``; the posterior predicts with the linearised (GLM) predictive by
default and reports the log marginal likelihood.
"""

from bnn.infer.laplace._posterior import Hessian
from bnn.infer.laplace.laplace import LaplacePosterior, laplace
from bnn.infer.laplace.linear import BayesianLinearRegression, NeuralLinear, neural_linear
from bnn.infer.laplace.marglik import marglik_training

__all__ = [
    "BayesianLinearRegression",
    "Hessian",
    "LaplacePosterior",
    "NeuralLinear",
    "laplace",
    "marglik_training",
    "neural_linear",
]
