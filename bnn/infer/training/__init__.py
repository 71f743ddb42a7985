"""The training loop every family shares: ``fit`` and the mini-batch machinery under it.

``fit`` trains any ``nn.Module`` on mini-batches: a plain network by maximum a posteriori, a
network with Bayesian layers (``bnn.nn``) by Bayes by backprop (the KL of its layers, weighted by
a ``KLSchedule``), an ``MCDropout`` network as it is. Deep ensembles train their members with it;
SWAG, boosting, SG-MCMC and SVI reuse its loader, optimiser and step helpers.

Read first: ``fit.py`` (the public function and its epoch loop). Then:

- ``_loop.py``: the mini-batch loop's parts (loader, optimiser, one training step, the input
  checks, ``NonFiniteLossError``) — imported by the other families.
- ``_fit_options.py``: ``KLSchedule`` and ``Validation``.
- ``_early_stopping.py``: the best-on-validation snapshot and patience.
- ``_fit_checkpoint.py``: what a checkpoint of a fit holds, and how a run resumes from it.

Contract: ``fit(model, data, *, likelihood, ..., rng=None, progress=True)`` returns
``(Posterior, History)`` — the posterior is the trained model itself (``as_posterior``).
This package imports no inference family; the families import it.
"""

from bnn.infer.training._loop import NonFiniteLossError
from bnn.infer.training.fit import KLSchedule, Validation, fit

__all__ = ["KLSchedule", "NonFiniteLossError", "Validation", "fit"]
