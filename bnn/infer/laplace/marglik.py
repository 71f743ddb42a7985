"""Online marginal-likelihood training: the MAP network and its prior found together.

Immer et al. (2021), "Scalable Marginal Likelihood Estimation for Model Selection in Deep
Learning": train the network under a Gaussian prior ``N(0, δ⁻¹ I)`` (weight decay ``δ``) and,
for regression, a Gaussian likelihood of noise ``σ``; every ``every`` epochs after
``burn_in``, fit a Laplace approximation (`bnn.infer.laplace`, all layers) at the current
weights and move ``δ`` (scalar or one per layer) and ``σ`` to the maximum of its log marginal
likelihood ``log p(D | δ, σ)``. No validation data is needed: the evidence chooses the weight
decay and the noise, which the MAP of a fixed prior cannot.

The result is the Laplace posterior at the final weights with the final ``δ`` and ``σ`` — a
`LaplacePosterior`, so ``predict_with_uncertainty``, ``optimize_prior_precision`` (e.g. a
last look at a validation split) and ``log_marginal_likelihood`` work on it unchanged.

Example:
    >>> posterior, history = bnn.infer.marglik_training(
    ...     net, (x, y), likelihood=bnn.Gaussian(1.0), hessian="full", epochs=500, rng=0)
    >>> float(posterior.prior_precision), posterior.noise_std
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from bnn._checks import check_int, check_positive
from bnn._progress import progress_bar
from bnn._threads import Threads, check_threads, training_threads
from bnn.infer._indexed_data import WholeData, model_device, whole_data
from bnn.infer._log_joint import check_data
from bnn.infer.history import History
from bnn.infer.laplace._posterior import Hessian
from bnn.infer.laplace.laplace import LaplacePosterior, laplace
from bnn.infer.training._loop import NonFiniteLossError
from bnn.likelihoods import Categorical, Gaussian, Likelihood, require_one_std
from bnn.random.default import RNGLike, resolve_rng

__all__ = ["marglik_training"]


def marglik_training(
    model: nn.Module,
    data: WholeData,
    *,
    likelihood: Likelihood,
    hessian: Hessian = "kron",
    epochs: int = 1000,
    lr: float = 1e-2,
    batch_size: int | None = None,
    every: int = 50,
    burn_in: int = 100,
    hyper_steps: int = 100,
    prior_precision: float = 1.0,
    per_layer: bool = False,
    rng: RNGLike = None,
    threads: Threads = "auto",
    progress: bool = True,
) -> tuple[LaplacePosterior, History]:
    """Train ``model`` by MAP while its prior precision (and noise) follow the evidence.

    Args:
        model: a plain network (its current weights are the start; trained in place).
        data: ``(x, y)`` tensors ``[N, ...]``; a ``Dataset`` or ``DataLoader`` is read whole
            once (the Laplace updates use every row).
        likelihood: ``bnn.Gaussian(σ)`` (regression; ``σ`` is the initial noise, then chosen
            by the marginal likelihood) or ``bnn.Categorical()``.
        hessian: the Laplace curvature for the marginal likelihood: ``"full"`` (exact GGN,
            small networks), ``"kron"`` (KFAC per Linear/Conv layer) or ``"diag"``.
        epochs: passes over the data (Adam, learning rate ``lr`` with cosine decay to 0).
        lr: Adam's initial learning rate.
        batch_size: mini-batch size (``None``: the full batch, one step per epoch).
        every: epochs between marginal-likelihood updates of ``δ`` and ``σ``.
        burn_in: epochs before the first update (the fit has to be under way).
        hyper_steps: Adam steps on ``log δ`` (and ``log σ``) per update.
        prior_precision: the initial ``δ`` (weight decay ``δ/N`` on the per-datum loss).
        per_layer: one ``δ`` per layer instead of one for all.
        rng: randomness: the mini-batch order (generator ``"data"``) and what forward passes
            draw in training, such as dropout masks (stream ``"marglik"``).
        threads: torch intra-op threads while training (see ``bnn.fit``).
        progress: show a tqdm bar.

    Returns:
        ``(posterior, history)``: the all-layer Laplace posterior at the final weights with the
        final ``δ`` and ``σ``; ``history.loss`` per step (the per-datum negative log joint),
        ``history.extras`` with ``"prior_precision"``, ``"noise_std"`` and
        ``"log_marglik"`` after each update (the last is the returned posterior's).

    Raises:
        ValueError: a likelihood other than ``Gaussian``/``Categorical``, bad counts or rates,
            or ``burn_in`` not before ``epochs``.
    """
    require_one_std(likelihood, "marglik_training")
    x, y = check_data(model, whole_data(data, model_device(model)))
    _check_arguments(likelihood, epochs, lr, batch_size, every, burn_in, hyper_steps)
    check_positive("prior_precision", prior_precision)
    check_threads(threads)
    streams = resolve_rng(rng)
    generator = streams.torch_generator("data")
    n = x.shape[0]
    batch = n if batch_size is None else min(batch_size, n)
    steps_per_epoch = -(-n // batch)
    trained = [(name, p) for name, p in model.named_parameters() if p.requires_grad]
    hyper = _Hyperparameters(
        torch.tensor(float(prior_precision)),
        float(likelihood.std) if isinstance(likelihood, Gaussian) else None,
        likelihood,
        [name for name, _ in trained],
        x.device,
    )
    history = History(
        "marglik_training",
        metrics={"loss": []},
        extras={"prior_precision": [], "noise_std": [], "log_marglik": []},
    )
    parameters = [p for _, p in trained]
    optimizer = torch.optim.Adam(parameters, lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs * steps_per_epoch)
    model.train()
    # forward passes that draw (dropout) draw from the stream "marglik", not the global seed
    with training_threads(threads, model, batch), streams.stream("marglik"):
        for epoch in progress_bar(range(1, epochs + 1), desc="marglik", disable=not progress):
            order = torch.randperm(n, generator=generator).to(x.device) if batch < n else None
            for first in range(0, n, batch):
                index = (
                    slice(first, first + batch) if order is None else order[first : first + batch]
                )
                loss = _map_step(model, hyper, parameters, optimizer, x[index], y[index], n, epoch)
                schedule.step()
                history.record(loss=loss)
            if epoch >= burn_in and (epoch - burn_in) % every == 0 and epoch < epochs:
                _update(model, x, y, likelihood, hessian, hyper, per_layer, hyper_steps, history)
        posterior = _update(
            model, x, y, likelihood, hessian, hyper, per_layer, hyper_steps, history
        )
    return posterior, history


class _Hyperparameters:
    """``δ`` (0-dim or per layer, with the layer names) and ``σ`` (``None``: classification),
    with what the training steps read: the likelihood at ``σ`` and ``δ`` per trained tensor."""

    def __init__(
        self,
        precision: Tensor,
        noise: float | None,
        likelihood: Likelihood,
        names: list[str],
        device: torch.device,
    ) -> None:
        self.names, self.given, self.device = names, likelihood, device
        self.set(precision, None, noise)

    def set(self, precision: Tensor, groups: list[str] | None, noise: float | None) -> None:
        """New ``δ`` (per layer of ``groups``) and ``σ``."""
        self.precision, self.groups, self.noise = precision, groups, noise
        self.likelihood = self.given if noise is None else Gaussian(noise).to(self.device)
        if groups is None or precision.dim() == 0:
            self.per_tensor = [float(precision)] * len(self.names)
        else:
            by_layer = dict(zip(groups, precision.tolist(), strict=True))
            self.per_tensor = [by_layer[name.rpartition(".")[0]] for name in self.names]


def _map_step(
    model: nn.Module,
    hyper: _Hyperparameters,
    parameters: list[nn.Parameter],
    optimizer: torch.optim.Optimizer,
    x: Tensor,
    y: Tensor,
    n: int,
    epoch: int,
) -> float:
    """One optimiser step on a mini-batch's negative log joint; its value."""
    loss = _negative_log_joint(model, hyper, parameters, x, y, n)
    if not bool(torch.isfinite(loss)):
        raise NonFiniteLossError(f"non-finite loss in epoch {epoch}; lower lr.")
    optimizer.zero_grad()
    loss.backward()  # type: ignore[no-untyped-call]
    optimizer.step()
    return float(loss.detach())


def _negative_log_joint(
    model: nn.Module,
    hyper: _Hyperparameters,
    parameters: Sequence[Tensor],
    x: Tensor,
    y: Tensor,
    n: int,
) -> Tensor:
    """``-(N/|B|) Σ_B log p(y | f) / N + ½ Σ δ ‖θ‖² / N`` at the current ``δ``, ``σ``."""
    log_density = hyper.likelihood.log_prob(model(x), y)
    penalty = sum(
        delta * p.square().sum() for p, delta in zip(parameters, hyper.per_tensor, strict=True)
    )
    return -log_density.mean() + 0.5 * penalty / n


def _update(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    likelihood: Likelihood,
    hessian: Hessian,
    hyper: _Hyperparameters,
    per_layer: bool,
    steps: int,
    history: History,
) -> LaplacePosterior:
    """Laplace at the current weights; ``δ`` (and ``σ``) to its marginal-likelihood maximum."""
    fitted = Gaussian(hyper.noise) if hyper.noise is not None else likelihood
    precision = hyper.precision
    posterior, _ = laplace(
        model,
        (x, y),
        likelihood=fitted.to(x.device),
        subset="all",
        hessian=hessian,
        prior_precision=precision if precision.dim() == 0 else precision.tolist(),
        progress=False,
    )
    if per_layer and precision.dim() == 0:  # the first update: start every layer at δ
        posterior.prior_precision = [float(precision)] * len(posterior.groups)
    posterior.optimize_prior_precision(
        "marglik", per_layer=per_layer, optimize_noise=hyper.noise is not None, steps=steps
    )
    hyper.set(posterior.prior_precision.detach().cpu(), list(posterior.groups), posterior.noise_std)
    log_marglik = float(posterior.log_marginal_likelihood())
    if not math.isfinite(log_marglik):
        raise NonFiniteLossError("non-finite log marginal likelihood; lower lr.")
    history.extras["prior_precision"].append(hyper.precision.tolist())
    history.extras["noise_std"].append(hyper.noise)
    history.extras["log_marglik"].append(log_marglik)
    return posterior


def _check_arguments(
    likelihood: object,
    epochs: int,
    lr: float,
    batch_size: int | None,
    every: int,
    burn_in: int,
    hyper_steps: int,
) -> None:
    if not isinstance(likelihood, Gaussian | Categorical):
        raise ValueError(
            "marglik_training needs bnn.Gaussian (regression) or bnn.Categorical "
            f"(classification), got {type(likelihood).__name__}."
        )
    check_int("epochs", epochs)
    check_positive("lr", lr)
    if batch_size is not None:
        check_int("batch_size", batch_size)
    check_int("every", every)
    check_int("hyper_steps", hyper_steps)
    check_int("burn_in", burn_in, minimum=0)
    if burn_in >= epochs:
        raise ValueError(
            f"burn_in ({burn_in}) must be below epochs ({epochs}): the prior is updated from "
            "epoch burn_in on."
        )
