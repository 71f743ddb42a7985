"""One seeded random-number manager for everything `bnn` does.

A run is reproducible when every random draw it makes comes from a known seed. `RNG` owns one
root seed and derives from it, with NumPy's ``SeedSequence`` (O'Neill 2015, the scheme behind
``numpy.random.SeedSequence.spawn``), independent keys for

* **named streams** (``RNG.stream``): a context manager that swaps the *global* generators of
  Python ``random``, NumPy, torch (CPU and every CUDA device) and therefore Pyro for the stream's
  own state, and restores the outer state on exit. A stream continues where it stopped the next
  time it is entered, and its numbers depend only on ``(seed, name)`` and on the draws made inside
  it, never on which other streams ran before. This is how dropout, ``torch.distributions``, Pyro
  and ``vmap``-ed sampling, which take no generator argument, get their randomness.
* **explicit generators** (``RNG.torch_generator``, ``RNG.numpy_generator``) for APIs
  that accept one (``DataLoader`` shuffling, ``randperm``, bootstraps).
* **children** (``RNG.spawn``): an independent ``RNG`` per ensemble member, chain or seed.

Everything an `RNG` has handed out is captured by ``RNG.state_dict`` (tensors, ints and
strings only, so ``torch.load(weights_only=True)`` reads it back) and restored by
``RNG.load_state_dict``: a resumed run continues with exactly the numbers an uninterrupted
run would have drawn.

Example:
    >>> import torch, bnn
    >>> rng = bnn.seed_everything(0)
    >>> with rng.stream("init"):
    ...     w = torch.randn(3)
    >>> with bnn.RNG(0).stream("init"):
    ...     torch.equal(w, torch.randn(3))
    True
"""

from __future__ import annotations

import contextlib
import hashlib
import secrets
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from bnn.random._globals import (
    GLOBAL_STATE_LOCK,
    python_state,
    restore,
    seed_all,
    seed_worker,
    snapshot,
)

__all__ = ["MAX_SEED", "RNG", "check_seed", "seed_worker"]

MAX_SEED = 2**32 - 1
"""Largest accepted seed: the range of NumPy's legacy global seed and of Pyro's ``set_rng_seed``."""

STATE_FORMAT_VERSION = 1

# Domain tags keep the key spaces of streams, generators and children apart.
_TAG_STREAM = 0
_TAG_TORCH_GENERATOR = 1
_TAG_NUMPY_GENERATOR = 2
_TAG_SPAWN = 3
_TAG_DERIVED_SEED = 4


def check_seed(seed: object) -> int:
    """``seed`` as an int in ``[0, MAX_SEED]``, or a ``TypeError``/``ValueError`` that says why."""
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
        raise TypeError(
            f"seed must be an int in [0, {MAX_SEED}], got {type(seed).__name__} {seed!r}; "
            "pass e.g. seed=0."
        )
    value = int(seed)
    if not 0 <= value <= MAX_SEED:
        raise ValueError(
            f"seed must be in [0, {MAX_SEED}] (the range NumPy and Pyro accept), got {value}; "
            "reduce it, e.g. seed % 2**32."
        )
    return value


def _name_words(name: object, what: str) -> tuple[int, ...]:
    """Map a stream/generator name to a fixed tuple of 32-bit words (stable across processes)."""
    if not isinstance(name, str):
        raise TypeError(f"{what} name must be a str, got {type(name).__name__} {name!r}.")
    if not name:
        raise ValueError(f"{what} name must be a non-empty string.")
    digest = hashlib.sha256(name.encode("utf-8")).digest()
    return tuple(int.from_bytes(digest[i : i + 4], "little") for i in range(0, 16, 4))


def _spawn_words(key: object) -> tuple[int, ...]:
    if isinstance(key, str):
        return (1, *_name_words(key, "spawn key"))
    if isinstance(key, bool) or not isinstance(key, int | np.integer) or int(key) < 0:
        raise TypeError(
            f"spawn key must be a non-negative int or a str, got {type(key).__name__} {key!r}."
        )
    value = int(key)
    return (0, value & 0xFFFFFFFF, value >> 32)


