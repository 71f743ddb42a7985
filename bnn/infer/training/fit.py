"""Bayes by backprop: minimise the per-datum negative ELBO with mini-batches.

For data ``D = {(x_i, y_i)}_{i=1..N}`` and a mini-batch ``B``, each step minimises

    loss = - 1/|B| Σ_{i∈B} E_q[log p(y_i | x_i, w)]  +  β_t · KL(q ‖ p) / N

(Blundell et al. 2015, "Weight Uncertainty in Neural Networks"), an unbiased estimate of
``-ELBO / N``. ``β_t`` ramps linearly from 0 to ``kl.weight`` over ``kl.annealing_epochs``
(KL annealing / warm-up; Sønderby et al. 2016), and ``kl.weight < 1`` gives a tempered
posterior. A model without Bayesian layers (``MCDropout``, a plain network) has ``KL = 0``:
the same loop then does maximum-likelihood / MAP training.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from bnn._checks import check_int, check_positive
from bnn._progress import progress_bar
from bnn._threads import Threads, check_threads, training_threads
from bnn.infer.checkpoint import Checkpoint
from bnn.infer.history import History
from bnn.infer.training._early_stopping import EarlyStopping
from bnn.infer.training._fit_checkpoint import fit_settings, restore, run_identity, snapshot
from bnn.infer.training._fit_options import KLSchedule, Validation
from bnn.infer.training._loop import (
    NonFiniteLossError,
    OptimizerSpec,
    StepContext,
    StepResult,
    TrainData,
    device_of,
    epoch_stream,
    make_loader,
    make_optimizer,
    start_epoch,
    training_step,
)
from bnn.likelihoods import Likelihood
from bnn.nn.layers import bayesian_modules
from bnn.nn.priors import Prior
from bnn.parallel.distributed import training_strategy
from bnn.posterior import PointEstimate, Posterior, as_posterior, has_posterior
from bnn.posterior._evaluate import eval_mode
from bnn.posterior._model_input import check_model_input
from bnn.posterior.log_predictive import log_predictive_density
from bnn.random.default import RNGLike, resolve_rng
from bnn.random.rng import RNG

__all__ = ["KLSchedule", "NonFiniteLossError", "Validation", "fit"]


def fit(
    model: nn.Module,
    data: TrainData,
    *,
    likelihood: Likelihood,
    epochs: int = 100,
    initial_epoch: int = 0,
    batch_size: int = 128,
    lr: float = 1e-3,
    optimizer: OptimizerSpec | None = None,
    num_samples: int = 1,
    kl: KLSchedule | None = None,
    validation: Validation | None = None,
    dataset_size: int | None = None,
    prior: Prior | None = None,
    rng: RNGLike = None,
    distributed: bool | None = None,
    checkpoint: str | Path | None = None,
    threads: Threads = "auto",
    progress: bool = True,
) -> tuple[Posterior, History]:
    """Train ``model`` (and a learnable ``likelihood``) by maximising the per-datum ELBO.

    Args:
        model: network with Bayesian layers (VI), or ``MCDropout``/plain network (KL = 0);
            may be wrapped in ``DistributedDataParallel`` (then trained data-parallel).
        data: ``(x, y)`` tensors ``[N, ...]``, a ``Dataset`` of ``(x, y)`` pairs, or a
            ``DataLoader`` (used as is; its shuffling is then yours to seed, e.g. with
            ``rng.dataloader_kwargs()``).
        likelihood: observation model (its parameters, e.g. a learned noise std, are trained).
        epochs: the epoch at which training ends (≥ 1): passes over the data from
            ``initial_epoch``.
        initial_epoch: the epoch at which training starts, to resume a run by hand (as
            Keras's ``initial_epoch``): with the model, the optimiser (pass it as ``optimizer``)
            and ``rng`` restored from the end of epoch ``initial_epoch``, the KL annealing and
            the step counter continue where they stopped, so ``fit(..., epochs=5)`` then
            ``fit(..., initial_epoch=5, epochs=10)`` gives the bits of ``epochs=10``. The
            history holds the new epochs. ``checkpoint=`` does all of this by itself.
        batch_size: mini-batch size for tensors/datasets (per rank when distributed).
        lr: learning rate of the default Adam optimiser.
        optimizer: an optimiser over ``model`` and ``likelihood`` parameters, or a factory
            ``params -> Optimizer``; default ``Adam(lr)`` (PyTorch's fused implementation).
        num_samples: Monte Carlo samples of the expected log-likelihood per step (vectorised).
        kl: the KL weight and its annealing (`KLSchedule`; default: the plain ELBO).
        validation: held-out data for early stopping (`Validation`); the best epoch's weights
            are restored at the end.
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
            See ``bnn.parallel.distributed``.
        checkpoint: a file to resume from and to save the whole training state to after every
            epoch (``bnn.infer.checkpoint``): run again with the same path (and a larger
            ``epochs``) to continue; the result equals one uninterrupted run bit for bit.
        threads: torch intra-op threads while training: ``"auto"`` trains small models (work
            per step — parameters × batch × ``num_samples`` — below
            ``bnn._threads.SMALL_STEP_WORK``) on one thread unless you chose a count
            (``torch.set_num_threads`` or ``OMP_NUM_THREADS``); an int pins it; ``None``
            leaves torch's setting. Restored afterwards.
        progress: show a tqdm bar.

    Returns:
        ``(posterior, history)``: the trained model's `Posterior` (its Bayesian layers and
        dropout, or a one-sample `PointEstimate` for a plain network) and the `History`
        (``loss``, ``nll``, ``kl``, ``kl_weight``, ``val_nll`` per epoch; ``best_epoch``,
        ``stopped_early``). The model itself is trained in place and left in eval mode.

    Raises:
        NonFiniteLossError: a NaN/inf loss, naming the epoch, step and which term.
        ValueError / TypeError: invalid data or hyper-parameters.

    Example:
        >>> net = bnn.bayesianize(nn.Sequential(nn.Linear(1, 50), nn.ReLU(), nn.Linear(50, 1)))
        >>> posterior, history = bnn.fit(net, (x, y), likelihood=bnn.Gaussian(0.1), epochs=50)
    """
    schedule = KLSchedule() if kl is None else kl
    check_threads(threads)
    _check_arguments(epochs, batch_size, lr, num_samples, schedule, validation, likelihood, prior)
    _check_initial_epoch(initial_epoch, epochs, checkpoint)
    generator = resolve_rng(rng)
    model, strategy = training_strategy(model, distributed)
    device = device_of(model)
    likelihood.to(device)
    noise = strategy.prepare(generator, model, likelihood)
    loader, size = make_loader(data, batch_size, dataset_size, generator, strategy)
    _check_model_takes(model, data, validation)
    optim = make_optimizer(optimizer, model, likelihood, lr)
    run = None
    if checkpoint is not None:
        settings = fit_settings(generator, batch_size, lr, optimizer, num_samples, schedule)
        settings |= run_identity(data, size, model, likelihood, strategy, validation, prior)
        run = Checkpoint(checkpoint, method="fit", settings=settings, rank=strategy.rank)
    step_context = StepContext(
        model=model,
        likelihood=likelihood,
        optimizer=optim,
        parameters=[*model.parameters(), *likelihood.parameters()],
        noise=noise,
        strategy=strategy,
        dataset_size=size,
        num_samples=num_samples,
        prior=prior,
        has_bayesian_layers=any(True for _ in bayesian_modules(model)),
        epoch_in_stream=isinstance(data, tuple) and optimizer is None,
    )
    rows_per_step = (loader.batch_size or 1) * num_samples
    with training_threads(threads, model, rows_per_step):
        history = _run_epochs(
            step_context,
            loader,
            schedule,
            range(initial_epoch, epochs),
            validation,
            generator,
            progress,
            run,
        )
    model.eval()
    likelihood.eval()
    return (as_posterior(model) if has_posterior(model) else PointEstimate(model)), history


def _run_epochs(
    context: StepContext,
    loader: torch.utils.data.DataLoader[tuple[Tensor, Tensor]],
    schedule: KLSchedule,
    epochs: range,
    validation: Validation | None,
    generator: RNG,
    progress: bool,
    run: Checkpoint | None = None,
) -> History:
    """The ``epochs`` of ``fit``: train, record, validate, stop early; restore the best weights.

    With a checkpoint, continue from its epoch and save the state after every epoch.
    """
    model, likelihood, strategy = context.model, context.likelihood, context.strategy
    device = device_of(model)
    stopper = EarlyStopping(validation.patience) if validation is not None else None
    history = History(
        "fit",
        metrics={"loss": [], "nll": [], "kl": [], "kl_weight": [], "val_nll": []},
        extras={"best_epoch": None, "stopped_early": False},
    )
    steps_per_epoch = max(len(loader), 1)
    first, step = epochs.start, epochs.start * steps_per_epoch
    saved = run.load() if run is not None else None
    if saved is not None:
        first, step = restore(saved, context, generator, history, stopper)
    if history.extras["stopped_early"]:
        first = epochs.stop  # the saved run had stopped: nothing left to train
    bar = progress_bar(range(first, epochs.stop), desc="fit", disable=not progress)
    for epoch in bar:
        start_epoch(loader, epoch, model, likelihood)
        totals, kl_value, beta, step = _train_epoch(context, loader, schedule, epoch, step)
        epoch_nll = strategy.sum_over_ranks(totals[0], device) / steps_per_epoch
        history.record(
            nll=epoch_nll,
            loss=epoch_nll + totals[1] / steps_per_epoch,
            kl=float(kl_value),
            kl_weight=beta,
        )
        postfix = {"loss": f"{history.loss[-1]:.4f}"}
        if validation is not None and stopper is not None:
            val_nll = validation_nll(model, likelihood, validation, generator)
            history.record(val_nll=val_nll)
            postfix["val_nll"] = f"{val_nll:.4f}"
            if strategy.agree(stopper.update(val_nll, model, likelihood)):
                history.extras["stopped_early"] = True
        if run is not None:
            run.save(snapshot(context, generator, history, stopper, epoch + 1, step))
        bar.set_postfix(postfix)
        if history.extras["stopped_early"]:
            break
    bar.close()
    if stopper is not None:
        stopper.restore(model, likelihood)
        history.extras["best_epoch"] = stopper.best_step
    return history


def _check_model_takes(model: nn.Module, data: TrainData, validation: Validation | None) -> None:
    """One probe forward on the training and validation inputs: features, dtype, output type."""
    if isinstance(data, tuple):
        check_model_input(model, data[0])
    elif (probe := _first_inputs(data)) is not None:  # a map-style Dataset: its first inputs
        check_model_input(model, probe)
    if validation is not None:
        check_model_input(model, validation.x)


def _first_inputs(data: TrainData) -> Tensor | None:
    """The inputs of a map-style ``Dataset``'s first two examples ``[2, ...]``, if tensors."""
    if isinstance(data, torch.utils.data.DataLoader) or not hasattr(data, "__len__"):
        return None
    count = min(2, len(data))
    items = [data[i] for i in range(count)]
    inputs = [item[0] for item in items if isinstance(item, tuple | list) and item]
    if count == 0 or len(inputs) != count or not all(isinstance(x, Tensor) for x in inputs):
        return None
    if any(x.shape != inputs[0].shape for x in inputs):
        return None
    return torch.stack(inputs)


def _train_epoch(
    context: StepContext,
    loader: torch.utils.data.DataLoader[tuple[Tensor, Tensor]],
    schedule: KLSchedule,
    epoch: int,
    step: int,
) -> tuple[tuple[float, float], Tensor, float, int]:
    """One pass over ``loader`` from optimiser step ``step``.

    Returns:
        Summed (nll, penalty), the last KL, the last ``β`` and the next step's index.
    """
    steps_per_epoch = max(len(loader), 1)
    device = device_of(context.model)
    nll_total, penalty_total = 0.0, 0.0
    kl_value = torch.zeros(())
    beta = schedule.weight
    with epoch_stream(context):
        for batch_index, (x, y) in enumerate(loader):
            beta = schedule.beta(step, steps_per_epoch)
            where = f"epoch {epoch}, step {step} (batch {batch_index})"
            if step == 0:  # a DataLoader's data is seen first here: explain a mismatch
                result = _first_step(context, x.to(device), y.to(device), beta, where)
            else:
                result = training_step(context, x.to(device), y.to(device), beta, where)
            nll_total += result.nll
            penalty_total += result.penalty
            kl_value = result.kl
            step += 1
    return (nll_total, penalty_total), kl_value, beta, step


def _first_step(context: StepContext, x: Tensor, y: Tensor, beta: float, where: str) -> StepResult:
    """``training_step`` on the first batch, with torch's shape and dtype errors explained."""
    try:
        return training_step(context, x, y, beta, where)
    except RuntimeError as error:
        raise ValueError(
            f"training failed on the first batch (x of shape {tuple(x.shape)} and dtype "
            f"{x.dtype}, y of shape {tuple(y.shape)}): {error}. Check that the data match "
            "the model's input features and dtype and the likelihood's targets."
        ) from error


def validation_nll(
    model: nn.Module, likelihood: Likelihood, validation: Validation, rng: RNG
) -> float:
    """Mean negative log predictive density of the validation data."""
    device = device_of(model)
    x, y = validation.x.to(device), validation.y.to(device)
    if not has_posterior(model):  # a plain network: its single prediction
        model.eval()
        with torch.no_grad(), eval_mode(likelihood):  # the likelihood's evaluation form
            return -float(likelihood.log_prob(model(x), y).mean())
    density = log_predictive_density(
        as_posterior(model),
        x,
        y,
        likelihood=likelihood,
        num_samples=validation.num_samples,
        rng=rng,
    )
    return -float(density.mean())


def _check_initial_epoch(initial_epoch: int, epochs: int, checkpoint: object) -> None:
    check_int("initial_epoch", initial_epoch, minimum=0)
    if initial_epoch >= epochs:
        raise ValueError(
            f"initial_epoch={initial_epoch} leaves nothing to train with epochs={epochs}: "
            "epochs is the epoch at which training ends (as in Keras), so pass "
            f"epochs={initial_epoch} + the number of epochs to add."
        )
    if initial_epoch and checkpoint is not None:
        raise ValueError(
            "pass initial_epoch or checkpoint, not both: a checkpoint records its epoch and "
            "resumes from it by itself."
        )


def _check_arguments(
    epochs: int,
    batch_size: int,
    lr: float,
    num_samples: int,
    kl: KLSchedule,
    validation: Validation | None,
    likelihood: Likelihood,
    prior: Prior | None,
) -> None:
    check_int("epochs", epochs)
    check_int("batch_size", batch_size)
    check_int("num_samples", num_samples)
    check_positive("lr", lr)
    if not isinstance(kl, KLSchedule):
        raise TypeError(f"kl must be a bnn.infer.KLSchedule, got {type(kl).__name__}.")
    if validation is not None and not isinstance(validation, Validation):
        raise TypeError(
            f"validation must be a bnn.infer.Validation, got {type(validation).__name__}."
        )
    if not isinstance(likelihood, Likelihood):
        raise TypeError(f"likelihood must be a bnn Likelihood, got {type(likelihood).__name__}.")
    if prior is not None and not isinstance(prior, Prior):
        raise TypeError(f"prior must be a bnn.nn.Prior, got {type(prior).__name__}.")
