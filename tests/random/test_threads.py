"""Thread safety: predictions and streams in many threads equal the single-threaded ones.

The guarantee (docs/reliability.md): the global generators and a model's train/eval flags are
process-wide, so `RNG.stream` blocks and prediction's temporary eval mode hold one re-entrant
process lock. Calls that pass their own seed (``rng=``) give bit-identical results whatever
other threads do at the same time.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import torch
from torch import nn

import bnn

THREADS = 8
SEEDS = range(12)


def _models() -> dict[str, nn.Module]:
    with bnn.RNG(0).stream("init"):
        dropout_net = nn.Sequential(nn.Linear(3, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 1))
        bayes_net = nn.Sequential(nn.Linear(3, 16), nn.Tanh(), nn.Linear(16, 1))
    return {
        "bayesian": bnn.bayesianize(bayes_net, init="random", rng=0),
        "mc_dropout": bnn.MCDropout(dropout_net),
    }


def _predict(model: nn.Module, x: torch.Tensor, seed: int) -> torch.Tensor:
    prediction = bnn.predict_with_uncertainty(
        model, x, likelihood=bnn.Gaussian(0.1), num_samples=16, rng=seed
    )
    return prediction.samples


def test_concurrent_predictions_on_shared_models_equal_the_serial_ones_bit_for_bit() -> None:
    x = torch.randn(64, 3, generator=torch.Generator().manual_seed(1))
    models = _models()
    for model in models.values():
        model.train()  # prediction must switch to eval and back without racing
    serial = {(name, s): _predict(m, x, s) for name, m in models.items() for s in SEEDS}
    jobs = [(name, s) for _ in range(3) for name in models for s in SEEDS]
    start = threading.Barrier(THREADS)

    def run(job: tuple[str, int]) -> tuple[tuple[str, int], torch.Tensor]:
        if job[1] < THREADS // 2:  # line threads up so that the first calls overlap
            start.wait(timeout=30)
        return job, _predict(models[job[0]], x, job[1])

    with ThreadPoolExecutor(THREADS) as pool:
        results = list(pool.map(run, jobs[: THREADS // 2] * 2 + jobs))
    mismatches = [job for job, samples in results if not torch.equal(samples, serial[job])]
    assert not mismatches
    for model in models.values():  # every module's flag is as the caller left it
        assert all(module.training for module in model.modules())


def test_streams_in_threads_draw_what_they_draw_alone() -> None:
    def draws(seed: int) -> torch.Tensor:
        rng = bnn.RNG(seed)
        parts = []
        for _ in range(20):
            with rng.stream("noise"):
                parts.append(torch.randn(50))
        return torch.cat(parts)

    serial = {s: draws(s) for s in SEEDS}
    outer_state = torch.get_rng_state()
    with ThreadPoolExecutor(THREADS) as pool:
        concurrent = dict(zip(SEEDS, pool.map(draws, SEEDS), strict=True))
    assert all(torch.equal(concurrent[s], serial[s]) for s in SEEDS)
    assert torch.equal(torch.get_rng_state(), outer_state)  # nothing leaks out of the blocks


def test_the_default_rng_can_be_used_from_several_threads() -> None:
    """Before the lock, two threads entering the default RNG's stream raised 'already active'."""
    x = torch.randn(8, 3)
    model = _models()["mc_dropout"]
    with bnn.random.use_rng(bnn.RNG(5)), ThreadPoolExecutor(4) as pool:
        outputs = list(pool.map(lambda _: _predict(model, x, None), range(16)))  # type: ignore[arg-type]
    assert all(o.shape == (16, 8, 1) for o in outputs)
    assert len({o.sum().item() for o in outputs}) == 16  # one stream, continued: all differ
