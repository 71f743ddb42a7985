"""UCI benchmark methods built on a network trained the ordinary way, and the Gaussian process.

Each function has the signature of ``bnn.apps.uci.methods``: ``(method, data, defaults,
rng) -> Fitted`` on standardised data.

* ``laplace``: the network (50 ReLU units) trained by ``bnn.infer.marglik_training`` — MAP
  under ``N(0, 1/δ)``, full batch, Adam with cosine decay, ``δ`` and ``σ`` moved to the
  evidence maximum of an all-layer full-GGN Laplace approximation every 5 % of the epochs
  (Immer et al. 2021), float64 — then ``δ`` and ``σ`` chosen on the validation split, the
  linearised (GLM) predictive.
* ``swag``: the same evidence-trained network, then SWAG (rank 20, 60 epochs of SGD with
  momentum and the evidence's prior as weight decay); the SGD step (``0.01·σ²`` or ``0.1·σ²``),
  the covariance scale (½, 2, 8, 32) and the noise (``σ·2^[0, 3]``) chosen on the validation
  split by its log predictive density.
* ``multiswag``: three such networks from different seeds, each with its own SWAG run and
  validation choices, as an equally weighted mixture; the noise chosen on validation for it.
* ``gp``: an exact GP with an ARD RBF kernel, its hyperparameters and noise by the marginal
  likelihood; on more than 3,000 training rows (kin8nm; naval, power and protein would be
  too) a sparse variational GP with 512
  inducing points, trained on mini-batches.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from bnn.apps.uci.common import Defaults, Fitted, Prepared, validated_noise
from bnn.apps.uci.common import network as mlp
from bnn.evaluate.metrics import nll
from bnn.infer.ensembles.swag import SWAGPosterior, swag
from bnn.infer.gp.gp import gp
from bnn.infer.laplace.laplace import LaplacePosterior
from bnn.infer.laplace.marglik import marglik_training
from bnn.infer.training._loop import NonFiniteLossError
from bnn.infer.training.fit import Validation, fit
from bnn.likelihoods import Gaussian, RegressionPrediction
from bnn.posterior.gaussian import GaussianMixturePosterior
from bnn.predict import predict_with_uncertainty
from bnn.random.rng import RNG

__all__ = ["gp_fitted", "laplace_fitted", "multiswag_fitted", "swag_fitted"]


def _map_network(data: Prepared, rng: RNG) -> tuple[nn.Module, Gaussian]:
    """The MAP network and its learned noise, trained as the other methods train."""
    with rng.stream("init"):
        network = mlp(data.x.shape[1], 1)
    learned = Gaussian(0.5, learn_std=True)
    fit(network, (data.x, data.y), likelihood=learned, rng=rng, progress=False, **data.options)
    return network, learned


def marglik_network(
    data: Prepared, defaults: Defaults, rng: RNG
) -> tuple[nn.Module, LaplacePosterior]:
    """The network (float64) trained with its prior and noise by the evidence; its Laplace
    posterior."""
    with rng.stream("init"):
        network = mlp(data.x.shape[1], 1).double()
    epochs = defaults.marglik_epochs
    posterior, _ = marglik_training(
        network,
        (data.x.double(), data.y.double()),
        likelihood=Gaussian(1.0),
        hessian="full",
        epochs=epochs,
        lr=defaults.marglik_lr,
        every=max(1, epochs // 20),
        burn_in=max(1, epochs // 10),
        rng=rng,
        progress=False,
    )
    return network, posterior


def laplace_fitted(
    method: str,  # noqa: ARG001 - one signature for every method
    data: Prepared,
    defaults: Defaults,
    rng: RNG,
) -> Fitted:
    """All-layer full-GGN Laplace of the evidence-trained network; δ and σ on validation."""
    _, posterior = marglik_network(data, defaults, rng)
    validation = data.options.get("validation")
    if validation is not None:
        posterior.optimize_prior_precision(
            "validation",
            validation=(validation.x.double(), validation.y.double()),
            grid=torch.logspace(-3, 3, 25, dtype=torch.float64),
        )
    return Fitted(posterior, dtype=torch.float64)


SWAG_LR_FACTORS = (1e-2, 1e-1)
"""SGD steps of the SWAG phase, ``lr = f·σ²`` (``f = 0.01``: SGD at 0.01 on the squared error)."""
SWAG_SCALES = (0.5, 2.0, 8.0, 32.0)
"""Covariance scales tried (½ in Maddox et al. 2019)."""


def swag_fitted(
    method: str,  # noqa: ARG001
    data: Prepared,
    defaults: Defaults,
    rng: RNG,
) -> Fitted:
    """SWAG from the evidence-trained network, its prior as weight decay; the SGD step, the
    covariance scale and the noise (among ``σ·2^[0, 3]``) chosen on the validation split."""
    member = _validated_swag(data, defaults, rng)
    extras = {"swag_lr_factor": member.lr_factor, "swag_scale": member.scale}
    return Fitted(member.posterior, member.noise, defaults.num_samples, rng, torch.float64, extras)


def multiswag_fitted(
    method: str,  # noqa: ARG001
    data: Prepared,
    defaults: Defaults,
    rng: RNG,
) -> Fitted:
    """MultiSWAG (Wilson & Izmailov 2020): ``defaults.multiswag_runs`` networks trained from
    different seeds, each as ``swag`` (its own evidence, SGD step and scale on validation),
    their SWAG posteriors an equally weighted mixture; the noise chosen on the validation
    split for the mixture (among its members' geometric-mean ``σ·2^[0, 3]``)."""
    members = [
        _validated_swag(data, defaults, rng.spawn(f"member {i}"))
        for i in range(defaults.multiswag_runs)
    ]
    mixture = GaussianMixturePosterior([m.posterior for m in members])
    log_sigmas = torch.tensor([math.log(float(m.sigma)) for m in members])
    sigma = float(log_sigmas.mean().exp())
    validation = _double(data.options.get("validation"))
    start = _noise_start(sigma, validation)
    noise = validated_noise(mixture, start, validation, defaults, rng.spawn("noise"))
    extras = {
        "swag_lr_factor": [m.lr_factor for m in members],
        "swag_scale": [m.scale for m in members],
    }
    return Fitted(mixture, noise, defaults.num_samples, rng, torch.float64, extras)


@dataclass
class _SWAGChoice:
    posterior: SWAGPosterior  # with the chosen scale
    noise: Gaussian
    sigma: float  # the evidence's noise std
    lr_factor: float
    scale: float


def _noise_start(sigma: float, validation: Validation | None) -> Gaussian:
    """The noise whose multiples ``2^[-1, 2]`` are searched on validation (so ``σ·2^[0, 3]``);
    without validation data, ``σ`` itself."""
    return Gaussian(2 * sigma if validation is not None else sigma)


def _double(validation: Validation | None) -> Validation | None:
    if validation is None:
        return None
    return replace(validation, x=validation.x.double(), y=validation.y.double())


def _validated_swag(data: Prepared, defaults: Defaults, rng: RNG) -> _SWAGChoice:
    """SWAG from a network trained by the evidence (seeded by ``rng``); the SGD step, the
    covariance scale and the noise with the best validation log predictive density."""
    network, evidence = marglik_network(data, defaults, rng)
    sigma = evidence.noise_std
    assert sigma is not None
    x, y = data.x.double(), data.y.double()
    validation = _double(data.options.get("validation"))
    noise_base = _noise_start(sigma, validation)
    factors = SWAG_LR_FACTORS if validation is not None else SWAG_LR_FACTORS[:1]
    scales = SWAG_SCALES if validation is not None else SWAG_SCALES[:1]
    best: tuple[float, _SWAGChoice] | None = None
    for factor in factors:
        try:
            posterior, _ = swag(
                network,
                (x, y),
                likelihood=Gaussian(sigma),
                epochs=60,
                burn_in=10,
                lr=factor * sigma**2,
                weight_decay=float(evidence.prior_precision) / x.shape[0],
                rank=20,
                batch_size=defaults.batch_size,
                rng=rng.spawn("swag"),
                progress=False,
            )
        except NonFiniteLossError:
            continue  # this step size diverged; the other candidates remain
        for scale in scales:
            posterior.scale = scale
            noise = validated_noise(posterior, noise_base, validation, defaults, rng.spawn("noise"))
            score = _validation_log_score(posterior, noise, validation, defaults, rng)
            if best is None or score > best[0]:
                best = (score, _SWAGChoice(posterior, noise, float(sigma), factor, scale))
    if best is None:
        raise NonFiniteLossError("SWAG diverged at every step size tried.")
    choice = best[1]
    choice.posterior.scale = choice.scale
    return choice


def _validation_log_score(
    posterior: SWAGPosterior,
    noise: Gaussian,
    validation: Validation | None,
    defaults: Defaults,
    rng: RNG,
) -> float:
    """Mean validation log predictive density (``-inf`` if not finite; ``0`` without data)."""
    if validation is None:
        return 0.0
    prediction = predict_with_uncertainty(
        posterior,
        validation.x,
        likelihood=noise,
        num_samples=defaults.num_samples,
        rng=rng.spawn("score"),
    )
    assert isinstance(prediction, RegressionPrediction)
    score = -nll(prediction, validation.y)
    return score if math.isfinite(score) else -math.inf


def gp_fitted(
    method: str,  # noqa: ARG001
    data: Prepared,
    defaults: Defaults,
    rng: RNG,
) -> Fitted:
    """GP regression (ARD RBF kernel): exact, hyperparameters by the marginal likelihood; above
    ``defaults.gp_exact_rows`` training rows an SVGP (``gp_inducing`` inducing points, natural
    gradients, batches of 512, hyperparameters by the ELBO), whose cost is linear in ``N``."""
    x, y = data.x.double(), data.y.double()
    options: dict[str, Any] = {"epochs": defaults.gp_epochs, "lr": 0.05, "kernel": "rbf"}
    if x.shape[0] > defaults.gp_exact_rows:
        options |= {
            "method": "svgp",
            "epochs": defaults.gp_svgp_epochs,
            "lr": 0.01,
            "ngd_lr": 0.1,
            "num_inducing": defaults.gp_inducing,
            "batch_size": 512,
        }
    posterior, _ = gp(
        None, (x, y), likelihood=Gaussian(0.5, learn_std=True), rng=rng, progress=False, **options
    )
    return Fitted(posterior, num_samples=64, rng=rng, dtype=torch.float64)
