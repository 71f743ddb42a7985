"""What every UCI benchmark method shares: the defaults, the prepared split, the fitted method,
the network, and the observation noise chosen on the validation split."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from bnn.infer.training.fit import Validation
from bnn.likelihoods import Gaussian, Likelihood, RegressionPrediction
from bnn.posterior import Posterior
from bnn.predict import predict_with_uncertainty
from bnn.random.rng import RNG

__all__ = ["HIDDEN", "Defaults", "Fitted", "Prepared", "network", "validated_noise"]

HIDDEN = 50


@dataclass(frozen=True)
class Defaults:
    """The library's defaults for the benchmark (the same for every data set)."""

    epochs: int = 400
    batch_size: int = 32
    lr: float = 3e-3
    dropout: float = 0.05
    ensemble_members: int = 5
    ensemble_beta: float = 0.5  # β-NLL for the heteroscedastic members (Seitzer et al. 2022)
    num_samples: int = 200
    validation_fraction: float = 0.1
    gp_epochs: int = 200  # Adam steps on the GP's marginal likelihood
    gp_exact_rows: int = 3000  # above: a sparse variational GP instead of the exact one
    gp_inducing: int = 512  # the sparse GP's inducing points
    gp_svgp_epochs: int = 100  # its passes over the data, in batches of 512
    marglik_epochs: int = 1000  # full-batch epochs of marglik_training (laplace, swag)
    marglik_lr: float = 1e-2  # Adam's learning rate in marglik_training
    multiswag_runs: int = 3  # independently trained networks of MultiSWAG
    ensemble_lockstep: bool = False  # the ensemble's members trained at once (lockstep=True)


def network(inputs: int, outputs: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(inputs, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, outputs))


@dataclass(frozen=True)
class Prepared:
    """A split standardised for training: data, test inputs, fit options."""

    x: Tensor
    y: Tensor
    x_test: Tensor
    options: dict[str, Any]


@dataclass(frozen=True)
class Fitted:
    """A method trained on one split: what predicts, and how (on the standardised scale).

    Attributes:
        posterior: a `bnn.Posterior` or a model ``predict_with_uncertainty`` accepts.
        likelihood: the observation model passed to the prediction (``None``: the posterior's
            own).
        num_samples: function samples of a prediction (``None``: the library's default).
        rng: randomness of predictions (``None``: the posterior needs none).
        dtype: inputs are cast to it (a GP fitted in float64); ``None``: kept.
        extras: what the method reports beside the metrics (the stack's weights).
    """

    posterior: Any
    likelihood: Likelihood | None = None
    num_samples: int | None = None
    rng: RNG | None = None
    dtype: torch.dtype | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    def predict(self, x: Tensor) -> RegressionPrediction:
        """The predictive at ``x`` ``[N, d]``."""
        options: dict[str, Any] = {}
        if self.likelihood is not None:
            options["likelihood"] = self.likelihood
        if self.num_samples is not None:
            options["num_samples"] = self.num_samples
        if self.rng is not None:
            options["rng"] = self.rng
        inputs = x if self.dtype is None else x.to(self.dtype)
        prediction = predict_with_uncertainty(self.posterior, inputs, **options)
        assert isinstance(prediction, RegressionPrediction)
        return prediction


def validated_noise(
    model: nn.Module | Posterior,
    learned: Gaussian,
    validation: Validation | None,
    defaults: Defaults,
    rng: RNG,
) -> Gaussian:
    """The observation noise std that maximises the validation predictive log-likelihood.

    Searched over multiples 2^[-1, 2] of the std learned on the training part, which tends to
    be too small (the network fits its own training residuals); Gal & Ghahramani (2016) chose
    the noise precision τ on validation data for the same reason. Without validation data the
    learned std is kept.
    """
    if validation is None:
        return learned
    x_val, y_val = validation.x, validation.y
    functions = predict_with_uncertainty(
        model, x_val, num_samples=defaults.num_samples, rng=rng
    ).samples  # [S, N_val, 1]
    stds = float(learned.std.detach()) * 2.0 ** torch.linspace(-1.0, 2.0, 31, device=y_val.device)
    z = (y_val - functions).unsqueeze(0) / stds.view(-1, 1, 1, 1)  # [G, S, N_val, 1]
    log_density = -0.5 * z**2 - torch.log(stds).view(-1, 1, 1, 1) - 0.5 * math.log(2 * math.pi)
    mixture = torch.logsumexp(log_density, dim=1) - math.log(functions.shape[0])
    best = int(mixture.mean(dim=(1, 2)).argmax())
    return Gaussian(float(stds[best]))
