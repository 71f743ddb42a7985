"""Control randomness: one seeded `RNG` manager that every draw in ``bnn`` comes from.

* ``bnn.random.rng`` — the `RNG`: named streams, generators, ``spawn``, state.
* ``bnn.random.default`` — the process-wide default (``seed_everything``, ``use_rng``).
* ``bnn.random.determinism`` — deterministic kernels (``deterministic_mode``).
* ``bnn.random.draws`` — fast, reproducible normal, Bernoulli and sign draws.
* ``bnn.random.sweep`` — the spread of a result over seeds (``seed_sweep``).
* ``bnn.random.augment`` — seeded data augmentation (``AugmentedDataset``).

This package imports nothing else from ``bnn``.
"""

from bnn.random._globals import GLOBAL_STATE_LOCK
from bnn.random.augment import AugmentedDataset
from bnn.random.default import RNGLike, get_rng, resolve_rng, seed_everything, use_rng
from bnn.random.determinism import deterministic_mode
from bnn.random.rng import RNG, seed_worker
from bnn.random.sweep import SweepResult, seed_sweep

__all__ = [
    "GLOBAL_STATE_LOCK",
    "RNG",
    "AugmentedDataset",
    "RNGLike",
    "SweepResult",
    "deterministic_mode",
    "get_rng",
    "resolve_rng",
    "seed_everything",
    "seed_sweep",
    "seed_worker",
    "use_rng",
]
