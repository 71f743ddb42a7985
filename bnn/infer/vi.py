"""Bayes by backprop: minimise the per-datum negative ELBO with mini-batches.

For data ``D = {(x_i, y_i)}_{i=1..N}`` and a mini-batch ``B``, each step minimises

    loss = - 1/|B| Σ_{i∈B} E_q[log p(y_i | x_i, w)]  +  β_t · KL(q ‖ p) / N

(Blundell et al. 2015, "Weight Uncertainty in Neural Networks"), an unbiased estimate of
``-ELBO / N``. ``β_t`` ramps linearly from 0 to ``kl_weight`` over ``kl_annealing_epochs``
(KL annealing / warm-up; Sønderby et al. 2016), and ``kl_weight < 1`` gives a tempered
posterior. A model without Bayesian layers (``MCDropout``, a plain network) has ``KL = 0``:
the same loop then does maximum-likelihood / MAP training.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import vmap
from torch.utils.data import DataLoader, Dataset, TensorDataset
from tqdm.auto import tqdm

from bnn.default_rng import RNGLike, resolve_rng
from bnn.distributed import DistributedContext, RankBatchSampler, resolve_distributed
from bnn.early_stopping import EarlyStopping
from bnn.layers import bayesian_modules, kl_divergence
from bnn.likelihoods import Likelihood
from bnn.posterior import as_posterior, eval_mode
from bnn.predict import predict_with_uncertainty
from bnn.priors import Prior
from bnn.rng import RNG
from bnn.validation import check_int, check_positive

__all__ = ["History", "NonFiniteLossError", "fit"]

TrainData = tuple[Tensor, Tensor] | Dataset[Any] | DataLoader[Any]
OptimizerSpec = torch.optim.Optimizer | Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN or infinite loss."""


@dataclass
class History:
    """Per-epoch training record.

    Attributes:
        loss: mean per-datum negative ELBO over the epoch's steps.
        nll: mean negative log-likelihood term.
        kl: KL divergence ``KL(q ‖ p)`` (not divided by N) at the end of each epoch.
        kl_weight: ``β`` at the end of each epoch.
        val_nll: validation negative log predictive density (if validation data was given).
        best_epoch: epoch whose weights were restored (``None`` without validation data).
        stopped_early: whether early stopping ended training.
    """

    loss: list[float] = field(default_factory=list)
    nll: list[float] = field(default_factory=list)
    kl: list[float] = field(default_factory=list)
    kl_weight: list[float] = field(default_factory=list)
    val_nll: list[float] = field(default_factory=list)
    best_epoch: int | None = None
    stopped_early: bool = False


