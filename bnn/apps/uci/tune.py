"""``bnn benchmark uci --tune``: each split's hyperparameters tuned on its validation split.

Per split, `bnn.tune.tune` searches the method's space below (TPE, ``trials`` trials, each
scored by the mean over ``seeds`` common seeds of the validation negative log-likelihood of
the method trained on the split's training part). The best configuration then trains exactly
as the untuned row does — same RNG, so default hyperparameters reproduce the untuned numbers —
and is scored on the test part, which the tuning never sees.

============== ============================================================================
method         space
============== ============================================================================
mc_dropout     dropout rate in [0.005, 0.5] (log), Adam lr in [1e-3, 1e-2] (log)
vi             Adam lr in [1e-3, 3e-2] (log)
ensemble       Adam lr in [1e-3, 1e-2] (log), β of β-NLL in [0, 1]
sghmc          Adam lr of the MAP fit in [1e-3, 1e-2] (log)
laplace, swag, Adam lr of the evidence-driven training (``marglik_training``) in
multiswag      [1e-3, 3e-2] (log); prior precision and noise come from the evidence
============== ============================================================================

The GP's hyperparameters come from its marginal likelihood and the stack's weights from the
validation split already; they are not tuned here.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from bnn._checks import check_int
from bnn.apps.uci.common import Defaults, Prepared
from bnn.apps.uci.methods import fit_method
from bnn.evaluate import metrics
from bnn.random.rng import RNG
from bnn.tune import Float, TuneResult, tune

__all__ = ["SPACES", "Tuning", "tuned_defaults"]

_LR = Float(1e-3, 1e-2, log=True)
_MARGLIK_LR = Float(1e-3, 3e-2, log=True)
SPACES: dict[str, dict[str, Float]] = {
    "mc_dropout": {"dropout": Float(0.005, 0.5, log=True), "lr": _LR},
    "vi": {"lr": Float(1e-3, 3e-2, log=True)},
    "ensemble": {"lr": _LR, "ensemble_beta": Float(0.0, 1.0)},
    "sghmc": {"lr": _LR},
    "laplace": {"marglik_lr": _MARGLIK_LR},
    "swag": {"marglik_lr": _MARGLIK_LR},
    "multiswag": {"marglik_lr": _MARGLIK_LR},
}
"""The tuned fields of `Defaults` per method."""


@dataclass(frozen=True)
class Tuning:
    """How much tuning each split gets: ``trials`` configurations × ``seeds`` seeds."""

    trials: int = 12
    seeds: int = 2

    def __post_init__(self) -> None:
        check_int("tuning trials", self.trials)
        check_int("tuning seeds", self.seeds)


@dataclass(frozen=True)
class ValidationObjective:
    """The validation NLL of ``method`` trained with ``params`` replacing the defaults
    (picklable, for executors)."""

    method: str
    data: Prepared
    defaults: Defaults

    def __call__(self, params: dict[str, Any], rng: RNG) -> float:
        validation = self.data.options["validation"]
        fitted = fit_method(self.method, self.data, replace(self.defaults, **params), rng)
        x_val = validation.x if fitted.dtype is None else validation.x.to(fitted.dtype)
        return metrics.nll(fitted.predict(x_val), validation.y.to(x_val.dtype))


def check_tunable(method: str) -> None:
    """Raise a `ValueError` naming the tunable methods when ``method`` is not one."""
    if method not in SPACES:
        raise ValueError(
            f"--tune tunes {sorted(SPACES)}; {method!r} fits its own hyperparameters "
            "(the GP by marginal likelihood, the stack's weights on the validation split)."
        )


def tuned_defaults(
    method: str, data: Prepared, defaults: Defaults, tuning: Tuning, rng: RNG
) -> tuple[Defaults, TuneResult]:
    """The defaults with the method's best configuration on this split's validation data, and
    the tuning's result (every trial with its seed spread)."""
    check_tunable(method)
    if data.options.get("validation") is None:
        raise ValueError("tuning scores on the validation split; use a validation fraction > 0.")
    withheld = replace(data, x_test=data.x_test[:0])  # the objective never holds test inputs
    result = tune(
        ValidationObjective(method, withheld, defaults),
        SPACES[method],
        seeds=tuning.seeds,
        n_trials=tuning.trials,
        rng=rng.spawn("tune"),
        progress=False,
    )
    return replace(defaults, **result.best_params), result
