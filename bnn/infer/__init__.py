"""Inference algorithms: variational inference (Bayes by backprop)."""

from bnn.infer.vi import History, NonFiniteLossError, fit

__all__ = ["History", "NonFiniteLossError", "fit"]
