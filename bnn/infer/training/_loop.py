"""The mini-batch training loop shared by gradient-trained methods (``bnn.fit`` and above).

Each function does one thing a step or an epoch needs: build the loader and the optimiser,
estimate the expected negative log-likelihood, take one step, run one epoch. Where the work
runs (one process, or data-parallel ranks) is a `bnn.parallel.TrainingStrategy`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import vmap
from torch.utils.data import DataLoader, Dataset, TensorDataset

from bnn.likelihoods import Likelihood
from bnn.nn.layers import bayesian_modules, kl_divergence
from bnn.nn.priors import Prior
from bnn.parallel.distributed import TrainingStrategy
from bnn.random.rng import RNG

__all__ = [
    "NonFiniteLossError",
    "build_in_init_stream",
    "OptimizerSpec",
    "adam",
    "StepResult",
    "TrainData",
    "device_of",
    "epoch_stream",
    "make_loader",
    "make_optimizer",
    "training_step",
]

TrainData = tuple[Tensor, Tensor] | Dataset[Any] | DataLoader[Any]
OptimizerSpec = torch.optim.Optimizer | Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN or infinite loss."""


@dataclass(frozen=True)
class StepResult:
    """What one optimiser step contributes to the epoch's record."""

    nll: float
    penalty: float
    kl: Tensor


def build_in_init_stream(factory: Callable[[], nn.Module], rng: RNG) -> nn.Module:
    """``factory()`` inside ``rng``'s ``"init"`` stream (one ensemble member, one learner)."""
    if isinstance(factory, nn.Module) or not callable(factory):
        given = f"a {type(factory).__name__}"
        if isinstance(factory, nn.Module):
            given += " (a network, not a function that builds one)"
        raise TypeError(
            "factory must be a function that builds a new network, e.g. lambda: make_net(); "
            f"got {given}."
        )
    with rng.stream("init"):
        module = factory()
    if not isinstance(module, nn.Module):
        raise TypeError(f"factory must return an nn.Module, got {type(module).__name__}.")
    return module


