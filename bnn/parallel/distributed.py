"""Data-parallel training over ``torch.distributed`` (one process per rank, ``torchrun``).

Two strategies, each with a one-process twin (`SingleProcess`) so that the training code never
asks which one it runs under:

* **data-parallel training** (`DataParallel` via ``training_strategy``), shared by ``bnn.fit``
  and ``bnn.infer.sgld`` / ``bnn.infer.sghmc``;
* **independent jobs spread over ranks** (``job_strategy``): ``bnn.infer.deep_ensemble`` trains
  member ``i`` on rank ``i mod R`` and gathers every member on every rank, identical to an
  ensemble trained in one process.

The data-parallel contract:

* Every rank is given the same data, seed and model; ``batch_size`` is **per rank**, so a run
  on ``R`` ranks with ``batch_size=b`` sees the same global mini-batches as one process with
  ``batch_size=R·b``: the global batch is drawn from the shared ``"data"`` generator exactly as a
  one-process ``DataLoader`` would draw it, and rank ``r`` takes its elements ``r, r+R, ...``.
* Each rank's loss is scaled by the *global* batch size and gradients are averaged over ranks,
  so the per-datum ELBO (or the SG-MCMC potential) is the one-process quantity: the data term
  is summed over the global batch once, and the KL / log-prior term, identical on every rank,
  is counted once, not once per rank.
* Weight noise and dropout on rank ``r`` come from ``rng.spawn(f"rank-{r}")`` (more
  independent noise per global step); everything that must agree across ranks (shuffling,
  validation, SG-MCMC injected noise) comes from the shared ``rng``.

Launch with ``torchrun --nproc-per-node=R script.py`` and call
``torch.distributed.init_process_group()`` first; see ``docs/distributed.md``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sized
from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, Sampler

from bnn.random.rng import RNG

__all__ = [
    "DataParallel",
    "DistributedContext",
    "RankBatchSampler",
    "SingleProcess",
    "TrainingStrategy",
    "job_strategy",
    "process_group_context",
    "resolve_distributed",
    "training_strategy",
]


@dataclass(frozen=True)
class DistributedContext:
    """This process's place in the default process group."""

    rank: int
    world_size: int

    def noise_rng(self, rng: RNG) -> RNG:
        """The rank's own randomness (weight noise, dropout)."""
        return rng.spawn(f"rank-{self.rank}")

    def local_part(self, batch: Tensor) -> Tensor:
        """This rank's share ``batch[rank::world_size]`` of a global batch (dim 0)."""
        return batch[self.rank :: self.world_size]

    def all_reduce(self, value: Tensor, *, average: bool = False) -> Tensor:
        """Sum (or mean) of ``value`` over ranks, in place; returns it."""
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
        if average:
            value.div_(self.world_size)
        return value

    def average_gradients(self, parameters: Iterable[nn.Parameter]) -> None:
        """Average ``.grad`` over ranks in one flat all-reduce (missing gradients count as 0)."""
        with_grad = [p for p in parameters if p.requires_grad]
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in with_grad]
        for p, averaged in zip(with_grad, self.average(grads), strict=True):
            p.grad = averaged

    def average(self, tensors: list[Tensor]) -> list[Tensor]:
        """Element-wise mean over ranks of each tensor: one flat all-reduce per dtype/device."""
        averaged: dict[int, Tensor] = {}
        groups: dict[tuple[torch.dtype, torch.device], list[int]] = {}
        for index, tensor in enumerate(tensors):
            groups.setdefault((tensor.dtype, tensor.device), []).append(index)
        for members in groups.values():
            parts = [tensors[i] for i in members]
            flat = self.all_reduce(torch.cat([t.reshape(-1) for t in parts]), average=True)
            pieces = torch.split(flat, [t.numel() for t in parts])
            for i, piece, t in zip(members, pieces, parts, strict=True):
                averaged[i] = piece.view_as(t).clone()
        return [averaged[i] for i in range(len(tensors))]

    def broadcast_state(self, *modules: nn.Module, src: int = 0) -> None:
        """Copy parameters and buffers of ``modules`` from rank ``src`` to every rank."""
        with torch.no_grad():
            for module in modules:
                for tensor in [*module.parameters(), *module.buffers()]:
                    dist.broadcast(tensor.data, src=src)

    def broadcast_object(self, value: Any, src: int) -> Any:
        """A picklable Python object from rank ``src`` (between this job's own processes)."""
        box = [value]
        dist.broadcast_object_list(box, src=src)
        return box[0]

    def check_same_seed(self, rng: RNG) -> None:
        """Raise if the ranks were given different seeds (their shuffling would disagree)."""
        seeds: list[Any] = [None] * self.world_size
        dist.all_gather_object(seeds, (rng.seed, rng.derive_seed("distributed-check")))
        if any(seed != seeds[0] for seed in seeds):
            raise ValueError(
                f"ranks were given different RNGs {[s[0] for s in seeds]}; pass the same seed on "
                "every rank (each rank's own noise is derived from it with rng.spawn)."
            )


