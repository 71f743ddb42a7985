"""Observation models: how a network output becomes a distribution over targets.

A likelihood does two things: ``log_prob(output, y)`` gives the per-datum log-likelihood used
in training (the ELBO or MAP loss), and ``predict(samples)`` turns ``S`` function samples
``[S, N, ...]`` into a :class:`~bnn.prediction.Prediction` (it owns how samples aggregate).
Likelihoods are ``nn.Module``s, so a learned noise level trains with the network.

=========================== ============================ ================================
likelihood                  model output                 target ``y``
=========================== ============================ ================================
``Gaussian(std)``           mean ``[N, D]`` or ``[N]``   float, same shape
``Gaussian(learn_std=True)`` mean; ``std`` is learned    float, same shape
``HeteroscedasticGaussian`` ``[N, 2D]``: mean, raw std   float ``[N, D]``
``Categorical``             logits ``[N, K]``            int64 class index ``[N]``
``Bernoulli``               logit ``[N]`` or ``[N, 1]``  0/1 float, same shape
=========================== ============================ ================================

``[N, 1]`` outputs accept ``[N]`` targets (they are reshaped); anything else that does not
match raises an error instead of broadcasting silently.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bnn.prediction import ClassificationPrediction, Prediction, RegressionPrediction

__all__ = [
    "Bernoulli",
    "Categorical",
    "Gaussian",
    "HeteroscedasticGaussian",
    "Likelihood",
    "MixtureDensity",
]


class Likelihood(nn.Module):
    """Base class for observation models."""

    def log_prob(self, output: Tensor, y: Tensor) -> Tensor:
        """Per-datum log-likelihood ``[N]`` of targets ``y`` given one model output ``[N, ...]``.

        Validates ``y`` (shape, dtype, finiteness, support) first; see :meth:`log_density` for
        the unchecked version used in inner loops.
        """
        return self.log_density(output, self.check_targets(output, y))

    def check_targets(self, output: Tensor, y: Tensor) -> Tensor:
        """Validate ``y`` against ``output``; return it reshaped to the expected shape."""
        raise NotImplementedError

    def log_density(self, output: Tensor, y: Tensor) -> Tensor:
        """Per-datum log-likelihood ``[N]``, unvalidated (``y`` from :meth:`check_targets`)."""
        raise NotImplementedError

    def training_log_prob(self, output: Tensor, y: Tensor) -> Tensor:
        """The per-datum objective :func:`bnn.fit` maximises (default: :meth:`log_prob`).

        A likelihood may train with a modified objective (e.g. β-NLL) while every density it
        reports — to samplers, metrics and predictions — stays the model's own.
        """
        return self.log_prob(output, y)

    def predict(self, samples: Tensor) -> Prediction:
        """Aggregate function samples ``[S, N, ...]`` into a predictive distribution."""
        raise NotImplementedError


def _match_target(y: Tensor, reference: Tensor, what: str) -> Tensor:
    if not isinstance(y, Tensor):
        raise TypeError(f"targets must be a torch.Tensor, got {type(y).__name__}.")
    if y.shape == reference.shape:
        return y
    if reference.dim() >= 1 and reference.shape[-1] == 1 and y.shape == reference.shape[:-1]:
        return y.unsqueeze(-1)
    raise ValueError(
        f"targets have shape {tuple(y.shape)} but the {what} has shape {tuple(reference.shape)}; "
        "reshape y to match (broadcasting here would be silently wrong)."
    )


def _check_finite_targets(y: Tensor) -> None:
    if y.is_floating_point() and not bool(torch.isfinite(y).all()):
        raise ValueError("targets contain NaN or inf; remove or impute those rows first.")


def _per_datum(values: Tensor) -> Tensor:
    return values.reshape(values.shape[0], -1).sum(-1) if values.dim() > 1 else values


class Gaussian(Likelihood):
    """Homoscedastic Gaussian ``N(y; f(x), std²)``, fixed or learned.

    Args:
        std: observation noise std (> 0); the initial value when learned.
        learn_std: learn ``std`` (one value per output dimension is not needed in practice;
            a single scalar is learned, parameterised by its logarithm).
    """

    def __init__(self, std: float = 1.0, *, learn_std: bool = False) -> None:
        super().__init__()
        if isinstance(std, bool) or not isinstance(std, int | float) or not math.isfinite(std):
            raise TypeError(f"std must be a finite number, got {std!r}.")
        if std <= 0:
            raise ValueError(f"std must be positive, got {std}.")
        log_std = torch.tensor(math.log(std))
        if learn_std:
            self.log_std = nn.Parameter(log_std)
        else:
            self.register_buffer("log_std", log_std)
        self.learn_std = learn_std

    @property
    def std(self) -> Tensor:
        return self.log_std.exp()

    def check_targets(self, output: Tensor, y: Tensor) -> Tensor:
        y = _match_target(y, output, "model output")
        _check_finite_targets(y)
        return y

    def log_density(self, output: Tensor, y: Tensor) -> Tensor:
        std = self.std.to(output)
        log_density = (
            -0.5 * ((y - output) / std) ** 2 - torch.log(std) - 0.5 * math.log(2 * math.pi)
        )
        return _per_datum(log_density)

    def predict(self, samples: Tensor) -> RegressionPrediction:
        scale = self.std.detach().to(samples).expand_as(samples)
        return RegressionPrediction(samples=samples, loc=samples, scale=scale)

    def extra_repr(self) -> str:
        return f"std={float(self.std.detach()):.4g}, learn_std={self.learn_std}"


class HeteroscedasticGaussian(Likelihood):
    """Input-dependent Gaussian noise: the model outputs a mean and a raw std per dimension.

    The last output dimension ``2D`` splits into mean ``[..., :D]`` and
    ``std = softplus(raw) + min_std`` ``[..., D:]`` (Nix & Weigend 1994; Kendall & Gal 2017).

    Training with the plain Gaussian NLL lets a network explain hard points by a large variance
    instead of fitting their mean. ``beta > 0`` trains with the β-NLL of Seitzer et al. (2022,
    "On the Pitfalls of Heteroscedastic Uncertainty Estimation with Probabilistic Neural
    Networks"): each datum's log-density is weighted by ``stopgrad(std^(2β))`` in training mode
    (``β = 0.5`` is their recommended compromise, ``β = 1`` gives the mean the MSE gradient).
    Only :meth:`training_log_prob` (what :func:`bnn.fit` maximises) is weighted; the density
    seen by samplers, metrics and predictions is the plain Gaussian one.

    Args:
        min_std: floor on the std, for numerical stability (> 0).
        beta: β-NLL exponent in ``[0, 1]`` for training (0: the plain NLL).
    """

    def __init__(self, min_std: float = 1e-6, beta: float = 0.0) -> None:
        super().__init__()
        if not isinstance(min_std, int | float) or not min_std > 0:
            raise ValueError(f"min_std must be a positive number, got {min_std!r}.")
        if not isinstance(beta, int | float) or not 0.0 <= beta <= 1.0:
            raise ValueError(f"beta must be a number in [0, 1], got {beta!r}.")
        self.min_std = float(min_std)
        self.beta = float(beta)

    def split(self, output: Tensor) -> tuple[Tensor, Tensor]:
        """``(mean, std)``, each with last dimension ``D``, from an output with last dim ``2D``."""
        if output.dim() < 1 or output.shape[-1] % 2 != 0:
            raise ValueError(
                f"HeteroscedasticGaussian needs an output whose last dimension is 2·D (mean and "
                f"std), got shape {tuple(output.shape)}; give the network 2·D outputs."
            )
        mean, raw = output.chunk(2, dim=-1)
        return mean, F.softplus(raw) + self.min_std

    def check_targets(self, output: Tensor, y: Tensor) -> Tensor:
        mean, _ = self.split(output)
        y = _match_target(y, mean, "predicted mean")
        _check_finite_targets(y)
        return y

    def log_density(self, output: Tensor, y: Tensor) -> Tensor:
        return _per_datum(self._elementwise_log_density(output, y))

    def training_log_prob(self, output: Tensor, y: Tensor) -> Tensor:
        """β-NLL: each log-density term weighted by ``stopgrad(std^(2β))`` (plain for β = 0)."""
        elementwise = self._elementwise_log_density(output, self.check_targets(output, y))
        if self.beta > 0:
            _, std = self.split(output)
            elementwise = elementwise * std.detach() ** (2 * self.beta)
        return _per_datum(elementwise)

    def _elementwise_log_density(self, output: Tensor, y: Tensor) -> Tensor:
        mean, std = self.split(output)
        return -0.5 * ((y - mean) / std) ** 2 - torch.log(std) - 0.5 * math.log(2 * math.pi)

    def predict(self, samples: Tensor) -> RegressionPrediction:
        mean, std = self.split(samples)
        return RegressionPrediction(samples=samples, loc=mean, scale=std)


class MixtureDensity(Likelihood):
    """Mixture density network head (Bishop 1994): ``K`` Gaussians per input, scalar targets.

    The output ``[N, 3K]`` splits into mixture logits ``[..., :K]``, means ``[..., K:2K]`` and
    raw stds ``[..., 2K:]`` (``std = softplus(raw) + min_std``). Over ``S`` function samples the
    predictive is the mixture of all ``S·K`` components with weights ``π_k / S``.

    Args:
        num_components: ``K`` (≥ 1).
        min_std: floor on each component's std (> 0).
    """

    def __init__(self, num_components: int, min_std: float = 1e-6) -> None:
        super().__init__()
        if (
            isinstance(num_components, bool)
            or not isinstance(num_components, int)
            or num_components < 1
        ):
            raise ValueError(f"num_components must be a positive int, got {num_components!r}.")
        if not isinstance(min_std, int | float) or not min_std > 0:
            raise ValueError(f"min_std must be a positive number, got {min_std!r}.")
        self.num_components = num_components
        self.min_std = float(min_std)

    def split(self, output: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(log_weights, means, stds)``, each ``[..., K]``, from an output ``[..., 3K]``."""
        if output.shape[-1] != 3 * self.num_components:
            raise ValueError(
                f"MixtureDensity({self.num_components}) needs outputs with last dimension "
                f"{3 * self.num_components} (logits, means, stds), got {tuple(output.shape)}."
            )
        logits, means, raw = output.chunk(3, dim=-1)
        return logits.log_softmax(-1), means, F.softplus(raw) + self.min_std

    def check_targets(self, output: Tensor, y: Tensor) -> Tensor:
        self.split(output)
        if not isinstance(y, Tensor):
            raise TypeError(f"targets must be a torch.Tensor, got {type(y).__name__}.")
        if y.dim() == 2 and y.shape[1] == 1:
            y = y.squeeze(-1)
        if y.shape != output.shape[:-1]:
            raise ValueError(
                f"MixtureDensity targets must be scalars per datum {tuple(output.shape[:-1])}, got "
                f"{tuple(y.shape)}."
            )
        _check_finite_targets(y)
        return y

    def log_density(self, output: Tensor, y: Tensor) -> Tensor:
        log_weights, means, stds = self.split(output)
        standardised = (y.unsqueeze(-1) - means) / stds
        component = -0.5 * standardised**2 - torch.log(stds) - 0.5 * math.log(2 * math.pi)
        return torch.logsumexp(log_weights + component, dim=-1)

    def predict(self, samples: Tensor) -> RegressionPrediction:
        log_weights, means, stds = self.split(samples)
        s, k = samples.shape[0], self.num_components

        def components(t: Tensor) -> Tensor:  # [S, N, K] -> [S·K, N, 1]
            return t.movedim(-1, 1).reshape(s * k, *t.shape[1:-1], 1)

        weights = components(log_weights.exp()) / s
        return RegressionPrediction(
            samples=samples, loc=components(means), scale=components(stds), weights=weights
        )


class Categorical(Likelihood):
    """Softmax over logits ``[N, K]``; targets are class indices ``[N]``."""

    def check_targets(self, output: Tensor, y: Tensor) -> Tensor:
        if output.dim() != 2:
            raise ValueError(
                f"Categorical needs logits of shape [N, K], got {tuple(output.shape)}."
            )
        if not isinstance(y, Tensor) or y.dtype not in (
            torch.int64,
            torch.int32,
            torch.int16,
            torch.uint8,
        ):
            raise TypeError("Categorical targets must be an integer tensor of class indices.")
        if y.shape != output.shape[:1]:
            raise ValueError(
                f"targets have shape {tuple(y.shape)}, expected [N] = {tuple(output.shape[:1])}."
            )
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= output.shape[-1]):
            raise ValueError(f"class indices must lie in [0, {output.shape[-1] - 1}].")
        return y.long()

    def log_density(self, output: Tensor, y: Tensor) -> Tensor:
        return -F.cross_entropy(output, y, reduction="none")

    def predict(self, samples: Tensor) -> ClassificationPrediction:
        return ClassificationPrediction(samples=samples, class_probs=samples.softmax(-1))


class Bernoulli(Likelihood):
    """Sigmoid of one logit per datum; targets are 0/1 floats of the same shape."""

    def check_targets(self, output: Tensor, y: Tensor) -> Tensor:
        y = _match_target(y, output, "model output")
        _check_finite_targets(y)
        if not bool(((y == 0) | (y == 1)).all()):
            raise ValueError("Bernoulli targets must be 0 or 1.")
        return y.to(output)

    def log_density(self, output: Tensor, y: Tensor) -> Tensor:
        log_density = -F.binary_cross_entropy_with_logits(output, y, reduction="none")
        return _per_datum(log_density)

    def predict(self, samples: Tensor) -> ClassificationPrediction:
        logits = samples.squeeze(-1) if samples.dim() > 2 and samples.shape[-1] == 1 else samples
        positive = torch.sigmoid(logits)
        class_probs = torch.stack([1.0 - positive, positive], dim=-1)
        return ClassificationPrediction(samples=samples, class_probs=class_probs, binary=True)
