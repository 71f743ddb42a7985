"""The image benchmark's methods: how each turns the training images into what predicts.

One `SeedRun` holds a seed's data and randomness and trains each network once: the MAP LeNet
(plain Adam on the cross-entropy) is shared by the methods built on it (``temperature``,
``laplace``, ``laplace_all``, ``swag``, ``sghmc`` — all start from the same weights, which the
laplace-torch comparison needs), and MultiSWAG continues the first members of the deep
ensemble (Wilson & Izmailov 2020). Each method's ``seconds`` counts its own work: a post-hoc
method's time excludes the MAP training it starts from (reported as ``map``'s time).

* ``map`` — the LeNet by Adam (``epochs``, ``lr``), one deterministic prediction.
* ``temperature`` — MAP with a temperature fitted on the validation split (Guo et al. 2017).
* ``mc_dropout`` — LeNet with dropout before each linear layer, trained and predicted with it.
* ``ensemble`` — 5 LeNets from different initialisations and shuffles.
* ``vi`` — Bayes by backprop: mean-field Gaussian conv and linear layers (``flipout``
  estimator, N(0, 1) prior, means from the default initialisation, stds from 1e-3).
* ``laplace`` — last-layer KFAC Laplace at the MAP, prior precision by the marginal
  likelihood, probit GLM predictive.
* ``laplace_all`` — all-layer KFAC Laplace, the same choices.
* ``swag`` — SWAG from the MAP: SGD with momentum 0.9, one model per epoch, rank = epochs.
* ``multiswag`` — SWAG from each ensemble member (``multiswag_runs``: the first ones); their
  equal mixture.
* ``sghmc`` — cyclical SGHMC (Zhang et al. 2020) from the MAP, ``⌊steps/cycles⌋``-step cycles,
  half exploration; 5 draws kept per cycle.
"""

from __future__ import annotations

import copy
import functools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor, nn

from bnn.apps.datasets.images import ImageData, ImageSet
from bnn.apps.images.network import Settings, lenet
from bnn.evaluate.recalibrate import pooled_temperature_scale, temperature_scale
from bnn.infer.ensembles.ensemble import DeepEnsemble, deep_ensemble
from bnn.infer.ensembles.swag import multi_swag, swag
from bnn.infer.laplace.laplace import laplace
from bnn.infer.mcmc.sgmcmc import StepSchedule, sghmc
from bnn.infer.training.fit import fit
from bnn.likelihoods import Categorical, ClassificationPrediction
from bnn.nn.convert import bayesianize
from bnn.nn.dropout import MCDropout
from bnn.posterior.model import PointEstimate, as_posterior
from bnn.predict import predict_with_uncertainty
from bnn.random.rng import RNG

__all__ = ["TRAIN", "SeedRun", "Trained", "validation_halves", "with_temperature"]


@dataclass
class Trained:
    """A method trained on one seed: what predicts, how many samples, and what it cost.

    Attributes:
        posterior: what `bnn.predict_with_uncertainty` takes.
        num_samples: function samples per prediction (1: deterministic; closed forms ignore it).
        seconds: the method's own training time.
        extras: what the method reports beside the metrics (temperature, prior precision, ...).
    """

    posterior: Any
    num_samples: int
    seconds: float
    extras: dict[str, Any] = field(default_factory=dict)

    def predict(self, x: Tensor, rng: RNG) -> ClassificationPrediction:
        """The predictive at images ``x`` ``[N, 1, H, W]``."""
        prediction = predict_with_uncertainty(
            self.posterior, x, num_samples=self.num_samples, likelihood=Categorical(), rng=rng
        )
        assert isinstance(prediction, ClassificationPrediction)
        return prediction


