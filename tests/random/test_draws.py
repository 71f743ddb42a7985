"""bnn.random.draws: exact distributions, one seed fixes every number at any thread count."""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest
import torch

import bnn
from bnn.random import draws as noise
from bnn.random.draws import BYTE_BLOCK, NORMAL_BLOCK, bernoulli_mask, rademacher, standard_normal

CPU = torch.device("cpu")


@pytest.fixture
def restore_threads() -> Iterator[None]:
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def draw(kind: str, seed: int, shape: tuple[int, ...]) -> torch.Tensor:
    with bnn.RNG(seed).stream("predict"):
        if kind == "normal":
            return standard_normal(shape, dtype=torch.float32, device=CPU)
        if kind == "mask":
            return bernoulli_mask(shape, 0.7, dtype=torch.float32, device=CPU)
        return rademacher(shape, dtype=torch.float32, device=CPU)


@pytest.mark.usefixtures("restore_threads")
@pytest.mark.parametrize("kind", ["normal", "mask", "signs"])
def test_one_seed_fixes_every_number_at_any_thread_count(kind: str) -> None:
    size = 5 * NORMAL_BLOCK + 7 if kind == "normal" else 3 * BYTE_BLOCK + 7
    shape = (3, size // 3)  # several blocks and a ragged last one
    torch.set_num_threads(1)
    serial = draw(kind, 0, shape)
    torch.set_num_threads(2)
    parallel = draw(kind, 0, shape)
    assert torch.equal(serial, parallel)
    assert not torch.equal(serial, draw(kind, 1, shape))


def test_blocks_of_one_draw_are_not_copies_of_each_other() -> None:
    flat = draw("normal", 0, (3 * NORMAL_BLOCK,)).view(3, NORMAL_BLOCK)
    correlation = torch.corrcoef(flat)  # independent blocks: sd of a correlation ~ 1/sqrt(n)
    off_diagonal = correlation[~torch.eye(3, dtype=torch.bool)]
    assert off_diagonal.abs().max() < 5 / math.sqrt(NORMAL_BLOCK)


def test_standard_normal_moments() -> None:
    # Tolerances: 5 standard errors of each estimate over n i.i.d. draws (sd/sqrt(n); the
    # sample variance of N(0, 1) has sd sqrt(2/n); a tail frequency sqrt(p(1-p)/n)).
    n = 2_000_000
    x = draw("normal", 3, (n,)).double()
    assert abs(float(x.mean())) < 5 / math.sqrt(n)
    assert abs(float(x.var()) - 1.0) < 5 * math.sqrt(2 / n)
    assert abs(float((x > 1.96).double().mean()) - 0.025) < 5 * math.sqrt(0.025 * 0.975 / n)


@pytest.mark.parametrize("keep", [0.9, 0.5 + 0.5 / 256, 0.25])
def test_bernoulli_mask_keeps_exactly_the_requested_fraction(keep: float) -> None:
    # keep = 0.5 + 0.5/256 sits halfway between two byte thresholds: without the tie draw the
    # keep rate would be off by 0.002, eight standard errors at this size.
    n = 4_000_000
    with bnn.RNG(7).stream("predict"):
        mask = bernoulli_mask((n,), keep, dtype=torch.float64, device=CPU)
    assert mask.dtype == torch.float64
    assert set(mask.unique().tolist()) == {0.0, 1.0 / keep}
    rate = float((mask > 0).double().mean())
    assert abs(rate - keep) < 4 * math.sqrt(keep * (1 - keep) / n)


def _comparison_mask(count: int, keep: float) -> torch.Tensor:
    """The mask's definition with comparisons, from the same bytes and tie draws."""
    octets = noise._random_bytes(count)
    threshold = int(keep * 256)
    kept = octets < threshold
    ties = (octets == threshold).nonzero().squeeze(1)
    if keep * 256 > threshold:
        kept[ties] = torch.rand(ties.shape[0], dtype=torch.float64) < keep * 256 - threshold
    return kept.to(torch.float32).div_(keep)


@pytest.mark.parametrize("keep", [0.9, 0.3, 1 / 256, 0.5 / 256, 255 / 256, 0.9999])
@pytest.mark.parametrize("count", [1, 7, 8, 1001, BYTE_BLOCK + 13])
def test_bernoulli_mask_is_bit_identical_to_its_comparison_definition(
    keep: float, count: int
) -> None:
    # The mask is computed with byte arithmetic and a word-wise search for ties; this is the
    # plain definition (keep below the threshold byte, a uniform draw at it), including the
    # thresholds 0 and 255 and counts that are not a multiple of a word.
    with bnn.RNG(4).stream("predict"):
        mask = bernoulli_mask((count,), keep, dtype=torch.float32, device=CPU)
    with bnn.RNG(4).stream("predict"):
        reference = _comparison_mask(count, keep)
    assert torch.equal(mask, reference)


def test_positions_of_ones_equals_nonzero() -> None:
    generator = torch.Generator().manual_seed(0)
    for count in (0, 1, 7, 8, 9, 64, 1003):
        flags = (torch.rand(count, generator=generator) < 0.05).to(torch.uint8)
        flags[-1:] = 1  # a one in the ragged tail when there is one
        expected = flags.nonzero().squeeze(1)
        assert torch.equal(noise._positions_of_ones(flags), expected)


def test_bernoulli_mask_rejects_impossible_rates_and_keeps_everything_at_one() -> None:
    with pytest.raises(ValueError, match="keep probability"):
        bernoulli_mask((3,), 0.0, dtype=torch.float32, device=CPU)
    assert torch.equal(bernoulli_mask((3,), 1.0, dtype=torch.float32, device=CPU), torch.ones(3))


def test_rademacher_signs_are_fair() -> None:
    n = 1_000_000
    signs = draw("signs", 2, (n,))
    assert set(signs.unique().tolist()) == {-1.0, 1.0}
    assert abs(float(signs.double().mean())) < 5 / math.sqrt(n)


def test_inside_vmap_each_batch_member_gets_its_own_noise() -> None:
    def one(_: torch.Tensor) -> torch.Tensor:
        return standard_normal((4 * NORMAL_BLOCK,), dtype=torch.float32, device=CPU)

    with bnn.RNG(0).stream("predict"):
        rows = torch.func.vmap(one, randomness="different")(torch.arange(3))
    assert rows.shape == (3, 4 * NORMAL_BLOCK)
    assert not torch.equal(rows[0], rows[1])


def test_block_generators_take_their_whole_state_from_the_stream() -> None:
    """The state image layout is what the blocks rely on: words of seed s == manual_seed(s)."""
    template = noise._state_template()  # noqa: SLF001
    assert template is not None, "torch's CPU generator state layout changed"
    seed = 123_456_789
    state = template.clone()
    words = torch.tensor(noise._mt19937_init(seed, 624))  # noqa: SLF001
    state[noise._MT_STATE].view(torch.int64).copy_(words)  # noqa: SLF001
    built, seeded = torch.Generator(), torch.Generator().manual_seed(seed)
    built.set_state(state)
    assert torch.equal(torch.randn(1000, generator=built), torch.randn(1000, generator=seeded))
