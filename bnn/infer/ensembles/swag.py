"""SWAG: a Gaussian fitted to the SGD iterates of a trained network (Maddox et al. 2019).

From the trained weights, SGD with a constant step keeps running; every ``collect_every``
epochs (after ``burn_in``) the weights ``θ_t`` are collected into running first and second
moments and the last ``rank`` deviations ``θ_t − θ̄_t``. The posterior is

    N(θ̄, scale · (Σ_diag + D Dᵀ / (K − 1))),     Σ_diag = mean(θ²) − θ̄²,

with ``D`` ``[P, K]`` the last ``K = rank`` deviations (``scale = 1/2`` in the paper), held as a
`bnn.posterior.GaussianPosterior`. Networks with BatchNorm get their statistics recomputed on
the training inputs for every weight sample. `multi_swag` fits several SWAG Gaussians from
independent seeds: their equally weighted mixture (Wilson & Izmailov 2020).

Example:
    >>> posterior, history = bnn.infer.swag(net, (x, y), likelihood=bnn.Gaussian(0.1),
    ...                                     epochs=30, lr=1e-2, rank=20, rng=0)
    >>> bnn.predict_with_uncertainty(posterior, x_test, likelihood=bnn.Gaussian(0.1))
"""

from __future__ import annotations

import copy
import math
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from bnn._checks import check_finite_parameters, check_int, check_positive
from bnn._progress import progress_bar
from bnn.infer.history import History
from bnn.infer.training._loop import NonFiniteLossError, TrainData, make_loader
from bnn.likelihoods import Likelihood
from bnn.nn.layers import bayesian_modules
from bnn.parallel.distributed import job_strategy
from bnn.posterior._covariance import CovarianceFactor, DiagonalFactor, LowRankFactor
from bnn.posterior._linearise import flatten_parameters
from bnn.posterior._model_input import check_model_input
from bnn.posterior.gaussian import GaussianMixturePosterior, GaussianPosterior
from bnn.random.default import RNGLike, resolve_rng

__all__ = ["SWAGMoments", "SWAGPosterior", "multi_swag", "swag"]


class SWAGMoments:
    """Running SWAG statistics over collected weight vectors ``θ_t`` ``[P]``.

    Attributes:
        mean: ``θ̄`` ``[P]``; square_mean: ``mean(θ²)`` ``[P]``; count: collected models;
        deviations: the last ``rank`` of ``θ_t − θ̄_t`` (each ``[P]``).
    """

    def __init__(self, initial: Tensor, rank: int) -> None:
        self.mean = torch.zeros_like(initial)
        self.square_mean = torch.zeros_like(initial)
        self.deviations: deque[Tensor] = deque(maxlen=rank)
        self.rank = rank
        self.count = 0

    def collect(self, theta: Tensor) -> None:
        """Add one weight vector ``[P]``."""
        self.count += 1
        self.mean = self.mean + (theta - self.mean) / self.count
        self.square_mean = self.square_mean + (theta**2 - self.square_mean) / self.count
        self.deviations.append(theta - self.mean)

    @property
    def variance(self) -> Tensor:
        """``Σ_diag = mean(θ²) − θ̄²`` ``[P]`` (clamped at 0 against rounding)."""
        return (self.square_mean - self.mean**2).clamp_min(0)

    def factor(self, scale: float, diagonal_only: bool) -> CovarianceFactor:
        """``scale · Σ_diag`` or ``scale · (Σ_diag + D Dᵀ/(K − 1))``."""
        if diagonal_only:
            return DiagonalFactor(scale * self.variance)
        return LowRankFactor(self.variance, torch.stack(list(self.deviations), dim=1), scale)