def fit(
    model: nn.Module,
    train_data: TrainData,
    *,
    likelihood: Likelihood,
    epochs: int = 100,
    batch_size: int = 128,
    lr: float = 1e-3,
    optimizer: OptimizerSpec | None = None,
    num_samples: int = 1,
    kl_weight: float = 1.0,
    kl_annealing_epochs: int = 0,
    val_data: tuple[Tensor, Tensor] | None = None,
    patience: int | None = None,
    val_samples: int = 20,
    dataset_size: int | None = None,
    prior: Prior | None = None,
    rng: RNGLike = None,
    distributed: bool | None = None,
    progress: bool = True,
) -> History:
    """Train ``model`` (and a learnable ``likelihood``) by maximising the per-datum ELBO.

    Args:
        model: network with Bayesian layers (VI), or ``MCDropout``/plain network (KL = 0);
            may be wrapped in ``DistributedDataParallel`` (then trained data-parallel).
        train_data: ``(x, y)`` tensors ``[N, ...]``, a ``Dataset`` of ``(x, y)`` pairs, or a
            ``DataLoader`` (used as is; its shuffling is then yours to seed, e.g. with
            ``rng.dataloader_kwargs()``).
        likelihood: observation model (its parameters, e.g. a learned noise std, are trained).
        epochs: passes over the data (≥ 1).
        batch_size: mini-batch size for tensors/datasets (per rank when distributed).
        lr: learning rate of the default Adam optimiser.
        optimizer: an optimiser over ``model`` and ``likelihood`` parameters, or a factory
            ``params -> Optimizer``; default ``Adam(lr)`` (PyTorch's fused implementation).
        num_samples: Monte Carlo samples of the expected log-likelihood per step (vectorised).
        kl_weight: final ``β`` (1 = the ELBO).
        kl_annealing_epochs: epochs over which ``β`` ramps up linearly from 0.
        val_data: ``(x, y)`` for early stopping on the validation NLL; the best epoch's weights
            are restored at the end.
        patience: epochs without validation improvement before stopping (needs ``val_data``).
        val_samples: function samples for the validation predictive.
        dataset_size: ``N`` for the KL scaling when a DataLoader's dataset has no length.
        prior: MAP regularisation of the model's *plain* (non-Bayesian) parameters: adds
            ``-log p(w) / N`` to the loss. ``Normal(0, s)`` is L2 weight decay with coefficient
            ``1 / (2 s² N)`` on the per-datum loss (``weight_decay = 1 / (s² N)`` in
            ``torch.optim.SGD`` terms); ``Laplace(0, b)`` is an L1 penalty ``|w| / (b N)``.
        rng: randomness: shuffling (generator ``"data"``), weight noise (stream ``"fit"``),
            validation (stream ``"predict"``).
        distributed: data-parallel over the initialised ``torch.distributed`` process group
            (``None``: iff ``model`` is a ``DistributedDataParallel``). ``R`` ranks with
            ``batch_size=b`` follow the one-process run with ``batch_size=R·b``; the KL is
            counted once; rank ``r`` draws its weight noise from ``rng.spawn(f"rank-{r}")``.
            See :mod:`bnn.distributed`.
        progress: show a tqdm bar.

    Returns:
        The :class:`History`. The model is left in eval mode.

    Raises:
        NonFiniteLossError: a NaN/inf loss, naming the epoch, step and which term.
        ValueError / TypeError: invalid data or hyper-parameters.
    """
    _check_hyperparameters(epochs, batch_size, lr, num_samples, kl_weight, kl_annealing_epochs)
    if not isinstance(likelihood, Likelihood):
        raise TypeError(f"likelihood must be a bnn Likelihood, got {type(likelihood).__name__}.")
    if prior is not None and not isinstance(prior, Prior):
        raise TypeError(f"prior must be a bnn.priors.Prior, got {type(prior).__name__}.")
    if patience is not None and val_data is None:
        raise ValueError("patience needs val_data to monitor; pass val_data=(x_val, y_val).")
    generator = resolve_rng(rng)
    model, context = resolve_distributed(model, distributed)
    device = _device_of(model)
    likelihood.to(device)
    noise = generator
    if context is not None:
        context.check_same_seed(generator)
        context.broadcast_state(model, likelihood)
        noise = context.noise_rng(generator)
    loader, size = _loader(train_data, batch_size, dataset_size, generator, context)
    optim = _optimizer(optimizer, model, likelihood, lr)
    parameters = [*model.parameters(), *likelihood.parameters()]
    stopper = EarlyStopping(patience) if val_data is not None else None
    history = History()
    steps_per_epoch = max(len(loader), 1)
    annealing_steps = kl_annealing_epochs * steps_per_epoch
    step = 0
    bar = tqdm(range(epochs), desc="fit", disable=not progress)
    for epoch in bar:
        for owner in (loader.dataset, loader.sampler, loader.batch_sampler):
            set_epoch = getattr(owner, "set_epoch", None)  # e.g. a DistributedSampler
            if callable(set_epoch):
                set_epoch(epoch)
        model.train()
        likelihood.train()
        totals = {"nll": 0.0, "penalty": 0.0}
        kl_value = torch.zeros(())
        beta = kl_weight
        for batch_index, (x, y) in enumerate(loader):
            x, y = x.to(device), y.to(device)
            beta = (
                kl_weight * min(1.0, (step + 1) / annealing_steps) if annealing_steps else kl_weight
            )
            with noise.stream("fit"):
                nll_sum = _expected_nll_sum(model, likelihood, x, y, num_samples)
                kl_value = kl_divergence(model)
            if prior is not None:
                kl_value = kl_value - _log_prior_of_plain_parameters(model, prior)
            count, finite = _global_count(x.shape[0], nll_sum, kl_value, context)
            nll = nll_sum / count  # this rank's share of the global-batch mean
            penalty = beta * kl_value / size
            loss = (nll * context.world_size if context else nll) + penalty
            if not finite:
                raise NonFiniteLossError(
                    f"non-finite loss at epoch {epoch}, step {step} (batch {batch_index}): "
                    f"nll={float(nll.detach()):.4g}, kl={float(kl_value.detach()):.4g}. Lower the "
                    "learning rate, standardise inputs and targets, or check the data for NaN/inf."
                )
            optim.zero_grad()
            loss.backward()  # type: ignore[no-untyped-call]
            if context is not None:
                context.average_gradients(parameters)
            optim.step()
            totals["nll"] += float(nll.detach())
            totals["penalty"] += float(penalty.detach())
            step += 1
        epoch_nll = _sum_over_ranks(totals["nll"], context, device) / steps_per_epoch
        history.nll.append(epoch_nll)
        history.loss.append(epoch_nll + totals["penalty"] / steps_per_epoch)
        history.kl.append(float(kl_value.detach()))
        history.kl_weight.append(beta)
        postfix = {"loss": f"{history.loss[-1]:.4f}"}
        if val_data is not None and stopper is not None:
            val_nll = _validation_nll(model, likelihood, val_data, val_samples, generator)
            history.val_nll.append(val_nll)
            postfix["val_nll"] = f"{val_nll:.4f}"
            stop = stopper.update(val_nll, model, likelihood)
            if context is not None:  # every rank has the same weights; rank 0 decides
                stop = bool(context.broadcast_object(stop, src=0))
            if stop:
                history.stopped_early = True
                bar.set_postfix(postfix)
                break
        bar.set_postfix(postfix)
    bar.close()
    if stopper is not None:
        stopper.restore(model, likelihood)
        history.best_epoch = stopper.best_step
    model.eval()
    likelihood.eval()
    return history


