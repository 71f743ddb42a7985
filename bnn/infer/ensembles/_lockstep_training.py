"""Training every member of a `DeepEnsemble` at once: one ``vmap``-ed step for all members.

On a small network a step's arithmetic takes microseconds and its fixed costs (Python,
autograd, the optimiser's call) most of the time; stacking the ``M`` members' parameters
(``torch.func.stack_module_state``) and taking one vectorised step for all of them pays those
costs once instead of ``M`` times. Each member keeps what sequential training gives it: its
``rng.spawn(i)`` initialisation, mini-batch order and bootstrap resample, its own loss (its
batch's mean), its own Adam state (Adam is element-wise, so one fused Adam over the stacked
parameters is ``M`` Adams), its own learned likelihood parameters, validation and early
stopping. The arithmetic is batched, so the last bits differ from sequential training, and
dropout masks are drawn in one call from the parent RNG's ``"fit"`` stream: the same seed gives
the same bits, in this mode.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state, vmap

from bnn._checks import check_int, check_positive
from bnn._progress import progress_bar
from bnn._threads import check_threads, training_threads
from bnn.infer.history import History
from bnn.infer.training._early_stopping import EarlyStopping
from bnn.infer.training._fit_options import Validation
from bnn.infer.training._loop import NonFiniteLossError, TrainData, adam, make_loader
from bnn.infer.training.fit import validation_nll
from bnn.likelihoods import Likelihood
from bnn.nn.layers import bayesian_modules
from bnn.parallel.distributed import job_strategy
from bnn.posterior import has_posterior
from bnn.posterior._model_input import check_model_input
from bnn.random.rng import RNG

__all__ = ["LOCKSTEP_OPTIONS", "check_lockstep", "train_members_in_lockstep"]

LOCKSTEP_OPTIONS = ("epochs", "batch_size", "lr", "validation", "threads")
"""The ``fit`` options lock-step training takes (others are refused, naming the way out)."""


class _Objective(nn.Module):
    """A member and its likelihood as one module, so that ``functional_call`` swaps both."""

    def __init__(self, network: nn.Module, likelihood: Likelihood) -> None:
        super().__init__()
        self.network = network
        self.likelihood = likelihood

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        """The batch's mean training objective, negated: ``-mean_i log p(y_i | x_i)``."""
        log_prob = self.likelihood.training_log_density(self.network(x), y)  # y checked before
        return -log_prob.sum() / x.shape[0]


def train_members_in_lockstep(
    members: nn.ModuleList,
    parent_rng: RNG,
    data: TrainData,
    *,
    likelihood: Likelihood,
    bagging: bool,
    progress: bool,
    fit_options: dict[str, Any],
) -> tuple[list[Likelihood], list[History]]:
    """Train ``members`` in place, all at once; each member's likelihood and `History`."""
    options = _checked_options(members, likelihood, data, fit_options)
    member_rngs = [parent_rng.spawn(i) for i in range(len(members))]
    likelihoods = [copy.deepcopy(likelihood).to(_device(members)) for _ in members]
    data = _checked_data(members[0], likelihood, data, options["validation"])  # type: ignore[arg-type]
    loaders = [
        make_loader(_member_data(data, bagging, rng), options["batch_size"], None, rng, _LOCAL)[0]
        for rng in member_rngs
    ]
    objectives = [_Objective(m, lik) for m, lik in zip(members, likelihoods, strict=True)]
    parameters, buffers = stack_module_state(objectives)
    optimizer = adam(list(parameters.values()), options["lr"])
    losses_of = _vectorised_losses(objectives[0], parameters, buffers)
    histories = [_new_history() for _ in members]
    validation = options["validation"]
    stoppers = [EarlyStopping(validation.patience if validation else None) for _ in members]
    rows = (loaders[0].batch_size or 1) * len(members)
    running = torch.ones(len(members), dtype=torch.bool, device=_device(members))
    with training_threads(options["threads"], members[0], rows):
        bar = progress_bar(range(options["epochs"]), desc="ensemble", disable=not progress)
        for epoch in bar:
            step = _Step(losses_of, optimizer, parameters, running)
            losses = _epoch(step, loaders, parent_rng, epoch)
            _write_back(parameters, objectives, running)
            stopped = _record(objectives, member_rngs, histories, stoppers, losses, validation)
            running = ~torch.tensor(stopped, device=running.device)
            if not bool(running.any()):
                break
        bar.close()
    _finish(objectives, histories, stoppers, validation)
    return likelihoods, histories


