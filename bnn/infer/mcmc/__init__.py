"""Markov chain Monte Carlo over a network's weights: NUTS, HMC, SGLD and SGHMC.

Every sampler here draws from the weight posterior defined by ``bnn.infer._log_joint`` (the
network's prior plus the likelihood of the data) and returns a ``SampleSet`` — the draws shaped
``(chain, draw, ...)`` — with a ``History`` whose extras hold the sampler statistics (step sizes,
acceptance, divergences, tree depths) that ``bnn.evaluate.summary`` and ArviZ read.

Read first: ``nuts.py`` (the public function: checks, then one of two backends). Then:

- ``_vectorised_nuts.py``: the default lock-step backend — all chains advance together in one
  vectorised leapfrog; ``_nuts_tree.py`` holds its tree building and ``_nuts_adaptation.py``
  the warm-up (dual averaging, Stan's windows, the regularised metric).
- ``_compiled_call.py``: the leaf traced once and compiled by Inductor (``jit_compile=True``).
- ``_pyro_mcmc.py``: Pyro's ``MCMC`` backend (``backend="pyro"``) and ``Adaptation``;
  ``hmc.py`` runs on it.
- ``sgmcmc.py``: SGLD and SGHMC on mini-batches; ``_sgmcmc_chain.py`` is one chain's loop,
  with checkpoints (``bnn.infer.checkpoint``) and data-parallel gradients.

Contract: ``nuts``/``hmc``/``sgld``/``sghmc(model, data, *, likelihood, prior, ..., rng=None,
progress=True) -> (SampleSet, History)``; chain ``c`` draws from ``rng.spawn(c)``, so a chain
does not depend on how many run.
"""

from bnn.infer.mcmc._pyro_mcmc import Adaptation
from bnn.infer.mcmc.hmc import hmc
from bnn.infer.mcmc.nuts import nuts
from bnn.infer.mcmc.sgmcmc import StepSchedule, sghmc, sgld

__all__ = ["Adaptation", "StepSchedule", "hmc", "nuts", "sghmc", "sgld"]
