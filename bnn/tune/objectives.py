"""Ready objectives for tuning the library's own methods on a validation split.

`MethodObjective` trains one of the library's methods on ``train`` with a configuration and a
seed, and scores it on ``validation`` — never on test data. It is a picklable
``objective(params, rng) -> float`` (lower is better) for `bnn.tune.tune`, and carries a
default search space for its method:

============== ===================================================== ======================
method         tunable ``params`` (besides ``lr``, ``epochs``,        default space
               ``hidden``, ``batch_size``)
============== ===================================================== ======================
``"map"``      ``weight_decay``                                       lr, weight_decay
``"mc_dropout"`` ``dropout``, ``weight_decay``                        lr, dropout, weight_decay
``"vi"``       ``prior_scale`` (Bayes by backprop, all layers)        lr, prior_scale
``"ensemble"`` ``members``, ``weight_decay``                          lr, members, weight_decay
``"laplace"``  ``weight_decay`` (of the MAP fit; the prior precision  lr, weight_decay
               and noise are then fitted by the marginal likelihood)
============== ===================================================== ======================

``weight_decay`` is ``λ`` of ``torch.optim.SGD(weight_decay=λ)`` on the per-datum loss,
applied as the MAP prior ``Normal(0, 1/√(λN))`` (`bnn.fit`'s ``prior=``).

Scores (all minimised): ``"nll"`` — the validation negative log predictive density per
datum (the log score; the default); ``"rmse"`` (regression); ``"error"`` — 1 − accuracy
(classification); ``"calibration"`` — the ECE (classification) or the mean |coverage − level|
of central intervals (regression); ``"marglik"`` (``"laplace"`` only) — the negative Laplace
log marginal likelihood of the training data per datum (Immer et al. 2021): no validation
data needed, so every datum can train.

Regression (floating-point ``y``) learns a Gaussian noise std with the network; classification
(integer ``y``) uses a softmax over ``max(y) + 1`` classes. Every random number comes from the
``rng`` the tuner passes (initialisation, batches, dropout, prediction).

Example:
    >>> objective = bnn.tune.objectives.MethodObjective(
    ...     "mc_dropout", (x_train, y_train), (x_val, y_val), epochs=100)
    >>> result = bnn.tune.tune(objective, objective.space(), seeds=3, n_trials=20, rng=0)
    >>> result.best_params
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from bnn._checks import check_int, check_positive
from bnn.evaluate import metrics
from bnn.evaluate.calibration import calibration
from bnn.infer.ensembles.ensemble import deep_ensemble
from bnn.infer.laplace.laplace import laplace
from bnn.infer.training.fit import fit
from bnn.likelihoods import (
    Categorical,
    ClassificationPrediction,
    Gaussian,
    Likelihood,
    Prediction,
    RegressionPrediction,
)
from bnn.nn.convert import bayesianize
from bnn.nn.dropout import MCDropout
from bnn.nn.priors import Normal
from bnn.posterior.model import PointEstimate
from bnn.predict import predict_with_uncertainty
from bnn.random.rng import RNG
from bnn.tune.space import Float, Int

__all__ = ["METHODS", "SCORES", "MethodObjective"]

METHODS = ("map", "mc_dropout", "vi", "ensemble", "laplace")
SCORES = ("nll", "rmse", "error", "calibration", "marglik")

_COMMON = ("lr", "epochs", "hidden", "batch_size")
_OWN = {
    "map": ("weight_decay",),
    "mc_dropout": ("dropout", "weight_decay"),
    "vi": ("prior_scale",),
    "ensemble": ("members", "weight_decay"),
    "laplace": ("weight_decay",),
}
_DEFAULTS: dict[str, Any] = {
    "weight_decay": 0.0,
    "dropout": 0.1,
    "prior_scale": 1.0,
    "members": 5,
}


@dataclass(frozen=True)
class MethodObjective:
    """Train ``method`` on ``train`` under ``params`` and one seed; score it on ``validation``.

    Args:
        method: one of `METHODS`.
        train: ``(x [N, d], y)``; ``y`` ``[N]``/``[N, k]`` floats (regression) or ``[N]``
            integer class labels (classification).
        validation: ``(x_val, y_val)`` like ``train`` (``None`` only with ``score="marglik"``).
        score: one of `SCORES` (lower is better).
        hidden: hidden units per layer (a ``params["hidden"]`` overrides it).
        depth: hidden layers of the ReLU network.
        epochs: training epochs (overridable by ``params``).
        batch_size: mini-batch size (overridable by ``params``).
        lr: Adam's learning rate (overridable by ``params``).
        num_samples: function samples of a validation prediction.

    Calling it: ``objective(params, rng) -> float``; ``params`` may hold the names listed in
    the module docstring for ``method``; an unknown name raises ``ValueError``.

    Raises:
        ValueError / TypeError: an unknown method or score, a score that does not fit the task,
            mismatched or empty data, non-finite inputs, a missing validation split.
    """

    method: str
    train: tuple[Tensor, Tensor]
    validation: tuple[Tensor, Tensor] | None
    score: str = "nll"
    hidden: int = 50
    depth: int = 1
    epochs: int = 100
    batch_size: int = 32
    lr: float = 1e-3
    num_samples: int = 100
    direction: str = field(default="minimize", init=False)

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}, got {self.method!r}.")
        if self.score not in SCORES:
            raise ValueError(f"score must be one of {SCORES}, got {self.score!r}.")
        if self.score == "marglik" and self.method != "laplace":
            raise ValueError(
                "score='marglik' is the Laplace marginal likelihood: method='laplace'."
            )
        for name in ("hidden", "depth", "epochs", "batch_size", "num_samples"):
            check_int(name, getattr(self, name))
        check_positive("lr", self.lr)
        _check_pair("train", self.train)
        if self.validation is None:
            if self.score != "marglik":
                raise ValueError(
                    f"score={self.score!r} is measured on held-out data: pass "
                    "validation=(x_val, y_val) (only score='marglik' needs none)."
                )
        else:
            _check_pair("validation", self.validation)
            if self.validation[0].shape[1:] != self.train[0].shape[1:]:
                raise ValueError(
                    f"validation inputs have shape {tuple(self.validation[0].shape[1:])} per row, "
                    f"training inputs {tuple(self.train[0].shape[1:])}."
                )
        if self.classification and self.score == "rmse":
            raise ValueError("score='rmse' is for regression; a classifier uses 'error' or 'nll'.")
        if not self.classification and self.score == "error":
            raise ValueError("score='error' is for classification; regression uses 'rmse'.")

    # ------------------------------------------------------------------ what it tunes
    @property
    def classification(self) -> bool:
        """Whether the targets are class labels."""
        return not self.train[1].is_floating_point()

    @property
    def accepted(self) -> tuple[str, ...]:
        """The ``params`` names this method accepts."""
        return _COMMON + _OWN[self.method]

    def space(self) -> dict[str, Float | Int]:
        """A default search space for the method (see the module docstring)."""
        space: dict[str, Float | Int] = {"lr": Float(1e-4, 3e-2, log=True)}
        if "dropout" in self.accepted:
            space["dropout"] = Float(0.005, 0.5, log=True)
        if "prior_scale" in self.accepted:
            space["prior_scale"] = Float(0.03, 3.0, log=True)
        if "members" in self.accepted:
            space["members"] = Int(2, 10)
        if "weight_decay" in self.accepted:
            space["weight_decay"] = Float(1e-6, 1e-1, log=True)
        return space

    # ------------------------------------------------------------------ one run
    def __call__(self, params: dict[str, Any], rng: RNG) -> float:
        """Train under ``params`` with ``rng``; the score on the validation data."""
        settings = self._settings(params)
        x, y = self._targets(self.train)
        likelihood = self._likelihood()
        if self.method == "ensemble":
            posterior: Any = self._ensemble(x, y, likelihood, settings, rng)
            likelihood = posterior.predictive_likelihood or likelihood
        else:
            model = self._model(x.shape[1], self._outputs(y), settings, rng)
            fit(model, (x, y), likelihood=likelihood, rng=rng, progress=False, **_fit(settings, x))
            posterior = PointEstimate(model) if self.method == "map" else model
            if self.method == "laplace":
                return self._laplace(model, x, y, likelihood)
        return self._score(posterior, likelihood, rng)

    def _settings(self, params: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(params) - set(self.accepted))
        if unknown:
            raise ValueError(
                f"method {self.method!r} does not tune {unknown}; it accepts {self.accepted}."
            )
        defaults = {
            "lr": self.lr,
            "epochs": self.epochs,
            "hidden": self.hidden,
            "batch_size": self.batch_size,
        }
        return {**defaults, **{k: _DEFAULTS[k] for k in _OWN[self.method]}, **params}

    def _targets(self, pair: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        x, y = pair
        if self.classification:
            return x, y.long()
        return x, y.unsqueeze(-1) if y.dim() == 1 else y

    def _outputs(self, y: Tensor) -> int:
        if not self.classification:
            return int(y.shape[-1])
        labels = [self.train[1]] + ([self.validation[1]] if self.validation is not None else [])
        return int(max(int(t.max()) for t in labels)) + 1

    def _likelihood(self) -> Likelihood:
        return Categorical() if self.classification else Gaussian(0.5, learn_std=True)

    def _network(self, inputs: int, outputs: int, settings: dict[str, Any]) -> nn.Sequential:
        layers: list[nn.Module] = []
        width = inputs
        for _ in range(self.depth):
            layers += [nn.Linear(width, int(settings["hidden"])), nn.ReLU()]
            if self.method == "mc_dropout":
                layers.append(nn.Dropout(float(settings["dropout"])))
            width = int(settings["hidden"])
        return nn.Sequential(*layers, nn.Linear(width, outputs))

    def _model(self, inputs: int, outputs: int, settings: dict[str, Any], rng: RNG) -> nn.Module:
        with rng.stream("init"):
            network = self._network(inputs, outputs, settings)
        if self.method == "mc_dropout":
            return MCDropout(network)
        if self.method == "vi":
            prior = Normal(0.0, float(settings["prior_scale"]))
            return bayesianize(network, prior=prior, init="random", rng=rng)
        return network

    def _ensemble(
        self, x: Tensor, y: Tensor, likelihood: Likelihood, settings: dict[str, Any], rng: RNG
    ) -> Any:
        outputs = self._outputs(y)
        ensemble, _ = deep_ensemble(
            lambda: self._network(x.shape[1], outputs, settings),
            (x, y),
            likelihood=likelihood,
            num_members=int(settings["members"]),
            rng=rng,
            progress=False,
            **_fit(settings, x),
        )
        return ensemble

    def _laplace(self, model: nn.Module, x: Tensor, y: Tensor, learned: Likelihood) -> float:
        start = learned
        if isinstance(learned, Gaussian):  # the learned std as the starting noise
            start = Gaussian(float(learned.std.detach()))
        posterior, _ = laplace(model, (x, y), likelihood=start, progress=False)
        posterior.optimize_prior_precision(per_layer=True, optimize_noise=not self.classification)
        if self.score == "marglik":
            return -float(posterior.log_marginal_likelihood().detach()) / x.shape[0]
        return self._score(posterior, None, None)

    def _score(self, posterior: Any, likelihood: Likelihood | None, rng: RNG | None) -> float:
        assert self.validation is not None
        x_val, y_val = self._targets(self.validation)
        samples = 1 if isinstance(posterior, PointEstimate) else self.num_samples
        carried = getattr(posterior, "predictive_likelihood", None)
        with torch.no_grad():
            prediction = predict_with_uncertainty(
                posterior,
                x_val,
                likelihood=None if carried is not None else likelihood,
                num_samples=samples,
                rng=rng,
            )
        return _score(self.score, prediction, y_val)


def _fit(settings: dict[str, Any], x: Tensor) -> dict[str, Any]:
    """`bnn.fit` options from the settings; weight decay as the MAP prior."""
    options: dict[str, Any] = {
        "epochs": int(settings["epochs"]),
        "batch_size": int(settings["batch_size"]),
        "lr": float(settings["lr"]),
    }
    decay = float(settings.get("weight_decay", 0.0))
    if decay < 0 or not math.isfinite(decay):
        raise ValueError(f"weight_decay must be a finite number >= 0, got {decay}.")
    if decay > 0:
        options["prior"] = Normal(0.0, 1.0 / math.sqrt(decay * x.shape[0]))
    return options


def _score(score: str, prediction: Prediction, y: Tensor) -> float:
    if score == "nll":
        return metrics.nll(prediction, y)  # type: ignore[arg-type]
    if score == "rmse":
        assert isinstance(prediction, RegressionPrediction)
        return metrics.rmse(prediction, y)
    if score == "error":
        assert isinstance(prediction, ClassificationPrediction)
        return 1.0 - metrics.accuracy(prediction, y)
    if isinstance(prediction, ClassificationPrediction):
        return metrics.expected_calibration_error(prediction, y)
    return float(calibration(prediction, y).scores["calibration error"])


def _check_pair(name: str, pair: object) -> None:
    if not (isinstance(pair, tuple) and len(pair) == 2):
        raise TypeError(f"{name} must be a pair (x, y) of tensors.")
    x, y = pair
    if not (isinstance(x, Tensor) and isinstance(y, Tensor)):
        raise TypeError(f"{name} must be a pair (x, y) of tensors.")
    if x.dim() != 2 or x.shape[0] == 0:
        raise ValueError(f"{name} inputs must be a non-empty [N, d] tensor, got {tuple(x.shape)}.")
    if y.shape[0] != x.shape[0]:
        raise ValueError(f"{name} has {x.shape[0]} inputs but {y.shape[0]} targets.")
    if not bool(torch.isfinite(x).all()) or (
        y.is_floating_point() and not bool(torch.isfinite(y).all())
    ):
        raise ValueError(f"{name} contains NaN or inf; drop or impute those rows first.")