class RNG:
    """A root seed and everything derived from it.

    Args:
        seed: integer in ``[0, 2**32 - 1]``. ``None`` draws one from the operating system; it is
            then readable as ``rng.seed`` so the run can be repeated.

    Streams, generators and children are derived from ``(seed, spawn path, name)``; two `RNG`
    objects with the same seed and path produce the same numbers in any process.

    Example:
        >>> rng = RNG(7)
        >>> g = rng.torch_generator("shuffle")
        >>> child = rng.spawn(0)  # e.g. ensemble member 0
    """

    def __init__(self, seed: int | None = None, *, _path: tuple[int, ...] = ()) -> None:
        self.seed = check_seed(secrets.randbits(32) if seed is None else seed)
        self._path = _path
        self._stream_states: dict[str, dict[str, Any]] = {}
        self._active_streams: set[str] = set()
        self._torch_generators: dict[tuple[str, str], torch.Generator] = {}
        self._numpy_generators: dict[str, np.random.Generator] = {}

    def __repr__(self) -> str:
        path = f", path={self._path}" if self._path else ""
        return f"RNG(seed={self.seed}{path})"

    # ----------------------------------------------------------------------------- derivation
    def _sequence(self, tag: int, words: tuple[int, ...]) -> np.random.SeedSequence:
        return np.random.SeedSequence(self.seed, spawn_key=(*self._path, tag, *words))

    def derive_seed(self, name: str) -> int:
        """A 64-bit integer seed for ``name``, for code that wants a plain integer.

        Args:
            name: any non-empty string; the same name always gives the same seed.

        Returns:
            An int in ``[0, 2**63 - 1]`` (accepted by ``torch.manual_seed`` and NumPy).
        """
        words = _name_words(name, "seed")
        return int(self._sequence(_TAG_DERIVED_SEED, words).generate_state(1, np.uint64)[0] >> 1)

    def spawn(self, key: int | str) -> RNG:
        """An independent child `RNG`, e.g. for ensemble member ``i`` or MCMC chain ``i``.

        The child depends only on this RNG's seed and path and on ``key``: spawning children in
        any order, or spawning more of them, never changes a child's numbers.

        Args:
            key: a non-negative int (member or chain index) or a string.
        """
        return RNG(self.seed, _path=(*self._path, _TAG_SPAWN, *_spawn_words(key)))

    # ----------------------------------------------------------------------------- streams
    @contextlib.contextmanager
    def stream(self, name: str) -> Iterator[RNG]:
        """Run a block with the global generators switched to the named stream.

        Inside the block, ``torch.rand*``, dropout, ``torch.distributions`` sampling, Pyro,
        ``numpy.random.*`` and ``random.*`` draw from the stream ``name`` (on every device).
        On exit, the stream's state is kept for its next use and the global state from before
        the block is restored, so code outside the block sees no difference.

        Threads: the global generators belong to the process, so a stream block holds a
        process-wide re-entrant lock; stream blocks of other threads wait for it. Each block
        therefore draws exactly the numbers it would draw alone (same seed, same bits, whatever
        the threads do). Code *outside* any stream that draws from the global generators in
        another thread meanwhile is not held back, and would shift this stream's numbers.

        Args:
            name: stream name, e.g. ``"init"``, ``"dropout"``, ``"predict"``.

        Yields:
            This `RNG`.

        Raises:
            TypeError: if ``name`` is not a string.
            RuntimeError: if the same stream is entered again while it is active.
        """
        words = _name_words(name, "stream")
        with GLOBAL_STATE_LOCK:  # the global generators are the process's: one thread at a time
            if name in self._active_streams:
                raise RuntimeError(
                    f"stream {name!r} is already active; nested use of the same stream would "
                    "interleave its numbers. Use a different name for the inner block."
                )
            outer = snapshot()
            if name in self._stream_states:
                restore(self._stream_states[name])
            else:
                seed = int(self._sequence(_TAG_STREAM, words).generate_state(1, np.uint32)[0])
                seed_all(seed)
            self._active_streams.add(name)
            try:
                yield self
            finally:
                self._active_streams.discard(name)
                self._stream_states[name] = snapshot()
                restore(outer)

    def torch_generator(self, name: str, device: torch.device | str = "cpu") -> torch.Generator:
        """The named ``torch.Generator`` on ``device``; the same object on every call.

        Args:
            name: generator name, e.g. ``"shuffle"``.
            device: device the generator lives on (CPU by default; ``"cuda"`` for CUDA ops).
        """
        words = _name_words(name, "generator")
        device = torch.device(device)
        key = (name, str(device))
        if key not in self._torch_generators:
            seed = int(self._sequence(_TAG_TORCH_GENERATOR, words).generate_state(1, np.uint64)[0])
            generator = torch.Generator(device=device)
            generator.manual_seed(seed)
            self._torch_generators[key] = generator
        return self._torch_generators[key]

    def numpy_generator(self, name: str) -> np.random.Generator:
        """The named ``numpy.random.Generator`` (PCG64); the same object on every call."""
        words = _name_words(name, "generator")
        if name not in self._numpy_generators:
            sequence = self._sequence(_TAG_NUMPY_GENERATOR, words)
            self._numpy_generators[name] = np.random.Generator(np.random.PCG64(sequence))
        return self._numpy_generators[name]

    def dataloader_kwargs(self, name: str = "data") -> dict[str, Any]:
        """Keyword arguments that make a ``torch.utils.data.DataLoader`` reproducible.

        Shuffling draws from ``torch_generator(name)``; each worker process has its torch seed
        set by PyTorch from that generator, and ``seed_worker`` seeds NumPy and Python
        ``random`` from it too, so random augmentation in workers is reproducible as well.

        Example:
            >>> loader = DataLoader(ds, batch_size=32, shuffle=True, num_workers=2,
            ...                     **rng.dataloader_kwargs())
        """
        return {"generator": self.torch_generator(name), "worker_init_fn": seed_worker}

    def seed_globals(self) -> None:
        """Seed the global generators (Python, NumPy, torch on all devices, Pyro) from the seed."""
        seed_all(self.seed if not self._path else self.derive_seed("globals") % 2**32)

    # ----------------------------------------------------------------------------- state
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue the run: streams, generators and the global state.

        Contains only tensors, ints, floats, strings, lists, tuples and dicts, so it can be saved
        with ``torch.save`` and read with ``torch.load(..., weights_only=True)``.
        """
        return {
            "format_version": STATE_FORMAT_VERSION,
            "seed": self.seed,
            "path": list(self._path),
            "global": snapshot(),
            "streams": dict(self._stream_states),
            "torch_generators": {
                f"{name}@{device}": generator.get_state()
                for (name, device), generator in self._torch_generators.items()
            },
            "numpy_generators": {
                name: generator.bit_generator.state
                for name, generator in self._numpy_generators.items()
            },
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a ``state_dict``, including the global generator states.

        Raises:
            TypeError: if ``state`` is not a dict.
            ValueError: if it is malformed, of another format version, or from an `RNG` with a
                different seed or spawn path.
        """
        if not isinstance(state, dict):
            raise TypeError(f"RNG state must be a dict from RNG.state_dict(), got {type(state)}.")
        required = {
            "format_version",
            "seed",
            "path",
            "global",
            "streams",
            "torch_generators",
            "numpy_generators",
        }
        missing = required - state.keys()
        if missing:
            raise ValueError(
                f"malformed RNG state: missing keys {sorted(missing)}; pass the dict returned by "
                "RNG.state_dict()."
            )
        if state["format_version"] != STATE_FORMAT_VERSION:
            raise ValueError(
                f"RNG state has format version {state['format_version']!r}, this bnn reads "
                f"version {STATE_FORMAT_VERSION}."
            )
        if state["seed"] != self.seed or tuple(state["path"]) != self._path:
            raise ValueError(
                f"RNG state belongs to RNG(seed={state['seed']}, path={tuple(state['path'])}), "
                f"not to {self!r}; load it into RNG({state['seed']}) or use RNG.from_state_dict."
            )
        try:
            restore(state["global"])
            streams = {name: dict(s) for name, s in state["streams"].items()}
            for stream_state in streams.values():
                python_state(stream_state["python"])  # validates shape before anything is kept
            # Generators already handed out (e.g. to a DataLoader) are updated in place, so
            # every holder of one continues from the restored state.
            generators = {}
            for key, generator_state in state["torch_generators"].items():
                name, _, device = key.rpartition("@")
                generator = self._torch_generators.get((name, device))
                if generator is None:
                    generator = torch.Generator(device=device)
                generator.set_state(generator_state)
                generators[(name, device)] = generator
            numpy_generators = {}
            for name, bit_state in state["numpy_generators"].items():
                numpy_generator = self._numpy_generators.get(name)
                if numpy_generator is None:
                    numpy_generator = np.random.Generator(np.random.PCG64())
                numpy_generator.bit_generator.state = bit_state
                numpy_generators[name] = numpy_generator
        except (KeyError, TypeError, ValueError, RuntimeError, AttributeError) as error:
            raise ValueError(
                f"malformed RNG state ({type(error).__name__}: {error}); pass the dict returned "
                "by RNG.state_dict()."
            ) from error
        self._stream_states = streams
        self._torch_generators = generators
        self._numpy_generators = numpy_generators

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> RNG:
        """A new `RNG` restored from ``state_dict`` output."""
        if not isinstance(state, dict) or "seed" not in state or "path" not in state:
            raise ValueError("malformed RNG state: expected the dict returned by RNG.state_dict().")
        rng = cls(state["seed"], _path=tuple(int(w) for w in state["path"]))
        rng.load_state_dict(state)
        return rng
