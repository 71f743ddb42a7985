"""Fast, reproducible draws of the noise that Bayesian layers, flipout and MC dropout consume.

Every draw comes from the global torch generator of the target device (inside ``bnn``: an
`RNG` stream), so one seed still fixes every number. On the CPU, torch's samplers run on one
thread from one Mersenne Twister, and in a Bayesian network they cost as much as the matrix
products. Here, on the CPU:

* a draw larger than one block is cut into fixed-size blocks; each block gets its own Mersenne
  Twister, whose whole 624-word state is drawn from the global generator, and the blocks are
  filled in parallel on torch's intra-op threads. The blocks depend only on the number of
  elements, so the values are bit-identical for any thread count and in any process;
* ``bernoulli_mask`` draws an exact ``Bernoulli(keep)`` from one random byte per element
  (keep if the byte is below ``⌊256·keep⌋``; a byte equal to it, probability 1/256, keeps with
  probability ``frac(256·keep)`` by a uniform draw): the distribution of ``rand() < keep`` from
  a quarter of the random bits, found with integer arithmetic rather than comparisons;
* ``rademacher`` takes its signs from random bytes.

On other devices (whose samplers are parallel already), inside ``torch.func`` transforms (which
manage randomness themselves) and under ``torch.compile``, torch's own samplers are used.

Example:
    >>> with bnn.RNG(0).stream("predict"):
    ...     eps = standard_normal((100, 400, 400), dtype=torch.float32, device="cpu")
"""

from __future__ import annotations

import functools
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import torch
from torch import Tensor
from torch._C._functorch import maybe_current_level
from torch.utils._python_dispatch import _get_current_dispatch_mode

__all__ = ["bernoulli_mask", "rademacher", "standard_normal"]

NORMAL_BLOCK = 1 << 16
"""Normal draws per block (one generator each)."""

BYTE_BLOCK = 1 << 20
"""Random bytes per block."""

_MT_WORDS = 624
_MT_STATE = slice(24, 24 + 8 * _MT_WORDS)  # byte range of the state words in get_state()
_pool_lock = threading.Lock()
_pool: tuple[int, int, ThreadPoolExecutor] | None = None  # (pid, workers, executor)

Shape = Sequence[int]
Fill = Callable[[Tensor, torch.Generator | None], None]


def standard_normal(shape: Shape, *, dtype: torch.dtype, device: torch.device | str) -> Tensor:
    """``N(0, 1)`` draws of the given shape (global generator of ``device``)."""
    if not _blockwise(device, dtype):
        return torch.randn(tuple(shape), dtype=dtype, device=device)
    out = torch.empty(tuple(shape), dtype=dtype, device="cpu")
    _fill_in_blocks(out.view(-1), NORMAL_BLOCK, _fill_normal)
    return out


def bernoulli_mask(
    shape: Shape, keep: float, *, dtype: torch.dtype, device: torch.device | str
) -> Tensor:
    """Inverted-dropout mask: ``1/keep`` with probability ``keep``, else ``0`` (exact).

    Args:
        shape: mask shape.
        keep: probability of keeping a unit, in ``(0, 1]``.
        dtype: floating dtype of the mask.
        device: device of the mask.
    """
    if not 0.0 < keep <= 1.0:
        raise ValueError(f"keep probability must be in (0, 1], got {keep}.")
    if keep == 1.0:
        return torch.ones(tuple(shape), dtype=dtype, device=device)
    if not _blockwise(device, dtype):
        uniform = torch.rand(tuple(shape), dtype=dtype, device=device)
        return (uniform < keep).to(dtype) / keep
    count = _numel(shape)
    octets = _random_bytes(count)
    threshold = int(keep * 256)
    # Arithmetic instead of comparisons (which run ~5x slower on byte tensors), and no new
    # buffer besides the mask (fresh pages cost as much as the arithmetic): clamp(threshold -
    # byte, 0, 1) is 1 below the threshold and 0 at or above it; the ties are then flagged in
    # the bytes themselves.
    kept = octets.to(dtype).neg_().add_(threshold).clamp_(0, 1)
    fraction = keep * 256 - threshold
    if fraction > 0:  # bytes equal to the threshold keep with probability `fraction`
        ties = _positions_of_ones(octets.bitwise_xor_(threshold).clamp_(max=1).bitwise_xor_(1))
        kept[ties] = (torch.rand(ties.shape[0], dtype=torch.float64) < fraction).to(dtype)
    return kept.div_(keep).view(tuple(shape))  # as torch's dropout scales


def rademacher(shape: Shape, *, dtype: torch.dtype, device: torch.device | str) -> Tensor:
    """Independent random signs ``±1`` of the given shape."""
    if not _blockwise(device, dtype):
        uniform = torch.rand(tuple(shape), device=device, dtype=dtype)
        return torch.where(uniform < 0.5, -1.0, 1.0).to(dtype)
    signs = _random_bytes(_numel(shape)).view(torch.int8)
    signs.bitwise_right_shift_(7).bitwise_or_(1)  # sign bit -> -1 or +1
    return signs.to(dtype).view(tuple(shape))