class SWAGPosterior(GaussianPosterior):
    """SWAG's ``N(θ̄, Σ)``: a `bnn.posterior.GaussianPosterior` that keeps its `SWAGMoments`.

    Args:
        model: the trained network (all its trainable parameters are selected).
        names: the parameter names, flat order.
        moments: the collected statistics.
        scale: factor on the covariance, as in `swag`.
        diagonal_only: the diagonal part only, as in `swag`.
        **options: `GaussianPosterior`'s keyword arguments.
    """

    def __init__(
        self,
        model: nn.Module,
        names: list[str],
        moments: SWAGMoments,
        *,
        scale: float,
        diagonal_only: bool,
        **options: Any,
    ) -> None:
        self.moments = moments
        self.diagonal_only = diagonal_only
        self._scale = scale
        super().__init__(
            model, names, moments.mean, moments.factor(scale, diagonal_only), **options
        )

    @property
    def scale(self) -> float:
        """The factor on the covariance; setting it rescales the posterior without a rerun
        (the collected moments do not depend on it), e.g. to choose it on validation data."""
        return self._scale

    @scale.setter
    def scale(self, value: float) -> None:
        self._scale = check_positive("scale", value)
        self.factor = self.moments.factor(self._scale, self.diagonal_only)


def _check_sgd(momentum: object, weight_decay: object, batch_size: object) -> None:
    check_int("batch_size", batch_size)
    for name, value, high in (("momentum", momentum, 1.0), ("weight_decay", weight_decay, None)):
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or value < 0
            or (high is not None and value >= high)
        ):
            allowed = "in [0, 1)" if high is not None else "a finite number >= 0"
            raise ValueError(f"{name} must be {allowed}, got {value!r}.")


def _check_swag(
    model: object,
    likelihood: object,
    epochs: int,
    lr: float,
    rank: int,
    collect_every: int,
    burn_in: int,
    scale: float,
    diagonal_only: bool,
) -> None:
    if not isinstance(model, nn.Module) or next(model.parameters(), None) is None:
        raise TypeError(f"model must be an nn.Module with parameters, got {type(model).__name__}.")
    if any(True for _ in bayesian_modules(model)):
        raise ValueError("model has Bayesian layers; swag needs a plain (trained) network.")
    if not isinstance(likelihood, Likelihood):
        raise TypeError(f"likelihood must be a bnn Likelihood, got {type(likelihood).__name__}.")
    check_int("epochs", epochs)
    check_int("collect_every", collect_every)
    check_int("burn_in", burn_in, minimum=0)
    check_positive("lr", lr)
    check_positive("scale", scale)
    check_int("rank", rank, minimum=2)
    collected = max(0, epochs - burn_in) // collect_every
    needed = 2 if diagonal_only else rank
    if collected < needed:
        raise ValueError(
            f"swag would collect {collected} models ((epochs - burn_in) // collect_every) but "
            f"needs at least {needed} (rank={rank}); raise epochs, lower collect_every, or "
            "lower rank."
        )