def _vectorised_losses(
    template: _Objective, parameters: dict[str, Tensor], buffers: dict[str, Tensor]
) -> Callable[[Tensor, Tensor], Tensor]:
    """``(x [M, B, ...], y [M, B, ...]) -> [M]``: every member's loss on its own batch."""
    base = copy.deepcopy(template).to("meta").train()

    def member_loss(
        member_parameters: dict[str, Tensor],
        member_buffers: dict[str, Tensor],
        x: Tensor,
        y: Tensor,
    ) -> Tensor:
        state = (member_parameters, member_buffers)
        return functional_call(base, state, (x, y))  # type: ignore[no-any-return]

    vectorised = vmap(member_loss, randomness="different")
    return lambda x, y: vectorised(parameters, buffers, x, y)


class _Step:
    """One optimiser step of the running members; the stopped ones stay as they stopped."""

    def __init__(
        self,
        losses_of: Callable[[Tensor, Tensor], Tensor],
        optimizer: torch.optim.Optimizer,
        parameters: dict[str, Tensor],
        running: Tensor,
    ) -> None:
        self.losses_of, self.optimizer, self.running = losses_of, optimizer, running
        self.parameters = parameters
        self.device = running.device
        everyone = bool(running.all())
        self.held = None if everyone else {k: p.detach().clone() for k, p in parameters.items()}

    def __call__(self, x: Tensor, y: Tensor, where: str) -> Tensor:
        """Each member's mean loss on its batch ``[M]`` (stopped members' too, unused)."""
        losses = self.losses_of(x, y)
        _check_finite(losses, self.running, where)
        self.optimizer.zero_grad()
        losses[self.running].sum().backward()  # type: ignore[no-untyped-call]  # each its own
        self.optimizer.step()
        if self.held is not None:  # Adam's momentum would move a member without a gradient
            with torch.no_grad():
                for name, parameter in self.parameters.items():
                    parameter[~self.running] = self.held[name][~self.running]
        return losses.detach()


def _epoch(step: _Step, loaders: list[Any], rng: RNG, epoch: int) -> Tensor:
    """One pass of every member over its own batches; the members' mean losses ``[M]``."""
    totals = torch.zeros(len(loaders), dtype=torch.float64, device=step.device)
    steps = 0
    with rng.stream("fit"):  # nothing between the steps draws at random
        for index, batches in enumerate(zip(*loaders, strict=True)):
            x = torch.stack([batch[0] for batch in batches]).to(step.device)
            y = torch.stack([batch[1] for batch in batches]).to(step.device)
            totals += step(x, y, f"epoch {epoch}, step {index}")
            steps += 1
    return totals / max(steps, 1)


def _check_finite(losses: Tensor, running: Tensor, where: str) -> None:
    finite = torch.isfinite(losses.detach()) | ~running
    if not bool(finite.all()):
        members = [int(i) for i in torch.nonzero(~finite).flatten()]
        raise NonFiniteLossError(
            f"non-finite loss at {where} for member(s) {members}. Lower "
            "the learning rate, standardise inputs and targets, or check the data for NaN/inf."
        )


def _write_back(
    parameters: dict[str, Tensor], objectives: list[_Objective], running: Tensor
) -> None:
    """Copy the stacked parameters into each running member (and its likelihood)."""
    with torch.no_grad():
        for i, objective in enumerate(objectives):
            if not bool(running[i]):
                continue
            for name, own in objective.named_parameters():
                own.copy_(parameters[name][i])


def _record(
    objectives: list[_Objective],
    rngs: list[RNG],
    histories: list[History],
    stoppers: list[EarlyStopping],
    losses: Tensor,
    validation: Validation | None,
) -> list[bool]:
    """Each running member's epoch in its history; whether each member has stopped."""
    stopped = []
    for objective, rng, history, stopper, loss in zip(
        objectives, rngs, histories, stoppers, losses.tolist(), strict=True
    ):
        if history.extras["stopped_early"]:
            stopped.append(True)
            continue
        history.record(loss=loss, nll=loss, kl=0.0, kl_weight=1.0)
        if validation is not None:
            val_nll = validation_nll(objective.network, objective.likelihood, validation, rng)
            history.record(val_nll=val_nll)
            if stopper.update(val_nll, objective.network, objective.likelihood):
                history.extras["stopped_early"] = True
        stopped.append(bool(history.extras["stopped_early"]))
    return stopped


def _finish(
    objectives: list[_Objective],
    histories: list[History],
    stoppers: list[EarlyStopping],
    validation: Validation | None,
) -> None:
    """The best weights back in each member (with validation); everything in eval mode."""
    for objective, history, stopper in zip(objectives, histories, stoppers, strict=True):
        if validation is not None:
            stopper.restore(objective.network, objective.likelihood)
            history.extras["best_epoch"] = stopper.best_step
        objective.eval()


def _new_history() -> History:
    return History(
        "fit",
        metrics={"loss": [], "nll": [], "kl": [], "kl_weight": [], "val_nll": []},
        extras={"best_epoch": None, "stopped_early": False},
    )


