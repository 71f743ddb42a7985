"""Regression observation models and the Gaussian-mixture prediction they make.

A regression prediction is the mixture ``p(y | x) = 1/S Σ_s N(y; loc_s(x), scale_s(x)²)``: each
function sample contributes a Gaussian (``scale_s = 0`` when there is no observation noise).
Its variance splits by the law of total variance into

* ``epistemic = Var_s[loc_s]`` — disagreement between functions (model uncertainty), and
* ``aleatoric = E_s[scale_s²]`` — noise the model expects in the data.

=========================== ============================ ================================
likelihood                  model output                 target ``y``
=========================== ============================ ================================
``Gaussian(std)``           mean ``[N, D]`` or ``[N]``   float, same shape
``Gaussian(learn_std=True)`` mean; ``std`` is learned    float, same shape
``HeteroscedasticGaussian`` ``[N, 2D]``: mean, raw std   float ``[N, D]``
``MixtureDensity(K)``       ``[N, 3K]``                  float ``[N]``
=========================== ============================ ================================

``[N, 1]`` outputs accept ``[N]`` targets (they are reshaped); anything else that does not
match raises an error instead of broadcasting silently. All tensors are ``[S, N, ...]`` for
per-sample values and ``[N, ...]`` for summaries.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bnn.likelihoods._base import (
    Likelihood,
    _check_finite_targets,
    _per_datum,
    align_targets,
    check_finite_samples,
)
from bnn.likelihoods.regression_prediction import RegressionPrediction

__all__ = [
    "Gaussian",
    "HeteroscedasticGaussian",
    "MixtureDensity",
    "RegressionPrediction",
    "require_one_std",
]


class Gaussian(Likelihood):
    """Homoscedastic Gaussian ``N(y; f(x), std²)``, fixed or learned.

    Args:
        std: observation noise std (> 0), one number for every output, or one per output
            dimension (a sequence of ``D`` numbers for outputs ``[..., D]``, e.g. the noises a
            GP learned for ``D`` independent outputs); the initial value when learned.
        learn_std: learn ``std`` (parameterised by its logarithm; one value, or one per
            output when ``std`` is a sequence).

    Example:
        >>> bnn.Gaussian(0.1)                 # one noise std for every output
        >>> bnn.Gaussian([0.1, 0.5])          # outputs [..., 2] with their own noise
    """

    def __init__(self, std: float | Sequence[float] = 1.0, *, learn_std: bool = False) -> None:
        super().__init__()
        log_std = _log_std(std)
        if learn_std:
            self.log_std = nn.Parameter(log_std)
        else:
            self.register_buffer("log_std", log_std)
        self.learn_std = learn_std

    @property
    def std(self) -> Tensor:
        return self.log_std.exp()

    def check_targets(self, output: Tensor, y: Tensor) -> Tensor:
        self._check_outputs(output)
        y = align_targets(y, output.shape, "model output")
        _check_finite_targets(y)
        return y

    def _check_outputs(self, output: Tensor) -> None:
        """One std per output dimension needs outputs ``[..., D]`` with the same ``D``."""
        if self.log_std.dim() and (output.dim() == 0 or output.shape[-1] != len(self.log_std)):
            raise ValueError(
                f"this Gaussian has {len(self.log_std)} noise stds (one per output) but the "
                f"outputs have shape {tuple(output.shape)}; their last dimension must be "
                f"{len(self.log_std)}."
            )

    def log_density(self, output: Tensor, y: Tensor) -> Tensor:
        std = self.std.to(output)
        log_density = (
            -0.5 * ((y - output) / std) ** 2 - torch.log(std) - 0.5 * math.log(2 * math.pi)
        )
        return _per_datum(log_density)

    def predict(self, samples: Tensor) -> RegressionPrediction:
        check_finite_samples(samples)
        self._check_outputs(samples)
        scale = self.std.detach().to(samples).expand_as(samples)
        return RegressionPrediction(samples=samples, loc=samples, scale=scale)

    def extra_repr(self) -> str:
        stds = self.std.detach()
        shown = f"{float(stds):.4g}" if not stds.dim() else f"{[round(float(v), 4) for v in stds]}"
        return f"std={shown}, learn_std={self.learn_std}"


def require_one_std(likelihood: object, method: str) -> None:
    """Refuse a `Gaussian` with one std per output where ``method`` models a single noise.

    Raises:
        ValueError: naming the method and what to pass.
    """
    if isinstance(likelihood, Gaussian) and likelihood.log_std.dim():
        raise ValueError(
            f"{method} models one noise std for every output, got {likelihood!r}; pass "
            "bnn.Gaussian(std). One std per output works with fit, svi, the samplers, "
            "ensembles, boost and a GP with several outputs."
        )


def _log_std(std: object) -> Tensor:
    """``log std`` as a 0-d tensor (a number) or ``[D]`` (a sequence of ``D`` numbers)."""
    if isinstance(std, Tensor) and std.dim() <= 1:
        std = std.tolist()
    if isinstance(std, Sequence) and not isinstance(std, str):
        values = list(std)
        if not values or not all(_finite_number(v) for v in values):
            raise TypeError(
                f"std must be a finite number or a non-empty sequence of them, got {std!r}."
            )
        if min(values) <= 0:
            raise ValueError(f"every std must be positive, got {values}.")
        return torch.tensor([math.log(v) for v in values])
    if not _finite_number(std):
        raise TypeError(f"std must be a finite number, got {std!r}.")
    assert isinstance(std, int | float)
    if std <= 0:
        raise ValueError(f"std must be positive, got {std}.")
    return torch.tensor(math.log(std))


def _finite_number(value: object) -> bool:
    return not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)


class HeteroscedasticGaussian(Likelihood):
    """Input-dependent Gaussian noise: the model outputs a mean and a raw std per dimension.

    The last output dimension ``2D`` splits into mean ``[..., :D]`` and
    ``std = softplus(raw) + min_std`` ``[..., D:]`` (Nix & Weigend 1994; Kendall & Gal 2017).

    Training with the plain Gaussian NLL lets a network explain hard points by a large variance
    instead of fitting their mean. ``beta > 0`` trains with the β-NLL of Seitzer et al. (2022,
    "On the Pitfalls of Heteroscedastic Uncertainty Estimation with Probabilistic Neural
    Networks"): each datum's log-density is weighted by ``stopgrad(std^(2β))`` in training mode
    (``β = 0.5`` is their recommended compromise, ``β = 1`` gives the mean the MSE gradient).
    Only ``training_log_prob`` (what ``bnn.fit`` maximises) is weighted; the density
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
        return self._checked_targets(mean, y)

    def log_density(self, output: Tensor, y: Tensor) -> Tensor:
        return _per_datum(_gaussian_log_density(*self.split(output), y))

    def training_log_prob(self, output: Tensor, y: Tensor) -> Tensor:
        """β-NLL: each log-density term weighted by ``stopgrad(std^(2β))`` (plain for β = 0)."""
        mean, std = self.split(output)  # split once: this runs at every training step
        return self._beta_weighted(mean, std, self._checked_targets(mean, y))

    def training_log_density(self, output: Tensor, y: Tensor) -> Tensor:
        return self._beta_weighted(*self.split(output), y)

    def _beta_weighted(self, mean: Tensor, std: Tensor, y: Tensor) -> Tensor:
        elementwise = _gaussian_log_density(mean, std, y)
        if self.beta > 0:
            elementwise = elementwise * std.detach() ** (2 * self.beta)
        return _per_datum(elementwise)

    @staticmethod
    def _checked_targets(mean: Tensor, y: Tensor) -> Tensor:
        y = align_targets(y, mean.shape, "predicted mean")
        _check_finite_targets(y)
        return y

    def predict(self, samples: Tensor) -> RegressionPrediction:
        check_finite_samples(samples)
        mean, std = self.split(samples)
        return RegressionPrediction(samples=samples, loc=mean, scale=std)


def _gaussian_log_density(mean: Tensor, std: Tensor, y: Tensor) -> Tensor:
    """``log N(y; mean, std²)`` element by element."""
    return -0.5 * ((y - mean) / std) ** 2 - torch.log(std) - 0.5 * math.log(2 * math.pi)


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
        check_finite_samples(samples)
        log_weights, means, stds = self.split(samples)
        s, k = samples.shape[0], self.num_components

        def components(t: Tensor) -> Tensor:  # [S, N, K] -> [S·K, N, 1]
            return t.movedim(-1, 1).reshape(s * k, *t.shape[1:-1], 1)

        weights = components(log_weights.exp()) / s
        return RegressionPrediction(
            samples=samples, loc=components(means), scale=components(stds), weights=weights
        )