def resolve_distributed(
    model: nn.Module, distributed: bool | None
) -> tuple[nn.Module, DistributedContext | None]:
    """Unwrap a ``DistributedDataParallel`` model and decide whether to run data-parallel.

    ``distributed=None`` means "data-parallel iff ``model`` is wrapped in DDP". The returned
    module is the plain network: ``bnn`` averages gradients itself (one flat all-reduce per
    step, after backward), which also covers likelihood parameters and vectorised MC samples.
    """
    wrapped = isinstance(model, DistributedDataParallel)
    module = model.module if wrapped else model
    if not isinstance(module, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(module).__name__}.")
    if distributed is None:
        distributed = wrapped
    if not distributed:
        return module, None
    return module, process_group_context()


def process_group_context() -> DistributedContext:
    """Rank and world size of the default process group (which must be initialised)."""
    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError(
            "distributed training needs an initialised process group: launch with "
            "`torchrun --nproc-per-node=R script.py` and call "
            "torch.distributed.init_process_group() (backend 'gloo' on CPU, 'nccl' on GPUs) "
            "before training."
        )
    return DistributedContext(rank=dist.get_rank(), world_size=dist.get_world_size())


class RankBatchSampler(Sampler[list[int]]):
    """This rank's share of the global mini-batches a one-process loader would draw.

    The global batches are those of ``DataLoader(dataset, batch_size=R·b, shuffle=True,
    generator=g)``; rank ``r`` yields elements ``r, r+R, ...`` of each. A last global batch with
    fewer than ``R`` elements is skipped on every rank, so all ranks take the same number of
    steps.

    Args:
        dataset: the (full) dataset, identical on every rank.
        batch_size: per-rank batch size ``b``.
        context: rank and world size.
        generator: the shared shuffling generator (same seed on every rank).
    """

    def __init__(
        self,
        dataset: Sized,
        batch_size: int,
        context: DistributedContext,
        generator: torch.Generator,
    ) -> None:
        self.context = context
        self.batches = BatchSampler(
            RandomSampler(dataset, generator=generator),
            batch_size * context.world_size,
            drop_last=False,
        )

    def __iter__(self) -> Iterator[list[int]]:
        for batch in self.batches:
            if len(batch) >= self.context.world_size:
                yield batch[self.context.rank :: self.context.world_size]

    def __len__(self) -> int:
        full, last = divmod(len(self.batches.sampler), self.batches.batch_size)  # type: ignore[arg-type]
        return full + (1 if last >= self.context.world_size else 0)


class TrainingStrategy(Protocol):
    """How a training loop runs: in one process, or data-parallel over ranks.

    The loop calls these hooks and never asks which strategy it has.
    """

    world_size: int
    rank: int

    def prepare(self, rng: RNG, *modules: nn.Module) -> RNG:
        """Agree on the start (seed, weights) and return the RNG for weight noise and dropout."""
        ...

    def loader(
        self, dataset: Dataset[Any], batch_size: int, kwargs: dict[str, Any]
    ) -> DataLoader[Any]:
        """The shuffled mini-batches this process trains on."""
        ...

    def global_count(self, local: int, nll_sum: Tensor, kl: Tensor) -> tuple[Tensor, bool]:
        """Examples in the global batch, and whether every process's loss terms are finite."""
        ...

    def average_gradients(self, parameters: Iterable[nn.Parameter]) -> None:
        """Make ``.grad`` the gradient of the global-batch loss."""
        ...

    def sum_over_ranks(self, value: float, device: torch.device) -> float:
        """``value`` summed over processes."""
        ...

    def local_part(self, batch: Tensor) -> Tensor:
        """This process's share of a global batch (dim 0)."""
        ...

    def average(self, tensors: list[Tensor]) -> list[Tensor]:
        """Element-wise mean over processes of each tensor."""
        ...

    def owns(self, index: int) -> bool:
        """Whether this process trains independent job ``index`` (e.g. ensemble member)."""
        ...

    def check_same_seed(self, rng: RNG) -> None:
        """Raise if the processes were given different seeds."""
        ...

    def share_results(
        self,
        results: dict[int, Any],
        count: int,
        failure: Exception | None,
        portable: Callable[[Any], Any],
    ) -> dict[int, Any]:
        """Every job's result on every process (``portable`` makes one sendable); a failure on
        any process raises on all of them, so none waits forever."""
        ...

    def agree(self, stop: bool) -> bool:
        """One decision for every process (rank 0's)."""
        ...


