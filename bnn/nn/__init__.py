"""Models whose weights or units are random: Bayesian layers, priors, MC dropout.

* ``bnn.nn.layers`` — one Bayesian-parameter mechanism for every layer type
  (``BayesLinear``, ``BayesConv*``), ``kl_divergence``, ``posterior_mean``, ``weight_space``.
* ``bnn.nn.estimators`` — how a layer's output is sampled (reparam, local reparam, flipout).
* ``bnn.nn.priors`` — weight priors (``Normal``, ``Laplace``, ``ScaleMixture``).
* ``bnn.nn.convert`` — ``bayesianize`` any network in place.
* ``bnn.nn.dropout`` — ``MCDropout``: dropout kept on at prediction time.
"""

from bnn.nn.convert import bayesianize
from bnn.nn.dropout import MCDropout
from bnn.nn.layers import (
    BayesConv1d,
    BayesConv2d,
    BayesConv3d,
    BayesConvTranspose2d,
    BayesianModule,
    BayesianParameter,
    BayesLinear,
    bayesian_modules,
    kl_divergence,
    posterior_mean,
    weight_space,
)
from bnn.nn.priors import Laplace, Normal, Prior, ScaleMixture

__all__ = [
    "BayesConv1d",
    "BayesConv2d",
    "BayesConv3d",
    "BayesConvTranspose2d",
    "BayesLinear",
    "BayesianModule",
    "BayesianParameter",
    "Laplace",
    "MCDropout",
    "Normal",
    "Prior",
    "ScaleMixture",
    "bayesian_modules",
    "bayesianize",
    "kl_divergence",
    "posterior_mean",
    "weight_space",
]