# ----------------------------------------------------------------------------- internals
def _blockwise(device: torch.device | str, dtype: torch.dtype) -> bool:
    """Whether to use the blockwise CPU samplers here."""
    return (
        torch.device(device).type == "cpu"
        and dtype in (torch.float32, torch.float64)
        and maybe_current_level() is None
        and not torch.compiler.is_compiling()
        and _get_current_dispatch_mode() is None  # e.g. fake tensors while exporting
    )


def _numel(shape: Shape) -> int:
    count = 1
    for size in shape:
        count *= int(size)
    return count


def _random_bytes(count: int) -> Tensor:
    """``count`` uniformly random bytes (uint8), 64 bits per generator call."""
    words = torch.empty(-(-count // 8), dtype=torch.int64, device="cpu")
    _fill_in_blocks(words, BYTE_BLOCK // 8, _fill_random_words)
    return words.view(torch.uint8)[:count]


def _positions_of_ones(flags: Tensor) -> Tensor:
    """Increasing indices of the ones in a 1-d uint8 tensor of zeros and ones (few ones).

    Searches 64-bit words (eight flags each) first, then the flags of the words that hold a
    one: an eighth of the scan of ``flags.nonzero()``.
    """
    whole = flags.numel() // 8 * 8
    words = flags[:whole].view(torch.int64).nonzero().squeeze(1)
    within = flags[:whole].view(-1, 8)[words].nonzero()
    positions = words[within[:, 0]] * 8 + within[:, 1]
    rest = flags[whole:].nonzero().squeeze(1) + whole
    return torch.cat([positions, rest])


def _fill_normal(part: Tensor, generator: torch.Generator | None) -> None:
    part.normal_(generator=generator)


def _fill_random_words(part: Tensor, generator: torch.Generator | None) -> None:
    part.random_(-(2**63), None, generator=generator)  # the full 64-bit range


def _fill_in_blocks(flat: Tensor, block: int, fill: Fill) -> None:
    """Fill a 1-d tensor block by block, in parallel where each block has its own generator.

    One block draws from the global generator itself. Several blocks each get a Mersenne
    Twister whose whole 624-word state is drawn from the global generator, so sibling blocks
    (and blocks of different calls) never share a stream the way 32-bit seeds could.
    """
    starts = range(0, flat.numel(), block)
    template = _state_template()
    if len(starts) == 1 or template is None:
        for first in starts:  # the global generator, block after block
            fill(flat[first : first + block], None)
        return
    words = torch.empty((len(starts), _MT_WORDS), dtype=torch.int64, device="cpu")
    words.random_(0, 2**32)  # one draw of every block's state from the stream

    def fill_group(indices: range) -> None:
        for index in indices:
            state = template.clone()
            state[_MT_STATE].view(torch.int64).copy_(words[index])
            generator = torch.Generator()
            generator.set_state(state)
            fill(flat[starts[index] : starts[index] + block], generator)

    workers = max(1, min(torch.get_num_threads(), len(starts)))
    groups = [range(len(starts))[w::workers] for w in range(workers)]
    pending = [_executor(workers).submit(fill_group, group) for group in groups[1:]]
    fill_group(groups[0])
    for future in pending:
        future.result()


def _mt19937_init(seed: int, count: int) -> list[int]:
    """The first ``count`` words of the Mersenne Twister state after seeding with ``seed``."""
    words = [seed & 0xFFFFFFFF]
    for i in range(1, count):
        previous = words[-1]
        words.append((1812433253 * (previous ^ (previous >> 30)) + i) & 0xFFFFFFFF)
    return words


@functools.cache
def _state_template() -> Tensor | None:
    """A freshly seeded CPU generator state whose 624 state words sit where expected.

    ``torch.Generator.get_state()`` on the CPU is a byte image of the Mersenne Twister state
    (an 8-byte seed, two ints, an 8-byte offset, then 624 words stored as 64-bit integers).
    The layout is checked against the known seeding sequence; if it differs (another torch
    version), ``None``: draws then stay on the global generator, serially.
    """
    generator = torch.Generator()
    generator.manual_seed(5489)
    state = generator.get_state()
    if state.numel() < _MT_STATE.stop:
        return None
    found = state[_MT_STATE].view(torch.int64)[:4].tolist()
    return state if found == _mt19937_init(5489, 4) else None


def _executor(workers: int) -> ThreadPoolExecutor:
    """A thread pool of at least ``workers - 1`` threads, recreated after a fork."""
    global _pool
    with _pool_lock:
        if _pool is None or _pool[0] != os.getpid() or _pool[1] < workers - 1:
            if _pool is not None and _pool[0] == os.getpid():
                _pool[2].shutdown(wait=False)
            size = max(1, workers - 1)
            _pool = (os.getpid(), size, ThreadPoolExecutor(size, "bnn-noise"))
        return _pool[2]