class SeedRun:
    """One seed's data, settings and randomness; trains each shared network once."""

    def __init__(self, data: ImageData, settings: Settings, rng: RNG, progress: bool) -> None:
        self.data, self.settings, self.rng, self.progress = data, settings, rng, progress
        self._map: tuple[nn.Module, float] | None = None
        self._ensemble: tuple[DeepEnsemble, float] | None = None

    @property
    def train(self) -> tuple[Tensor, Tensor]:
        return self.data.train.x, self.data.train.y

    @property
    def num_classes(self) -> int:
        return self.data.num_classes

    def network(self, dropout: float | None = None) -> nn.Module:
        """A fresh LeNet on the data's device (draws from the global generators)."""
        return lenet(
            self.num_classes,
            image_size=self.data.train.x.shape[-1],
            dropout=dropout,
            device=self.data.train.x.device,
        )

    def fit_options(self) -> dict[str, Any]:
        s = self.settings
        return {"epochs": s.epochs, "batch_size": s.batch_size, "lr": s.lr}

    def map_network(self) -> tuple[nn.Module, float]:
        """The MAP LeNet (trained on first use) and its training seconds; callers copy it."""
        if self._map is None:
            rng = self.rng.spawn("map")
            with rng.stream("init"):
                network = self.network()
            start = time.perf_counter()
            fit(
                network,
                self.train,
                likelihood=Categorical(),
                rng=rng,
                progress=self.progress,
                **self.fit_options(),
            )
            self._map = (network, time.perf_counter() - start)
        return self._map

    def ensemble(self) -> tuple[DeepEnsemble, float]:
        """The deep ensemble (trained on first use) and its training seconds."""
        if self._ensemble is None:
            start = time.perf_counter()
            ensemble, _ = deep_ensemble(
                functools.partial(
                    lenet,
                    self.num_classes,
                    image_size=self.data.train.x.shape[-1],
                    device=self.data.train.x.device,
                ),
                self.train,
                likelihood=Categorical(),
                num_members=self.settings.ensemble_members,
                rng=self.rng.spawn("ensemble"),
                progress=self.progress,
                **self.fit_options(),
            )
            self._ensemble = (ensemble, time.perf_counter() - start)
        return self._ensemble


def _timed(work: Callable[[], Any]) -> tuple[Any, float]:
    start = time.perf_counter()
    result = work()
    return result, time.perf_counter() - start


def _fit_seconds(run: SeedRun, model: nn.Module, rng: RNG) -> float:
    """Train ``model`` with the benchmark's options; the seconds it took."""
    _, seconds = _timed(
        lambda: fit(
            model,
            run.train,
            likelihood=Categorical(),
            rng=rng,
            progress=run.progress,
            **run.fit_options(),
        )
    )
    return seconds


def map_trained(run: SeedRun) -> Trained:
    network, seconds = run.map_network()
    return Trained(PointEstimate(network), 1, seconds)


def validation_halves(validation: ImageSet, settings: Settings) -> tuple[ImageSet, ImageSet]:
    """The images temperatures are fitted on and the images methods are chosen on: the whole
    validation split for both, or its first and second half with ``temperature_on_top``."""
    if not settings.temperature_on_top:
        return validation, validation
    half = len(validation) // 2
    return (
        ImageSet(validation.x[:half], validation.y[:half]),
        ImageSet(validation.x[half:], validation.y[half:]),
    )


def with_temperature(
    trained: Trained, calibration: ImageSet, rng: RNG, *, pooled: bool = False
) -> Trained:
    """``trained`` with a temperature fitted on ``calibration``: on each function sample's
    logits (`bnn.evaluate.recalibrate.temperature_scale`; Laplace's linearised predictive
    keeps its probit closed form, of the logits ``N(μ/T, Σ/T²)``), or with ``pooled`` on the
    averaged predictive (`bnn.evaluate.recalibrate.pooled_temperature_scale`)."""
    scale = pooled_temperature_scale if pooled else temperature_scale
    scaled, seconds = _timed(
        lambda: scale(
            as_posterior(trained.posterior),
            calibration.x,
            calibration.y,
            likelihood=Categorical(),
            num_samples=trained.num_samples,
            rng=rng,
        )
    )
    extras = {**trained.extras, "temperature": float(scaled.temperature)}
    return Trained(scaled, trained.num_samples, trained.seconds + seconds, extras)


def temperature_trained(run: SeedRun) -> Trained:
    network, _ = run.map_network()
    validation, _ = validation_halves(run.data.validation, run.settings)
    scaled, seconds = _timed(
        lambda: temperature_scale(
            PointEstimate(network),
            validation.x,
            validation.y,
            likelihood=Categorical(),
            num_samples=1,
        )
    )
    return Trained(scaled, 1, seconds, {"temperature": float(scaled.temperature)})


