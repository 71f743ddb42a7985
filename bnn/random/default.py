"""The process-wide default `RNG` and how ``rng=`` arguments resolve to an `RNG`.

Every ``rng=`` argument in ``bnn`` accepts an `RNG`, an integer seed or ``None``;
``resolve_rng`` turns it into an `RNG`, ``None`` meaning the default one.
``seed_everything`` installs a default for the process, ``use_rng`` for a block.

Example:
    >>> rng = bnn.seed_everything(0)
    >>> bnn.random.get_rng() is rng
    True
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TypeAlias

import numpy as np

from bnn.random._globals import restore, snapshot
from bnn.random.rng import RNG, check_seed

__all__ = ["RNGLike", "get_rng", "resolve_rng", "seed_everything", "use_rng"]

RNGLike: TypeAlias = RNG | int | None
"""What every ``rng=`` argument accepts: an `RNG`, an integer seed, or ``None`` (the default)."""

_default: RNG | None = None


def get_rng() -> RNG:
    """The default `RNG` (installed by ``seed_everything``; otherwise a random seed)."""
    global _default
    if _default is None:
        _default = RNG()
    return _default


def resolve_rng(rng: RNGLike) -> RNG:
    """Turn an ``rng=`` argument into an `RNG`: itself, ``RNG(seed)``, or the default."""
    if rng is None:
        return get_rng()
    if isinstance(rng, RNG):
        return rng
    if isinstance(rng, int | np.integer) and not isinstance(rng, bool):
        return RNG(int(rng))
    raise TypeError(
        f"rng must be a bnn.RNG, an int seed or None, got {type(rng).__name__} {rng!r}."
    )


def seed_everything(seed: int, *, deterministic: bool = False) -> RNG:
    """Seed Python, NumPy, torch (CPU and all CUDA devices) and Pyro; make the `RNG` the default.

    Args:
        seed: integer in ``[0, 2**32 - 1]``.
        deterministic: also switch on deterministic algorithms (see
            ``bnn.deterministic_mode``) for the rest of the process.

    Returns:
        The new default `RNG`.

    Example:
        >>> rng = bnn.seed_everything(42)
    """
    global _default
    rng = RNG(check_seed(seed))
    rng.seed_globals()
    _default = rng
    if deterministic:
        from bnn.random.determinism import deterministic_mode

        deterministic_mode(True)
    return rng


@contextlib.contextmanager
def use_rng(rng: RNG) -> Iterator[RNG]:
    """Make ``rng`` the default and seed the globals from it for a block; restore both after."""
    global _default
    if not isinstance(rng, RNG):
        raise TypeError(f"use_rng expects a bnn.RNG, got {type(rng).__name__}.")
    previous, outer = _default, snapshot()
    _default = rng
    rng.seed_globals()
    try:
        yield rng
    finally:
        _default = previous
        restore(outer)