def _global_count(
    local: int, nll_sum: Tensor, kl_value: Tensor, context: DistributedContext | None
) -> tuple[Tensor, bool]:
    """Examples in the global batch, and whether every rank's loss terms are finite."""
    finite = bool(torch.isfinite(nll_sum)) and bool(torch.isfinite(kl_value))
    if context is None:
        return torch.tensor(float(local), device=nll_sum.device), finite
    both = torch.tensor([float(local), float(not finite)], device=nll_sum.device)
    context.all_reduce(both)
    return both[0], not bool(both[1])


def _sum_over_ranks(
    value: float, context: DistributedContext | None, device: torch.device
) -> float:
    if context is None:
        return value
    return float(context.all_reduce(torch.tensor(value, dtype=torch.float64, device=device)))


def _log_prior_of_plain_parameters(model: nn.Module, prior: Prior) -> Tensor:
    bayesian = {
        f"{path}.{name}" if path else name
        for path, layer in bayesian_modules(model)
        for name, _ in layer.named_parameters()
    }
    terms = [prior.log_prob(p) for name, p in model.named_parameters() if name not in bayesian]
    if not terms:
        return torch.zeros(())
    return torch.stack(terms).sum()


def _check_hyperparameters(
    epochs: int, batch_size: int, lr: float, num_samples: int, kl_weight: float, annealing: int
) -> None:
    check_int("epochs", epochs)
    check_int("batch_size", batch_size)
    check_int("num_samples", num_samples)
    check_int("kl_annealing_epochs", annealing, minimum=0)
    check_positive("lr", lr)
    if not isinstance(kl_weight, int | float) or not math.isfinite(kl_weight) or kl_weight < 0:
        raise ValueError(f"kl_weight must be a non-negative number, got {kl_weight!r}.")


