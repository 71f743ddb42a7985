"""bnn: Bayesian deep learning for PyTorch — reproducible randomness, calibrated uncertainty."""

from bnn.determinism import deterministic_mode
from bnn.rng import RNG, RNGLike, get_rng, resolve_rng, seed_everything, seed_worker, use_rng
from bnn.sweep import SweepResult, seed_sweep

__all__ = [
    "RNG",
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
