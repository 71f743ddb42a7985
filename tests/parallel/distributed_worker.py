"""Data-parallel scenarios run by ``tests/test_distributed.py`` under ``torchrun`` (gloo, CPU).

    python -m torch.distributed.run --standalone --nproc-per-node=2 \
        tests/parallel/distributed_worker.py OUTPUT_DIR

Each rank writes ``OUTPUT_DIR/rank{r}.pt`` with the trained parameters of every scenario; the
test compares them with the same runs in one process. The scenario builders are imported by the
test too, so both sides build identical models and data.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

import bnn
from bnn.infer import sgld

SEED = 7
PER_RANK_BATCH = 8


def regression_data(n: int) -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(n, 3, generator=generator)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5]]) + 0.3 * torch.randn(n, 1, generator=generator)
    return x, y


def mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(3, 16), nn.Tanh(), nn.Linear(16, 1))


def build_mlp(seed: int = SEED) -> nn.Module:
    with bnn.RNG(seed).stream("init"):
        return mlp()


def build_bayesian(seed: int = SEED) -> nn.Module:
    model = build_mlp(seed)
    bnn.bayesianize(model, init="random", init_std=0.05, rng=seed)
    return model


def map_fit(
    model: nn.Module, n: int, batch_size: int, seed: int = SEED, **kwargs: Any
) -> bnn.Gaussian:
    likelihood = bnn.Gaussian(0.5, learn_std=True)
    bnn.fit(
        model,
        regression_data(n),
        likelihood=likelihood,
        epochs=3,
        batch_size=batch_size,
        lr=1e-2,
        prior=bnn.nn.Normal(0.0, 1.0),
        rng=seed,
        progress=False,
        **kwargs,
    )
    return likelihood


def one_vi_step(model: nn.Module, n: int, batch_size: int, **kwargs: Any) -> bnn.Gaussian:
    likelihood = bnn.Gaussian(0.5, learn_std=True)
    bnn.fit(
        model,
        regression_data(n),
        likelihood=likelihood,
        epochs=1,
        batch_size=batch_size,
        optimizer=lambda params: torch.optim.SGD(params, lr=0.1),
        rng=SEED,
        progress=False,
        **kwargs,
    )
    return likelihood


def sgld_draws(batch_size: int, **kwargs: Any) -> Tensor:
    x, y = regression_data(40)
    samples, _ = sgld(
        build_mlp(),
        (x, y),
        likelihood=bnn.Gaussian(0.3),
        lr=1e-4,
        schedule=bnn.infer.StepSchedule(steps=30, burn_in=10, thin=5),
        batch_size=batch_size,
        rng=SEED,
        progress=False,
        **kwargs,
    )
    return torch.cat([t.reshape(-1) for t in samples.samples.values()])


def ensemble_state(**kwargs: Any) -> dict[str, Tensor]:
    ensemble, _ = bnn.infer.deep_ensemble(
        mlp,
        regression_data(32),
        likelihood=bnn.Gaussian(0.5, learn_std=True),
        num_members=3,
        rng=SEED,
        epochs=2,
        batch_size=8,
        threads_per_member=1,
        **kwargs,
    )
    state = {
        f"member{i}.{k}": v
        for i, m in enumerate(ensemble.members)
        for k, v in m.state_dict().items()
    }
    for i, likelihood in enumerate(ensemble.likelihoods):
        state.update({f"likelihood{i}.{k}": v for k, v in likelihood.state_dict().items()})
    return state


class FailsOnRankOne(bnn.Gaussian):
    """A likelihood whose training fails on rank 1 only (a member that diverges there)."""

    def training_log_prob(self, output: Tensor, y: Tensor) -> Tensor:
        if dist.get_rank() == 1:
            raise FloatingPointError("member diverged")
        return super().training_log_prob(output, y)


def flat(model: nn.Module, likelihood: nn.Module) -> Tensor:
    return torch.cat(
        [p.detach().reshape(-1) for p in [*model.parameters(), *likelihood.parameters()]]
    )


def main(output: Path) -> None:
    dist.init_process_group("gloo")
    torch.set_num_threads(1)
    results: dict[str, Any] = {}

    for n in (64, 70):  # 70: a last global batch of 6 (3 per rank)
        model = build_mlp()
        likelihood = map_fit(nn.parallel.DistributedDataParallel(model), n, PER_RANK_BATCH)
        results[f"map_{n}"] = flat(model, likelihood)

    model = build_bayesian()
    likelihood = one_vi_step(model, 16, PER_RANK_BATCH, distributed=True)
    results["vi_step"] = flat(model, likelihood)

    results["sgld"] = sgld_draws(4, distributed=True)
    results["ensemble"] = ensemble_state(distributed=True)

    try:
        bnn.infer.deep_ensemble(
            mlp,
            regression_data(8),
            likelihood=FailsOnRankOne(0.5),
            num_members=2,
            rng=SEED,
            epochs=1,
            distributed=True,
        )
    except Exception as error:  # noqa: BLE001 - the message is what the test checks
        results["member_failure_error"] = f"{type(error).__name__}: {error}"
    else:
        results["member_failure_error"] = ""

    try:
        map_fit(build_mlp(), 64, PER_RANK_BATCH, seed=dist.get_rank(), distributed=True)
    except ValueError as error:
        results["seed_mismatch_error"] = str(error)
    else:
        results["seed_mismatch_error"] = ""

    torch.save(results, output / f"rank{dist.get_rank()}.pt")
    dist.barrier()  # no rank tears down gloo while another still talks to it
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