def _device_of(model: nn.Module) -> torch.device:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}.")
    parameter = next(model.parameters(), None)
    if parameter is None:
        raise ValueError("model has no parameters to train.")
    return parameter.device


def _loader(
    data: TrainData,
    batch_size: int,
    dataset_size: int | None,
    rng: RNG,
    context: DistributedContext | None,
) -> tuple[DataLoader[Any], int]:
    if isinstance(data, DataLoader):
        loader = data  # distributed: its sampler decides each rank's share (DistributedSampler)
    else:
        if isinstance(data, tuple):
            dataset: Dataset[Any] = _tensor_dataset(data)
        elif isinstance(data, Dataset):
            dataset = data
        else:
            raise TypeError(
                "train_data must be (x, y) tensors, a Dataset or a DataLoader, got "
                f"{type(data).__name__}."
            )
        kwargs = rng.dataloader_kwargs("data")
        if context is None:
            loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, **kwargs)
        else:
            sampler = RankBatchSampler(dataset, batch_size, context, kwargs["generator"])  # type: ignore[arg-type]
            loader = DataLoader(dataset, batch_sampler=sampler, **kwargs)
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


def _tensor_dataset(data: tuple[Any, ...]) -> TensorDataset:
    if len(data) != 2 or not all(isinstance(t, Tensor) for t in data):
        raise TypeError("train_data as a tuple must be (x, y) tensors.")
    x, y = data
    if x.shape[0] == 0:
        raise ValueError("training data is empty (x has 0 rows).")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x has {x.shape[0]} rows but y has {y.shape[0]}; they must match.")
    for name, tensor in (("x", x), ("y", y)):
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise ValueError(f"{name} contains NaN or inf; clean or impute it before training.")
    return TensorDataset(x, y)


# torch >= 2.4 has a fused Adam on CPU too; before, only on CUDA.
_FUSED_ADAM_DEVICES = (
    ("cpu", "cuda") if tuple(map(int, torch.__version__.split(".")[:2])) >= (2, 4) else ("cuda",)
)


def _optimizer(
    spec: OptimizerSpec | None, model: nn.Module, likelihood: Likelihood, lr: float
) -> torch.optim.Optimizer:
    if isinstance(spec, torch.optim.Optimizer):
        return spec
    parameters = [*model.parameters(), *likelihood.parameters()]
    if spec is None:
        # The fused kernel updates all parameters in one pass (same Adam, fewer memory sweeps).
        fused = all(
            p.is_floating_point() and p.device.type in _FUSED_ADAM_DEVICES for p in parameters
        )
        return torch.optim.Adam(parameters, lr=lr, fused=fused or None)
    return spec(parameters)


def _expected_nll_sum(
    model: nn.Module, likelihood: Likelihood, x: Tensor, y: Tensor, num_samples: int
) -> Tensor:
    """``-Σ_i E_q[log p(y_i | x_i, w)]`` over the batch, by ``num_samples`` MC samples."""
    if num_samples == 1:
        return -likelihood.training_log_prob(model(x), y).sum()

    def one_sample(_: Tensor) -> Tensor:
        return likelihood.training_log_prob(model(x), y).sum()

    log_likelihoods: Tensor = vmap(one_sample, randomness="different")(torch.arange(num_samples))
    return -log_likelihoods.mean()


def _validation_nll(
    model: nn.Module,
    likelihood: Likelihood,
    val_data: tuple[Tensor, Tensor],
    num_samples: int,
    rng: RNG,
) -> float:
    x, y = val_data
    device = _device_of(model)
    x, y = x.to(device), y.to(device)
    try:
        as_posterior(model)
    except TypeError:  # a plain network: its single prediction
        model.eval()
        with torch.no_grad(), eval_mode(likelihood):  # the likelihood's evaluation form
            return -float(likelihood.log_prob(model(x), y).mean())
    prediction = predict_with_uncertainty(
        model, x, num_samples=num_samples, likelihood=likelihood, rng=rng
    )
    return -float(prediction.log_likelihood(y).mean())  # type: ignore[attr-defined]
