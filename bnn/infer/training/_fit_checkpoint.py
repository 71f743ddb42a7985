"""What `bnn.infer.fit` saves in a checkpoint and restores from it: the settings a resumed run
must share with the one that wrote it, and the state the next epoch depends on."""

from __future__ import annotations

from typing import Any

from torch import nn

from bnn.infer.checkpoint import data_fingerprint, layout_fingerprint
from bnn.infer.history import History
from bnn.infer.training._early_stopping import EarlyStopping
from bnn.infer.training._fit_options import KLSchedule, Validation
from bnn.infer.training._loop import OptimizerSpec, StepContext, TrainData
from bnn.likelihoods import Likelihood
from bnn.nn.priors import Prior
from bnn.parallel.distributed import TrainingStrategy
from bnn.random.rng import RNG

__all__ = ["fit_settings", "restore", "run_identity", "snapshot"]


def fit_settings(
    generator: RNG,
    batch_size: int,
    lr: float,
    optimizer: OptimizerSpec | None,
    num_samples: int,
    schedule: KLSchedule,
) -> dict[str, Any]:
    """What a resumed ``fit`` must share with the run that wrote the checkpoint."""
    return {
        "seed": generator.seed,
        "rng_path": repr(generator),
        "batch_size": batch_size,
        "lr": float(lr),
        "optimizer": "Adam" if optimizer is None else type(optimizer).__name__,
        "num_samples": num_samples,
        "kl_weight": float(schedule.weight),
        "kl_annealing_epochs": schedule.annealing_epochs,
    }


def snapshot(
    context: StepContext,
    generator: RNG,
    history: History,
    stopper: EarlyStopping | None,
    epochs_done: int,
    step: int,
) -> dict[str, Any]:
    """Everything the next epoch depends on (see ``bnn.infer.checkpoint``)."""
    return {
        "epochs_done": epochs_done,
        "step": step,
        "model": context.model.state_dict(),
        "likelihood": context.likelihood.state_dict(),
        "optimizer": context.optimizer.state_dict(),
        "rng": generator.state_dict(),
        "noise_rng": None if context.noise is generator else context.noise.state_dict(),
        "early_stopping": None if stopper is None else stopper.state_dict(),
        "metrics": history.metrics,
        "extras": history.extras,
    }


def restore(
    saved: dict[str, Any],
    context: StepContext,
    generator: RNG,
    history: History,
    stopper: EarlyStopping | None,
) -> tuple[int, int]:
    """Load a `snapshot` into the run; returns ``(first epoch, step)``.

    Raises:
        ValueError: the saved state does not fit this run's model, likelihood or optimiser
            (a file of an older bnn, whose settings do not record their layout).
    """
    try:
        context.model.load_state_dict(saved["model"])
        context.likelihood.load_state_dict(saved["likelihood"])
        context.optimizer.load_state_dict(saved["optimizer"])
    except (RuntimeError, ValueError, KeyError) as error:
        raise ValueError(
            "the checkpoint was written for another model, likelihood or optimiser than this "
            f"run's ({type(error).__name__}: {str(error).splitlines()[0]}); resume with the "
            "same ones, or give this run another checkpoint path."
        ) from error
    generator.load_state_dict(saved["rng"])
    if saved["noise_rng"] is not None:
        context.noise.load_state_dict(saved["noise_rng"])
    if stopper is not None and saved["early_stopping"] is not None:
        stopper.load_state_dict(saved["early_stopping"])
    history.metrics.update({name: list(values) for name, values in saved["metrics"].items()})
    history.extras.update(saved["extras"])
    return int(saved["epochs_done"]), int(saved["step"])


def run_identity(
    data: TrainData,
    size: int,
    model: nn.Module,
    likelihood: Likelihood,
    strategy: TrainingStrategy,
    validation: Validation | None,
    prior: Prior | None,
) -> dict[str, Any]:
    """What a checkpoint of ``fit`` records of the run besides its optimisation settings: the
    data, the model's and likelihood's layout, the ranks, the validation set, the prior."""
    return {
        "dataset_size": size,
        "data": data_fingerprint(data),
        "model": layout_fingerprint(model),
        "likelihood": _describe_likelihood(likelihood),
        "ranks": strategy.world_size,
        "validation": _describe(validation),
        "prior": repr(prior),
    }


def _describe_likelihood(likelihood: Likelihood) -> str:
    """The likelihood's kind and what of it trains (a resumed run must train the same)."""
    trained = [name for name, p in likelihood.named_parameters() if p.requires_grad]
    learns = f"learns {', '.join(trained)}" if trained else "learns nothing"
    return f"{type(likelihood).__name__} that {learns} ({layout_fingerprint(likelihood)})"


def _describe(validation: Validation | None) -> str | None:
    """What of ``validation`` a resumed run must share (for the checkpoint's settings)."""
    if validation is None:
        return None
    return (
        f"{len(validation.x)} inputs, patience {validation.patience}, "
        f"{validation.num_samples} samples, data {data_fingerprint((validation.x, validation.y))}"
    )
