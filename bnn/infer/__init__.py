"""Inference: Bayes by backprop, Pyro SVI, NUTS/HMC and stochastic-gradient MCMC."""

from bnn.infer import joint
from bnn.infer.mcmc import MCMCHistory, hmc, nuts
from bnn.infer.pyro import SVIHistory, SVIPosterior, pyro_model, svi
from bnn.infer.sgmcmc import SGMCMCHistory, sghmc, sgld
from bnn.infer.vi import History, NonFiniteLossError, fit

__all__ = [
    "History",
    "MCMCHistory",
    "NonFiniteLossError",
    "SGMCMCHistory",
    "SVIHistory",
    "SVIPosterior",
    "fit",
    "hmc",
    "joint",
    "nuts",
    "pyro_model",
    "sghmc",
    "sgld",
    "svi",
]
