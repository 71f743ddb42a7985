"""Fast, reproducible draws of the noise that Bayesian layers, flipout and MC dropout consume.

Every draw comes from the global torch generator of the target device (inside ``bnn``: an
`RNG` stream), so one seed still fixes every number. On the CPU, torch's samplers run on one
thread from one Mersenne Twister, and in a Bayesian network they cost as much as the matrix
products. Here, on the CPU:

* a draw larger than one block is cut into fixed-size blocks; each block gets its own generator,
  seeded from one number drawn from the global generator, and the blocks are filled in parallel
  on torch's intra-op threads. The blocks depend only on the number of elements, so the values
  are bit-identical for any thread count and in any process;
* :func:`bernoulli_mask` draws an exact ``Bernoulli(keep)`` from one random byte per element
  (keep if the byte is below ``⌊256·keep⌋``; a byte equal to it, probability 1/256, keeps with
  probability ``frac(256·keep)`` by a uniform draw): the distribution of ``rand() < keep`` from
  a quarter of the random bits;
* :func:`rademacher` takes its signs from random bytes.

On other devices (whose samplers are parallel already), inside ``torch.func`` transforms (which
manage randomness themselves) and under ``torch.compile``, torch's own samplers are used.

Example:
    >>> with bnn.RNG(0).stream("predict"):
    ...     eps = standard_normal((100, 400, 400), dtype=torch.float32, device="cpu")
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import torch
from torch import Tensor
from torch._C._functorch import maybe_current_level

__all__ = ["bernoulli_mask", "rademacher", "standard_normal"]

NORMAL_BLOCK = 1 << 16
"""Normal draws per block (one generator each)."""

BYTE_BLOCK = 1 << 20
"""Random bytes per block."""

_MASK64 = (1 << 64) - 1
_pool: tuple[int, int, ThreadPoolExecutor] | None = None  # (pid, workers, executor)

Shape = Sequence[int]
Fill = Callable[[Tensor, torch.Generator | None], None]


def standard_normal(shape: Shape, *, dtype: torch.dtype, device: torch.device | str) -> Tensor:
    """``N(0, 1)`` draws of the given shape (global generator of ``device``)."""
    if not _blockwise(device, dtype):
        return torch.randn(tuple(shape), dtype=dtype, device=device)
    out = torch.empty(tuple(shape), dtype=dtype)
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
    octets = _random_bytes(_numel(shape))
    threshold = int(keep * 256)
    kept = octets < threshold
    fraction = keep * 256 - threshold
    if fraction > 0:  # bytes equal to the threshold keep with probability `fraction`
        ties = (octets == threshold).nonzero().squeeze(1)
        kept[ties] = torch.rand(ties.shape[0], dtype=torch.float64) < fraction
    return kept.to(dtype).mul_(1.0 / keep).view(tuple(shape))


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
    )


def _numel(shape: Shape) -> int:
    count = 1
    for size in shape:
        count *= int(size)
    return count


def _random_bytes(count: int) -> Tensor:
    """``count`` uniformly random bytes (uint8), 64 bits per generator call."""
    words = torch.empty(-(-count // 8), dtype=torch.int64)
    _fill_in_blocks(words, BYTE_BLOCK // 8, _fill_random_words)
    return words.view(torch.uint8)[:count]


def _fill_normal(part: Tensor, generator: torch.Generator | None) -> None:
    part.normal_(generator=generator)


def _fill_random_words(part: Tensor, generator: torch.Generator | None) -> None:
    part.random_(-(2**63), None, generator=generator)  # the full 64-bit range


def _fill_in_blocks(flat: Tensor, block: int, fill: Fill) -> None:
    """Fill a 1-d tensor block by block; one block draws from the global generator itself."""
    if flat.numel() <= block:
        fill(flat, None)
        return
    base = int(torch.empty((), dtype=torch.int64).random_())  # one draw from the stream
    starts = range(0, flat.numel(), block)

    def fill_group(indices: range) -> None:
        for index in indices:
            generator = torch.Generator()
            generator.manual_seed(_mix(base, index))
            fill(flat[starts[index] : starts[index] + block], generator)

    workers = max(1, min(torch.get_num_threads(), len(starts)))
    groups = [range(len(starts))[w::workers] for w in range(workers)]
    if workers == 1:
        fill_group(groups[0])
        return
    pending = [_executor(workers).submit(fill_group, group) for group in groups[1:]]
    fill_group(groups[0])
    for future in pending:
        future.result()


def _mix(seed: int, index: int) -> int:
    """SplitMix64 of ``seed`` and a block index: well-separated seeds for sibling generators."""
    z = (seed + (index + 1) * 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def _executor(workers: int) -> ThreadPoolExecutor:
    """A thread pool of at least ``workers - 1`` threads, recreated after a fork."""
    global _pool
    if _pool is None or _pool[0] != os.getpid() or _pool[1] < workers - 1:
        _pool = (os.getpid(), workers - 1, ThreadPoolExecutor(max(1, workers - 1), "bnn-noise"))
    return _pool[2]