def device_of(model: nn.Module) -> torch.device:
    """The device of ``model``'s parameters (it must have some)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}.")
    parameter = next(model.parameters(), None)
    if parameter is None:
        raise ValueError("model has no parameters to train.")
    return parameter.device


def make_loader(
    data: TrainData,
    batch_size: int,
    dataset_size: int | None,
    rng: RNG,
    strategy: TrainingStrategy,
) -> tuple[DataLoader[Any], int]:
    """The mini-batch loader (shuffled by generator ``"data"``) and the data set size ``N``."""
    if isinstance(data, DataLoader):
        loader = data  # distributed: its sampler decides each rank's share (DistributedSampler)
    else:
        options = rng.dataloader_kwargs("data")
        if isinstance(data, tuple):
            dataset: Dataset[Any] = _tensor_pairs(data)
            options["collate_fn"] = _batch_as_gathered
        elif isinstance(data, Dataset):
            dataset = data
        else:
            raise TypeError(
                "data must be (x, y) tensors, a Dataset or a DataLoader, got "
                f"{type(data).__name__}."
            )
        loader = strategy.loader(dataset, batch_size, options)
    if dataset_size is not None:
        size = dataset_size
    else:
        try:
            size = len(loader.dataset)  # type: ignore[arg-type]
        except TypeError as error:
            raise ValueError(
                "cannot tell the dataset size N (needed to scale the KL); pass dataset_size=N."
            ) from error
    if size < 1:
        raise ValueError("training data is empty.")
    return loader, size


class _TensorPairs(TensorDataset):
    """``(x, y)`` tensors whose mini-batch is gathered with one index per tensor.

    A ``DataLoader`` reads a plain ``TensorDataset`` row by row and stacks the rows; gathering
    ``x[index]`` gives the same values at a fraction of the cost (the loader's shuffling, and so
    every batch, is unchanged).
    """

    def __getitems__(self, indices: list[int]) -> tuple[Tensor, Tensor]:
        index = torch.as_tensor(indices, dtype=torch.long)
        x, y = self.tensors
        return x[index].contiguous(), y[index].contiguous()  # as stacked rows (channels_last)


def _batch_as_gathered(batch: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
    """The ``collate_fn`` of `_TensorPairs`: its batch is already whole."""
    return batch


def _tensor_pairs(data: tuple[Any, ...]) -> _TensorPairs:
    if len(data) != 2 or not all(isinstance(t, Tensor) for t in data):
        raise TypeError("data as a tuple must be (x, y) tensors.")
    x, y = data
    if x.shape[0] == 0:
        raise ValueError("training data is empty (x has 0 rows).")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x has {x.shape[0]} rows but y has {y.shape[0]}; they must match.")
    for name, tensor in (("x", x), ("y", y)):
        if tensor.device.type == "meta":
            raise ValueError(
                f"{name} is a meta tensor (a shape without values); train on real data."
            )
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise ValueError(f"{name} contains NaN or inf; clean or impute it before training.")
    return _TensorPairs(x, y)


# torch >= 2.4 has a fused Adam on CPU too; before, only on CUDA.
_FUSED_ADAM_DEVICES = (
    ("cpu", "cuda") if tuple(map(int, torch.__version__.split(".")[:2])) >= (2, 4) else ("cuda",)
)


def make_optimizer(
    spec: OptimizerSpec | None, model: nn.Module, likelihood: Likelihood, lr: float
) -> torch.optim.Optimizer:
    """``spec`` itself, ``spec(parameters)``, or a (fused where possible) Adam."""
    if isinstance(spec, torch.optim.Optimizer):
        return spec
    parameters = [*model.parameters(), *likelihood.parameters()]
    return adam(parameters, lr) if spec is None else spec(parameters)


def adam(parameters: Sequence[Tensor], lr: float) -> torch.optim.Adam:
    """Adam, fused where torch has the kernel (same Adam, fewer memory sweeps)."""
    fused = all(p.is_floating_point() and p.device.type in _FUSED_ADAM_DEVICES for p in parameters)
    return torch.optim.Adam(parameters, lr=lr, fused=fused or None)


def expected_nll_sum(
    model: nn.Module, likelihood: Likelihood, x: Tensor, y: Tensor, num_samples: int
) -> Tensor:
    """``-Σ_i E_q[log p(y_i | x_i, w)]`` over the batch, by ``num_samples`` MC samples."""
    if num_samples == 1:
        return -likelihood.training_log_prob(model(x), y).sum()

    def one_sample(_: Tensor) -> Tensor:
        return likelihood.training_log_prob(model(x), y).sum()

    log_likelihoods: Tensor = vmap(one_sample, randomness="different")(torch.arange(num_samples))
    return -log_likelihoods.mean()


def log_prior_of_plain_parameters(model: nn.Module, prior: Prior) -> Tensor:
    """``log p(w)`` of the parameters that do not belong to Bayesian layers."""
    bayesian = {
        f"{path}.{name}" if path else name
        for path, layer in bayesian_modules(model)
        for name, _ in layer.named_parameters()
    }
    terms = [prior.log_prob(p) for name, p in model.named_parameters() if name not in bayesian]
    if not terms:
        return torch.zeros(())
    return torch.stack(terms).sum()


@dataclass(frozen=True)
class StepContext:
    """Everything a training step needs that stays fixed over the run."""

    model: nn.Module
    likelihood: Likelihood
    optimizer: torch.optim.Optimizer
    parameters: list[nn.Parameter]
    noise: RNG
    strategy: TrainingStrategy
    dataset_size: int
    num_samples: int
    prior: Prior | None
    has_bayesian_layers: bool = True
    """Whether ``model`` has layers with a KL term (else the KL is 0 without a module walk)."""
    epoch_in_stream: bool = False
    """The epoch runs inside the ``"fit"`` stream, entered once (see `epoch_stream`)."""


def epoch_stream(context: StepContext) -> contextlib.AbstractContextManager[object]:
    """The ``"fit"`` stream for a whole epoch, where nothing between steps draws at random.

    Each step's forward pass draws its noise (dropout masks, weight samples) from the ``"fit"``
    stream. Swapping the process's generators in and out costs about 0.2 ms (NumPy's state is
    copied word by word), as much as the step itself on a small network, so where the code
    between steps is known to draw nothing (``(x, y)`` tensors gathered by index, bnn's own
    optimiser) the stream is entered once per epoch: the same numbers, in the same order.
    Elsewhere (a ``Dataset`` whose ``__getitem__`` may augment at random, a caller's optimiser)
    each step enters it, so that only the forward pass draws from it. Held for the epoch, it
    also covers the backward pass (hooks that add gradient noise draw from ``"fit"`` too) and
    holds the process-wide generator lock: another thread's stream block or prediction waits
    for the epoch, not for one forward pass.
    """
    return context.noise.stream("fit") if context.epoch_in_stream else contextlib.nullcontext()


def training_step(
    context: StepContext, x: Tensor, y: Tensor, beta: float, where: str
) -> StepResult:
    """One optimiser step on the per-datum loss ``nll + β · KL / N``.

    Raises:
        NonFiniteLossError: the loss is NaN or inf on any process (``where`` names the step).
    """
    forward_stream = (
        contextlib.nullcontext() if context.epoch_in_stream else context.noise.stream("fit")
    )
    with forward_stream:
        nll_sum = expected_nll_sum(context.model, context.likelihood, x, y, context.num_samples)
        kl_value = (
            kl_divergence(context.model)
            if context.has_bayesian_layers
            else torch.zeros((), device=x.device)
        )
    if context.prior is not None:
        kl_value = kl_value - log_prior_of_plain_parameters(context.model, context.prior)
    count, finite = context.strategy.global_count(x.shape[0], nll_sum, kl_value)
    nll = nll_sum / count  # this rank's share of the global-batch mean
    penalty = beta * kl_value / context.dataset_size
    loss = nll * context.strategy.world_size + penalty
    if not finite:
        raise NonFiniteLossError(
            f"non-finite loss at {where}: nll={float(nll.detach()):.4g}, "
            f"kl={float(kl_value.detach()):.4g}. Lower the learning rate, standardise inputs "
            "and targets, or check the data for NaN/inf."
        )
    context.optimizer.zero_grad()
    loss.backward()  # type: ignore[no-untyped-call]
    context.strategy.average_gradients(context.parameters)
    context.optimizer.step()
    return StepResult(
        nll=float(nll.detach()), penalty=float(penalty.detach()), kl=kl_value.detach()
    )


def start_epoch(loader: DataLoader[Any], epoch: int, *modules: nn.Module) -> None:
    """Tell epoch-aware samplers and datasets the epoch; put ``modules`` in training mode."""
    for owner in (loader.dataset, loader.sampler, loader.batch_sampler):
        set_epoch = getattr(owner, "set_epoch", None)  # e.g. a DistributedSampler
        if callable(set_epoch):
            set_epoch(epoch)
    for module in modules:
        module.train()