def swag(
    model: nn.Module,
    data: TrainData,
    *,
    likelihood: Likelihood,
    epochs: int,
    lr: float,
    rank: int = 20,
    collect_every: int = 1,
    burn_in: int = 0,
    scale: float = 0.5,
    diagonal_only: bool = False,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    batch_size: int = 64,
    optimizer: Callable[[list[nn.Parameter]], torch.optim.Optimizer] | None = None,
    rng: RNGLike = None,
    progress: bool = True,
) -> tuple[SWAGPosterior, History]:
    """Fit SWAG's Gaussian to the SGD iterates that continue from the trained ``model``.

    Args:
        model: a trained plain network; left unchanged (a copy runs SGD).
        data: ``(x, y)`` tensors (shuffled with generator ``"data"`` of ``rng``), a
            ``Dataset`` or a ``DataLoader``.
        likelihood: the observation model; the loss is the mean negative log-likelihood of
            a mini-batch (its own parameters are not trained).
        epochs: passes over the data (≥ 1), including ``burn_in``.
        lr: SGD's constant learning rate (> 0).
        rank: deviations ``K`` kept for the low-rank part (≥ 2).
        collect_every: epochs between collected models (≥ 1).
        burn_in: epochs of SGD before the first collection (≥ 0).
        scale: factor on the covariance (> 0; ½ in Maddox et al.).
        diagonal_only: ``N(θ̄, scale · Σ_diag)`` (SWAG-diagonal).
        momentum: momentum of the default ``torch.optim.SGD``.
        weight_decay: weight decay of the default ``torch.optim.SGD``.
        batch_size: mini-batch size for tensor data.
        optimizer: an optimiser factory ``params -> Optimizer`` replacing SGD.
        rng: randomness: shuffling (generator ``"data"``), forward passes (stream ``"swag"``);
            sampling later uses the ``rng`` given to ``sample_functions``.
        progress: show a tqdm bar.

    Returns:
        ``(SWAGPosterior, History)``: the posterior over all trainable parameters of ``model``
        (``predictive = "samples"``); the history records ``loss`` per epoch, ``collected``
        and ``seconds``.

    Raises:
        TypeError / ValueError: bad arguments, or fewer collected models than ``rank``.
        NonFiniteLossError: SGD diverged (lower ``lr``).

    Example:
        >>> posterior, _ = bnn.infer.swag(net, (x, y), likelihood=bnn.Categorical(),
        ...                               epochs=20, lr=0.05, rank=10, rng=0, progress=False)
    """
    _check_swag(model, likelihood, epochs, lr, rank, collect_every, burn_in, scale, diagonal_only)
    _check_sgd(momentum, weight_decay, batch_size)
    check_finite_parameters(model, "swag")
    if isinstance(data, tuple) and data and isinstance(data[0], Tensor):
        check_model_input(model, data[0])
    batchnorm_data = _batchnorm_inputs(model, data)
    generator = resolve_rng(rng)
    names = [name for name, p in model.named_parameters() if p.requires_grad]
    replica = copy.deepcopy(model)
    loader, _ = make_loader(data, batch_size, None, generator, job_strategy(False))
    parameters = [p for p in replica.parameters() if p.requires_grad]
    sgd = (
        optimizer(parameters)
        if optimizer is not None
        else torch.optim.SGD(parameters, lr=lr, momentum=momentum, weight_decay=weight_decay)
    )
    moments = SWAGMoments(_flat(replica, names), rank)
    history = History("swag", metrics={"loss": []})
    start = time.perf_counter()
    with generator.stream("swag"):  # forward passes that draw (dropout) draw from here
        for epoch in progress_bar(range(epochs), desc="swag", disable=not progress):
            history.record(loss=_epoch(replica, likelihood, loader, sgd, epoch))
            if epoch >= burn_in and (epoch - burn_in + 1) % collect_every == 0:
                moments.collect(_flat(replica, names))
    history.extras.update(collected=moments.count, seconds=time.perf_counter() - start)
    learned = any(p.requires_grad for p in likelihood.parameters())
    posterior = SWAGPosterior(
        model,
        names,
        moments,
        scale=scale,
        diagonal_only=diagonal_only,
        likelihood=likelihood if learned else None,
        batchnorm_data=batchnorm_data,
    )
    return posterior, history


