"""Synthetic regression with a known noise level, for scaling tests and benchmarks.

Inputs are uniform on ``[0, 1]^F`` (``F ≥ 5``); the target is Friedman's first function
(Friedman 1991) on the first five inputs, standardised to mean 0 and variance 1 under that
input law, plus Gaussian noise of a chosen std ``σ``:

    f(x) = (10 sin(π x₁ x₂) + 20 (x₃ − ½)² + 10 x₄ + 5 x₅ − 14.4133) / 4.8812,
    y = f(x) + σ ε,   ε ~ N(0, 1).

The other ``F − 5`` inputs are irrelevant. Because ``σ`` is known, so is the best any model can
do: test RMSE ``σ`` and test log-likelihood ``−log σ − ½ log 2π − ½`` per point
(`oracle_scores`). Rows are generated in blocks of ``BLOCK_ROWS`` from one child generator each
(``rng.spawn(block)``), so the first ``n`` rows of a larger set equal the set of ``n`` rows;
`SyntheticRegression` generates each block when it is first read.

Example:
    >>> x, y = synthetic_regression(100_000, noise_std=0.1, rng=0)   # [100000, 8], [100000, 1]
    >>> oracle_scores(0.1)                                           # (0.1, 0.8836...)
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.utils.data import Dataset

from bnn._checks import check_int, check_positive
from bnn.random.default import RNGLike, resolve_rng
from bnn.random.rng import RNG

__all__ = [
    "BLOCK_ROWS",
    "SyntheticRegression",
    "friedman",
    "oracle_scores",
    "synthetic_regression",
]

BLOCK_ROWS = 8192
"""Rows per independently generated block."""

# E f_raw(x) and its std for x ~ U[0, 1]^5, in closed form: E sin(π x₁x₂) = Cin(π)/π and
# E sin²(π x₁x₂) = ½ − Si(2π)/(4π) (Cin, Si: the cosine and sine integrals); the quadratic and
# linear terms' moments are those of the uniform law. The tests check both by Monte Carlo.
_MEAN = 14.413297342419856
_STD = 4.8812358856524245


def friedman(x: Tensor) -> Tensor:
    """The standardised Friedman #1 function of the first five columns: ``[N, F] -> [N, 1]``."""
    if x.dim() != 2 or x.shape[1] < 5:
        raise ValueError(f"x must be [N, F] with F >= 5 columns, got {tuple(x.shape)}.")
    raw = (
        10 * torch.sin(math.pi * x[:, 0] * x[:, 1])
        + 20 * (x[:, 2] - 0.5) ** 2
        + 10 * x[:, 3]
        + 5 * x[:, 4]
    )
    return ((raw - _MEAN) / _STD).unsqueeze(-1)


def oracle_scores(noise_std: float) -> tuple[float, float]:
    """``(RMSE, mean test log-likelihood)`` of the true predictive ``N(f(x), σ²)``."""
    check_positive("noise_std", noise_std)
    return noise_std, -math.log(noise_std) - 0.5 * math.log(2 * math.pi) - 0.5


class SyntheticRegression(Dataset[tuple[Tensor, Tensor]]):
    """``num_rows`` synthetic rows as a map-style ``Dataset``, generated block by block when
    first read (block ``b`` of ``BLOCK_ROWS`` rows from ``rng.spawn(b)``) and kept: nothing is
    generated before it is needed, and the rows are the same in any reading order.

    Args:
        num_rows: ``N`` (≥ 1).
        features: ``F`` (≥ 5).
        noise_std: ``σ`` (> 0).
        rng: the seed; block ``b`` comes from ``rng.spawn(b)``.
        dtype: of inputs and targets.

    Example:
        >>> data = SyntheticRegression(500_000, rng=0)
        >>> loader = torch.utils.data.DataLoader(data, batch_size=512, shuffle=True)
    """

    def __init__(
        self,
        num_rows: int,
        *,
        features: int = 8,
        noise_std: float = 0.1,
        rng: RNGLike = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.num_rows = check_int("num_rows", num_rows)
        self.features = check_int("features", features, minimum=5)
        self.noise_std = check_positive("noise_std", noise_std)
        self.dtype = dtype
        self._rng: RNG = resolve_rng(rng)
        self._blocks: dict[int, tuple[Tensor, Tensor]] = {}

    def __len__(self) -> int:
        return self.num_rows

    def block(self, index: int) -> tuple[Tensor, Tensor]:
        """Rows ``index·BLOCK_ROWS`` to the next block's start (the last one may be shorter)."""
        start = index * BLOCK_ROWS
        if not 0 <= start < self.num_rows:
            raise IndexError(f"block {index} is outside {self.num_rows} rows.")
        if index not in self._blocks:
            rows = min(BLOCK_ROWS, self.num_rows - start)
            generator = self._rng.spawn(index).torch_generator("synthetic")
            x = torch.rand(rows, self.features, generator=generator, dtype=torch.float64)
            noise = torch.randn(rows, 1, generator=generator, dtype=torch.float64)
            y = friedman(x) + self.noise_std * noise
            self._blocks[index] = (x.to(self.dtype), y.to(self.dtype))
        return self._blocks[index]

    def __getitem__(self, row: int) -> tuple[Tensor, Tensor]:
        x, y = self.rows(torch.tensor([row]))
        return x[0], y[0]

    def __getitems__(self, rows: list[int]) -> list[tuple[Tensor, Tensor]]:
        """A ``DataLoader``'s batch read at once (one gather per block it touches)."""
        x, y = self.rows(torch.tensor(rows, dtype=torch.long))
        return list(zip(x, y, strict=True))

    def rows(self, index: Tensor) -> tuple[Tensor, Tensor]:
        """Rows ``index`` (1-D, negative counts from the end): ``x [B, F]``, ``y [B, 1]``."""
        if index.numel() and not bool(((index >= -self.num_rows) & (index < self.num_rows)).all()):
            raise IndexError(f"rows {index.tolist()} are not all inside {self.num_rows} rows.")
        index = index % self.num_rows
        x = torch.empty(len(index), self.features, dtype=self.dtype)
        y = torch.empty(len(index), 1, dtype=self.dtype)
        blocks = index // BLOCK_ROWS
        for b in torch.unique(blocks).tolist():
            chosen = blocks == b
            block_x, block_y = self.block(b)
            x[chosen], y[chosen] = (
                block_x[index[chosen] % BLOCK_ROWS],
                block_y[index[chosen] % BLOCK_ROWS],
            )
        return x, y

    def tensors(self) -> tuple[Tensor, Tensor]:
        """Every row at once: ``x [N, F]``, ``y [N, 1]``."""
        blocks = [self.block(b) for b in range(-(-self.num_rows // BLOCK_ROWS))]
        return torch.cat([x for x, _ in blocks]), torch.cat([y for _, y in blocks])


def synthetic_regression(
    num_rows: int,
    *,
    features: int = 8,
    noise_std: float = 0.1,
    rng: RNGLike = None,
    dtype: torch.dtype = torch.float32,
) -> tuple[Tensor, Tensor]:
    """``(x [N, F], y [N, 1])`` of `SyntheticRegression` (see the module docstring).

    Example:
        >>> x, y = synthetic_regression(10_000, rng=0)
    """
    return SyntheticRegression(
        num_rows, features=features, noise_std=noise_std, rng=rng, dtype=dtype
    ).tensors()