class SingleProcess:
    """The one-process strategy: every hook is the identity."""

    world_size = 1
    rank = 0

    def prepare(self, rng: RNG, *modules: nn.Module) -> RNG:  # noqa: ARG002
        return rng

    def loader(
        self, dataset: Dataset[Any], batch_size: int, kwargs: dict[str, Any]
    ) -> DataLoader[Any]:
        return DataLoader(dataset, batch_size=batch_size, shuffle=True, **kwargs)

    def global_count(self, local: int, nll_sum: Tensor, kl: Tensor) -> tuple[Tensor, bool]:
        finite = bool(torch.isfinite(nll_sum)) and bool(torch.isfinite(kl))
        return torch.tensor(float(local), device=nll_sum.device), finite

    def average_gradients(self, parameters: Iterable[nn.Parameter]) -> None:
        pass

    def sum_over_ranks(self, value: float, device: torch.device) -> float:  # noqa: ARG002
        return value

    def local_part(self, batch: Tensor) -> Tensor:
        return batch

    def average(self, tensors: list[Tensor]) -> list[Tensor]:
        return tensors

    def owns(self, index: int) -> bool:  # noqa: ARG002 - one process owns every job
        return True

    def check_same_seed(self, rng: RNG) -> None:
        pass

    def share_results(
        self,
        results: dict[int, Any],
        count: int,  # noqa: ARG002
        failure: Exception | None,
        portable: Callable[[Any], Any],  # noqa: ARG002
    ) -> dict[int, Any]:
        if failure is not None:
            raise failure
        return results

    def agree(self, stop: bool) -> bool:
        return stop


class DataParallel:
    """Data-parallel training over the default process group (see the module docstring)."""

    def __init__(self, context: DistributedContext) -> None:
        self.context = context
        self.world_size = context.world_size
        self.rank = context.rank

    def prepare(self, rng: RNG, *modules: nn.Module) -> RNG:
        self.context.check_same_seed(rng)
        self.context.broadcast_state(*modules)
        return self.context.noise_rng(rng)

    def loader(
        self, dataset: Dataset[Any], batch_size: int, kwargs: dict[str, Any]
    ) -> DataLoader[Any]:
        sampler = RankBatchSampler(dataset, batch_size, self.context, kwargs["generator"])  # type: ignore[arg-type]
        return DataLoader(dataset, batch_sampler=sampler, **kwargs)

    def global_count(self, local: int, nll_sum: Tensor, kl: Tensor) -> tuple[Tensor, bool]:
        finite = bool(torch.isfinite(nll_sum)) and bool(torch.isfinite(kl))
        both = torch.tensor([float(local), float(not finite)], device=nll_sum.device)
        self.context.all_reduce(both)
        return both[0], not bool(both[1])

    def average_gradients(self, parameters: Iterable[nn.Parameter]) -> None:
        self.context.average_gradients(parameters)

    def sum_over_ranks(self, value: float, device: torch.device) -> float:
        total = torch.tensor(value, dtype=torch.float64, device=device)
        return float(self.context.all_reduce(total))

    def agree(self, stop: bool) -> bool:
        return bool(self.context.broadcast_object(stop, src=0))

    def local_part(self, batch: Tensor) -> Tensor:
        return self.context.local_part(batch)

    def average(self, tensors: list[Tensor]) -> list[Tensor]:
        return self.context.average(tensors)

    def owns(self, index: int) -> bool:
        """Job ``i`` runs on rank ``i mod R``."""
        return index % self.world_size == self.context.rank

    def check_same_seed(self, rng: RNG) -> None:
        self.context.check_same_seed(rng)

    def share_results(
        self,
        results: dict[int, Any],
        count: int,
        failure: Exception | None,
        portable: Callable[[Any], Any],
    ) -> dict[int, Any]:
        self._raise_if_any_rank_failed(failure)
        return {  # every rank receives every result from its owner
            i: self.context.broadcast_object(
                portable(results[i]) if i in results else None, src=i % self.world_size
            )
            for i in range(count)
        }

    def _raise_if_any_rank_failed(self, failure: Exception | None) -> None:
        failures: list[Any] = [None] * self.world_size
        dist.all_gather_object(failures, None if failure is None else repr(failure))
        if failure is not None:
            raise failure
        failed = [(rank, message) for rank, message in enumerate(failures) if message is not None]
        if failed:
            rank, message = failed[0]
            raise RuntimeError(
                f"training jobs (e.g. ensemble members) failed on rank {rank}: {message}"
            )


def training_strategy(
    model: nn.Module, distributed: bool | None
) -> tuple[nn.Module, SingleProcess | DataParallel]:
    """The plain network and how to train it (see ``resolve_distributed``)."""
    module, context = resolve_distributed(model, distributed)
    return module, SingleProcess() if context is None else DataParallel(context)


def job_strategy(distributed: bool) -> SingleProcess | DataParallel:
    """How independent jobs (ensemble members) are spread: all here, or ``i mod R`` per rank."""
    return DataParallel(process_group_context()) if distributed else SingleProcess()