def multi_swag(
    model: nn.Module | Sequence[nn.Module],
    data: TrainData,
    *,
    likelihood: Likelihood,
    num_runs: int | None = None,
    rng: RNGLike = None,
    progress: bool = True,
    **options: Any,
) -> tuple[GaussianMixturePosterior, History]:
    """MultiSWAG: several SWAG runs, run ``i`` with ``rng.spawn(i)``, as one mixture.

    Given one trained network, every run continues from it (the runs differ in their SGD
    noise). Given several networks of one architecture trained from different seeds (deep
    ensemble members), run ``i`` continues from network ``i`` — the MultiSWAG of Wilson &
    Izmailov (2020), whose components sit in different basins.

    Args:
        model: the trained network, or a sequence of them (each unchanged).
        data: as for `swag`.
        likelihood: as for `swag`.
        num_runs: SWAG runs ``M`` (≥ 1); default 3 for one network, one per network for a
            sequence (which must then have ``M`` networks).
        rng: parent randomness; run ``i`` draws from ``rng.spawn(i)``.
        progress: show a tqdm bar per run.
        **options: `swag`'s keyword arguments (``epochs``, ``lr``, ``rank``, ...).

    Returns:
        ``(GaussianMixturePosterior, History)`` with one history per run in ``chains``.

    Example:
        >>> mixture, _ = bnn.infer.multi_swag(net, (x, y), likelihood=bnn.Categorical(),
        ...                                   num_runs=3, epochs=20, lr=0.05, rng=0)
        >>> members = [trained_net_0, trained_net_1, trained_net_2]   # different seeds
        >>> mixture, _ = bnn.infer.multi_swag(members, (x, y), likelihood=bnn.Categorical(),
        ...                                   epochs=20, lr=0.05, rng=0)
    """
    starts = _run_starts(model, num_runs)
    parent = resolve_rng(rng)
    runs = [
        swag(start, data, likelihood=likelihood, rng=parent.spawn(i), progress=progress, **options)
        for i, start in enumerate(starts)
    ]
    history = History("multi_swag", chains=[h for _, h in runs])
    history.extras["seconds"] = sum(h.seconds for _, h in runs)
    return GaussianMixturePosterior([p for p, _ in runs]), history


def _run_starts(model: nn.Module | Sequence[nn.Module], num_runs: int | None) -> list[nn.Module]:
    """The network each MultiSWAG run continues from."""
    if isinstance(model, nn.Module):
        runs = 3 if num_runs is None else num_runs
        check_int("num_runs", runs)
        return [model] * runs
    networks = list(model)
    if not networks or not all(isinstance(n, nn.Module) for n in networks):
        raise TypeError("model must be an nn.Module or a non-empty sequence of nn.Modules.")
    if num_runs is not None and num_runs != len(networks):
        raise ValueError(
            f"num_runs={num_runs} but {len(networks)} networks were given; one run per "
            "network (leave num_runs out)."
        )
    return networks


def _flat(model: nn.Module, names: list[str]) -> Tensor:
    values = {name: p.detach() for name, p in model.named_parameters()}
    return flatten_parameters(values, names, leading=0).clone()


def _epoch(
    model: nn.Module,
    likelihood: Likelihood,
    loader: Any,
    optimizer: torch.optim.Optimizer,
    epoch: int,
) -> float:
    """One pass of SGD on the mean negative log-likelihood; the mean loss."""
    model.train()
    total, batches = 0.0, 0
    for x, y in loader:
        total += _step(model, likelihood, optimizer, x, y, epoch)
        batches += 1
    return total / max(batches, 1)


def _step(
    model: nn.Module,
    likelihood: Likelihood,
    optimizer: torch.optim.Optimizer,
    x: Tensor,
    y: Tensor,
    epoch: int,
) -> float:
    """One SGD step on the mean negative log-likelihood of a batch; its loss."""
    loss = -likelihood.log_prob(model(x), y).mean()
    if not bool(torch.isfinite(loss)):
        raise NonFiniteLossError(
            f"non-finite loss in swag epoch {epoch}: SGD at lr diverged from the given "
            "weights; lower lr or standardise the data."
        )
    optimizer.zero_grad()
    loss.backward()  # type: ignore[no-untyped-call]
    optimizer.step()
    return float(loss.detach())


def _batchnorm_inputs(model: nn.Module, data: TrainData) -> Tensor | None:
    """The training inputs for per-sample BatchNorm statistics (``None`` without BatchNorm)."""
    if not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        return None
    if isinstance(data, tuple):
        return data[0]
    raise ValueError(
        "the model has BatchNorm, whose statistics SWAG recomputes per weight sample from the "
        "training inputs; pass data as (x, y) tensors."
    )
