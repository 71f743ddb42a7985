"""UCI benchmark methods built on a network trained the ordinary way, and the Gaussian process.

Each function has the signature of ``bnn.apps.uci_methods``: ``(method, data, defaults,
rng) -> Fitted`` on standardised data.

* ``laplace``: the network (50 ReLU units) trained by ``bnn.infer.marglik_training`` — MAP
  under ``N(0, 1/δ)``, full batch, Adam with cosine decay, ``δ`` and ``σ`` moved to the
  evidence maximum of an all-layer full-GGN Laplace approximation every 5 % of the epochs
  (Immer et al. 2021), float64 — then ``δ`` and ``σ`` chosen on the validation split, the
  linearised (GLM) predictive.
* ``swag``: the same MAP network, then SWAG (rank 20, SGD with momentum from the MAP weights);
  the observation noise chosen on the validation split as for MC dropout.
* ``gp``: an exact GP with an ARD RBF kernel, its hyperparameters and noise by the marginal
  likelihood.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from bnn.apps.uci_setup import Defaults, Fitted, Prepared, validated_noise
from bnn.apps.uci_setup import network as mlp
from bnn.infer.gp import gp
from bnn.infer.laplace import LaplacePosterior
from bnn.infer.marglik import marglik_training
from bnn.infer.swag import swag
from bnn.infer.vi import fit
from bnn.likelihoods import Gaussian
from bnn.random.rng import RNG

__all__ = ["gp_fitted", "laplace_fitted", "swag_fitted"]


def _map_network(data: Prepared, rng: RNG) -> tuple[nn.Module, Gaussian]:
    """The MAP network and its learned noise, trained as the other methods train."""
    with rng.stream("init"):
        network = mlp(data.x.shape[1], 1)
    learned = Gaussian(0.5, learn_std=True)
    fit(network, (data.x, data.y), likelihood=learned, rng=rng, progress=False, **data.options)
    return network, learned


def marglik_network(data: Prepared, defaults: Defaults, rng: RNG) -> LaplacePosterior:
    """The network trained with its prior and noise by the evidence; its Laplace posterior."""
    with rng.stream("init"):
        network = mlp(data.x.shape[1], 1).double()
    epochs = defaults.marglik_epochs
    posterior, _ = marglik_training(
        network,
        (data.x.double(), data.y.double()),
        likelihood=Gaussian(1.0),
        hessian="full",
        epochs=epochs,
        lr=1e-2,
        every=max(1, epochs // 20),
        burn_in=max(1, epochs // 10),
        rng=rng,
        progress=False,
    )
    return posterior


def laplace_fitted(
    method: str,  # noqa: ARG001 - one signature for every method
    data: Prepared,
    defaults: Defaults,
    rng: RNG,
) -> Fitted:
    """All-layer full-GGN Laplace of the evidence-trained network; δ and σ on validation."""
    posterior = marglik_network(data, defaults, rng)
    validation = data.options.get("validation")
    if validation is not None:
        posterior.optimize_prior_precision(
            "validation",
            validation=(validation.x.double(), validation.y.double()),
            grid=torch.logspace(-3, 3, 25, dtype=torch.float64),
        )
    return Fitted(posterior, dtype=torch.float64)


def swag_fitted(
    method: str,  # noqa: ARG001
    data: Prepared,
    defaults: Defaults,
    rng: RNG,
) -> Fitted:
    """SWAG from the MAP weights; the noise chosen on the validation split."""
    network, learned = _map_network(data, rng)
    noise_std = float(learned.std.detach())
    posterior, _ = swag(
        network,
        (data.x, data.y),
        likelihood=Gaussian(noise_std),
        epochs=60,
        burn_in=10,
        lr=1e-2 * noise_std**2,  # the step of SGD at lr 0.01 on the mean squared error
        rank=20,
        batch_size=defaults.batch_size,
        rng=rng.spawn("swag"),
        progress=False,
    )
    validation = data.options.get("validation")
    noise = validated_noise(posterior, learned, validation, defaults, rng)  # type: ignore[arg-type]
    return Fitted(posterior, noise, defaults.num_samples, rng)


def gp_fitted(
    method: str,  # noqa: ARG001
    data: Prepared,
    defaults: Defaults,
    rng: RNG,
) -> Fitted:
    """Exact GP regression (ARD RBF kernel), hyperparameters by the marginal likelihood."""
    options: dict[str, Any] = {
        "epochs": defaults.gp_epochs,
        "lr": 0.05,
        "kernel": "rbf",
        "method": "exact",
    }
    x, y = data.x.double(), data.y.double()
    posterior, _ = gp(
        None, (x, y), likelihood=Gaussian(0.5, learn_std=True), rng=rng, progress=False, **options
    )
    return Fitted(posterior, num_samples=64, rng=rng, dtype=torch.float64)
