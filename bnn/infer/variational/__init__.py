"""Variational inference with Pyro: ``svi`` fits an autoguide to the weight posterior.

Bayes by backprop — variational inference through ``bnn.nn``'s Bayesian layers — is ``fit``
on a Bayesian network (``bnn.infer.training``); this package holds the other route, for a plain
``nn.Module``: its weights are lifted into a Pyro model (``pyro_model``) with the prior and
likelihood of ``bnn.infer._log_joint``, and a Pyro guide (mean-field normal, low-rank,
multivariate normal, or any callable that builds a guide) is fitted by stochastic ELBO steps.

Read first: ``svi.py`` (the public function, the Pyro model and ``SVIPosterior``); then
``_svi_state.py`` (the batch order, step schedule and resumable state of a run).

Contract: ``svi(model, data, *, likelihood, prior, guide, ..., rng=None, progress=True) ->
(SVIPosterior, History)``; the posterior draws weight samples from the guide and evaluates the
network on them in one vectorised call.
"""

from bnn.infer.variational.svi import SVIPosterior, pyro_model, svi

__all__ = ["SVIPosterior", "pyro_model", "svi"]