def mc_dropout_trained(run: SeedRun) -> Trained:
    rng = run.rng.spawn("mc_dropout")
    with rng.stream("init"):
        model = MCDropout(run.network(dropout=run.settings.dropout))
    return Trained(model, run.settings.num_samples, _fit_seconds(run, model, rng))


def ensemble_trained(run: SeedRun) -> Trained:
    ensemble, seconds = run.ensemble()
    return Trained(ensemble, len(ensemble), seconds)


def vi_trained(run: SeedRun) -> Trained:
    rng = run.rng.spawn("vi")
    with rng.stream("init"):
        network = run.network()
    model = bayesianize(
        network, estimator=run.settings.vi_estimator, init="random", init_std=1e-3, rng=rng
    )
    seconds = _fit_seconds(run, model, rng)
    return Trained(
        model, run.settings.num_samples, seconds, {"estimator": run.settings.vi_estimator}
    )


def _laplace_trained(run: SeedRun, subset: str) -> Trained:
    network, _ = run.map_network()

    def work() -> Any:
        posterior, _ = laplace(
            copy.deepcopy(network),
            run.train,
            likelihood=Categorical(),
            subset=subset,
            hessian="kron",
            predictive="glm",
            link="probit",
            progress=run.progress,
        )
        posterior.optimize_prior_precision("marglik")
        return posterior

    posterior, seconds = _timed(work)
    extras = {
        "prior_precision": float(posterior.prior_precision.reshape(-1)[0]),
        "log_marginal_likelihood": float(posterior.log_marginal_likelihood().detach()),
    }
    return Trained(posterior, run.settings.num_samples, seconds, extras)


def laplace_trained(run: SeedRun) -> Trained:
    return _laplace_trained(run, "last_layer")


def laplace_all_trained(run: SeedRun) -> Trained:
    return _laplace_trained(run, "all")


def _swag_options(run: SeedRun) -> dict[str, Any]:
    s = run.settings
    return {
        "epochs": s.swag_epochs,
        "lr": s.swag_lr,
        "rank": s.swag_epochs,
        "batch_size": s.batch_size,
    }


def _swag_family(run: SeedRun, method: Callable[..., Any], start: Any, name: str) -> Trained:
    """``swag`` or ``multi_swag`` from ``start`` with the benchmark's SGD options."""
    (posterior, _), seconds = _timed(
        lambda: method(
            start,
            run.train,
            likelihood=Categorical(),
            rng=run.rng.spawn(name),
            progress=run.progress,
            **_swag_options(run),
        )
    )
    return Trained(posterior, run.settings.num_samples, seconds)


def swag_trained(run: SeedRun) -> Trained:
    network, _ = run.map_network()
    return _swag_family(run, swag, copy.deepcopy(network), "swag")


def multiswag_trained(run: SeedRun) -> Trained:
    ensemble, _ = run.ensemble()
    starts = [copy.deepcopy(m) for m in list(ensemble.members)[: run.settings.multiswag_runs]]
    return _swag_family(run, multi_swag, starts, "multiswag")


def sghmc_trained(run: SeedRun) -> Trained:
    network, _ = run.map_network()
    s, n = run.settings, len(run.data.train)
    steps = s.sghmc_epochs * math.ceil(n / s.batch_size)
    sampling_steps = steps // s.sghmc_cycles // 2  # half of each cycle explores
    schedule = StepSchedule(
        kind="cyclical", steps=steps, cycles=s.sghmc_cycles, thin=max(1, sampling_steps // 5)
    )
    (samples, _), seconds = _timed(
        lambda: sghmc(
            copy.deepcopy(network),
            run.train,
            likelihood=Categorical(),
            lr=s.sghmc_lr / n,
            schedule=schedule,
            batch_size=s.batch_size,
            rng=run.rng.spawn("sghmc"),
            progress=run.progress,
        )
    )
    return Trained(samples, min(s.num_samples, samples.num_samples), seconds)


TRAIN: dict[str, Callable[[SeedRun], Trained]] = {
    "map": map_trained,
    "temperature": temperature_trained,
    "mc_dropout": mc_dropout_trained,
    "ensemble": ensemble_trained,
    "vi": vi_trained,
    "laplace": laplace_trained,
    "laplace_all": laplace_all_trained,
    "swag": swag_trained,
    "multiswag": multiswag_trained,
    "sghmc": sghmc_trained,
}
"""Every method by name."""
