"""The synthetic regression generator: its stated moments, its noise, its block structure."""

from __future__ import annotations

import math

import pytest
import torch

from bnn.apps.datasets import SyntheticRegression, friedman, oracle_scores, synthetic_regression
from bnn.apps.datasets.synthetic import BLOCK_ROWS


def test_the_function_is_standardised_and_the_noise_has_the_stated_std() -> None:
    """Over 200,000 rows: mean f within 4.5 s.e. of 0 (s.e. 1/√n), var f within 4.5 s.e. of 1
    (s.e. √((μ₄ − 1)/n), μ₄ measured), residual std within 4.5 s.e. of σ (s.e. σ/√(2n))."""
    n, sigma = 200_000, 0.3
    x, y = synthetic_regression(n, noise_std=sigma, rng=0, dtype=torch.float64)
    f = friedman(x)
    assert abs(float(f.mean())) < 4.5 / math.sqrt(n)
    fourth = float((f**4).mean())
    assert abs(float(f.var()) - 1) < 4.5 * math.sqrt((fourth - 1) / n)
    assert abs(float((y - f).std()) - sigma) < 4.5 * sigma / math.sqrt(2 * n)
    rmse, log_likelihood = oracle_scores(sigma)
    scores = torch.distributions.Normal(f, sigma).log_prob(y)
    assert rmse == sigma
    assert abs(float(scores.mean()) - log_likelihood) < 4.5 * float(scores.std()) / math.sqrt(n)
    assert (x >= 0).all() and (x < 1).all() and x.shape == (n, 8) and y.shape == (n, 1)


def test_rows_are_the_same_however_they_are_read_and_seeds_differ() -> None:
    n = 2 * BLOCK_ROWS + 100
    x, y = synthetic_regression(n, rng=3)
    smaller_x, _ = synthetic_regression(BLOCK_ROWS + 7, rng=3)
    assert torch.equal(smaller_x, x[: BLOCK_ROWS + 7])  # a prefix of a larger set
    lazy = SyntheticRegression(n, rng=3)
    for row in (0, BLOCK_ROWS - 1, BLOCK_ROWS, n - 1, -1):
        assert torch.equal(lazy[row][0], x[row]) and torch.equal(lazy[row][1], y[row])
    loader = torch.utils.data.DataLoader(lazy, batch_size=5000)
    assert torch.equal(torch.cat([b[1] for b in loader]), y)
    other, _ = synthetic_regression(n, rng=4)
    assert not torch.equal(other, x)


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"num_rows": 0}, "num_rows"),
        ({"num_rows": 10, "features": 4}, "features"),
        ({"num_rows": 10, "noise_std": 0.0}, "noise_std"),
    ],
)
def test_bad_settings_are_refused(options: dict[str, float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        synthetic_regression(**options)  # type: ignore[arg-type]
    with pytest.raises(IndexError, match="not all inside"):
        SyntheticRegression(10)[10]
