"""Posteriors made of several networks: deep ensembles, SWAG and MultiSWAG, stacking, boosting.

- ``ensemble.py``: ``deep_ensemble`` trains independent members with ``fit`` (seeds from
  ``rng.spawn``; processes, an executor or ``torch.distributed`` ranks) into a ``DeepEnsemble``;
  ``_ensemble_training.py`` runs the members; ``_lockstep_training.py`` trains them all at once
  in one vmapped step per mini-batch (``lockstep=True``).
- ``swag.py``: ``swag`` continues SGD from trained weights and fits a Gaussian (diagonal plus
  low rank) to the iterates; ``multi_swag`` mixes several such Gaussians, one per network —
  the ensemble of SWAGs.
- ``stacking.py``: ``stack`` weights any posteriors by their log predictive density on
  validation data or by PSIS-LOO (``_psis.py``); ``_stacking_densities.py`` computes the
  members' densities.
- ``boosting.py``: ``boost`` fits networks in sequence, each to what the sum before it missed;
  ``_boosting_stages.py`` holds one stage.

Read first: ``ensemble.py``. Contract: every function returns ``(Posterior, History)`` whose
posterior draws ``S`` function samples of a batch in one call; a mixture draws each sample from
one member chosen by its weight.
"""

from bnn.infer.ensembles.boosting import BoostedPosterior, boost
from bnn.infer.ensembles.ensemble import DeepEnsemble, deep_ensemble
from bnn.infer.ensembles.stacking import StackedPosterior, stack
from bnn.infer.ensembles.swag import SWAGPosterior, multi_swag, swag

__all__ = [
    "BoostedPosterior",
    "DeepEnsemble",
    "SWAGPosterior",
    "StackedPosterior",
    "boost",
    "deep_ensemble",
    "multi_swag",
    "stack",
    "swag",
]