def _checked_data(
    member: nn.Module,
    likelihood: Likelihood,
    data: tuple[Tensor, Tensor],
    validation: Validation | None,
) -> tuple[Tensor, Tensor]:
    """``(x, y)`` with ``y`` checked and shaped by the likelihood once, for all members (a
    check inside ``vmap`` cannot branch on the data); the inputs probed as ``fit`` does."""
    x, y = data
    probe = check_model_input(member, x)  # generators untouched, eval mode, no gradients
    if validation is not None:
        check_model_input(member, validation.x)
    outputs = torch.zeros((x.shape[0], *probe.shape[1:]), dtype=probe.dtype)
    return x, likelihood.check_targets(outputs, y.to(outputs.device))


def _member_data(data: TrainData, bagging: bool, rng: RNG) -> TrainData:
    """Member data as sequential training gives it: the tensors, or its bootstrap resample."""
    if not bagging:
        return data
    x, y = data  # type: ignore[misc]
    index = torch.randint(0, x.shape[0], (x.shape[0],), generator=rng.torch_generator("bootstrap"))
    return x[index], y[index]


def _checked_options(
    members: nn.ModuleList, likelihood: Likelihood, data: TrainData, fit_options: dict[str, Any]
) -> dict[str, Any]:
    """The options with their defaults, after refusing what lock-step training cannot do."""
    _check_objective(likelihood)
    unsupported = sorted(set(fit_options) - set(LOCKSTEP_OPTIONS))
    if unsupported:
        raise ValueError(
            f"lockstep=True takes the fit options {LOCKSTEP_OPTIONS}, not {unsupported}; "
            "train the members one after another (lockstep=False) for those."
        )
    if not (
        isinstance(data, tuple) and len(data) == 2 and all(isinstance(t, Tensor) for t in data)
    ):
        raise TypeError(
            "lockstep=True trains on (x, y) tensors; pass the tensors (a Dataset's rows are "
            "read one by one, which lock-step training cannot share between members)."
        )
    for member in members:
        if has_posterior(member) or any(True for _ in bayesian_modules(member)):
            raise ValueError(
                "lockstep=True trains plain networks; members with Bayesian layers or an "
                "MCDropout wrapper train one after another (lockstep=False)."
            )
        if any(True for _ in member.buffers()):
            raise ValueError(
                "lockstep=True cannot update buffers (batch-norm running statistics) of "
                "stacked members; train them one after another (lockstep=False)."
            )
    options = {"epochs": 100, "batch_size": 128, "lr": 1e-3, "validation": None} | fit_options
    options.setdefault("threads", "auto")
    check_threads(options["threads"])
    check_int("epochs", options["epochs"])
    check_int("batch_size", options["batch_size"])
    check_positive("lr", options["lr"])
    if options["validation"] is not None and not isinstance(options["validation"], Validation):
        raise TypeError("validation must be a bnn.infer.Validation.")
    return options


def _check_objective(likelihood: Likelihood) -> None:
    """Inside ``vmap`` the objective is ``training_log_density`` (no data-dependent checks): a
    likelihood that changes ``training_log_prob`` or ``log_prob`` must define it as well."""
    kind = type(likelihood)
    own_form = kind.training_log_density is not Likelihood.training_log_density
    default_objective = (
        kind.training_log_prob is Likelihood.training_log_prob
        and kind.log_prob is Likelihood.log_prob
    )
    if not (own_form or default_objective):
        raise ValueError(
            f"{kind.__name__} changes training_log_prob or log_prob but not "
            "training_log_density, the unchecked form lock-step training evaluates inside "
            "vmap; define it (see bnn.likelihoods.Likelihood) or train the members one after "
            "another (lockstep=False)."
        )


def _device(members: nn.ModuleList) -> torch.device:
    parameter = next(members.parameters(), None)
    if parameter is None:
        raise ValueError("the members have no parameters to train.")
    return parameter.device


def check_lockstep(
    workers: int, executor: Executor | None, distributed: bool, threads: int | None
) -> None:
    """Lock-step training is one process's vectorised loop: no pool, ranks or member threads."""
    if not isinstance(workers, int) or isinstance(workers, bool):
        raise TypeError(f"workers must be an int, got {type(workers).__name__}.")
    chosen = {
        "workers": workers != 0,
        "executor": executor is not None,
        "distributed": bool(distributed),
        "threads_per_member": threads is not None,
    }
    if any(chosen.values()):
        names = [name for name, given in chosen.items() if given]
        raise ValueError(
            f"lockstep=True trains every member in one vectorised loop in this process; it "
            f"does not combine with {names} (pass fit's threads= for its thread count)."
        )


_LOCAL = job_strategy(False)
