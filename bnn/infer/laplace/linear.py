"""Closed-form Bayesian linear regression, alone or as the last layer of a network.

With features ``Φ`` ``[N, D]`` (plus a constant column when ``bias=True``), prior
``w ~ N(0, α⁻¹ I)`` and Gaussian noise ``σ``, the posterior is exact (Bishop 2006, §3.3):

    Λ = α I + ΦᵀΦ / σ²,      m = Λ⁻¹ Φᵀ y / σ²,      p(y* | φ*) = N(φ*ᵀ m, φ*ᵀ Λ⁻¹ φ* + σ²)

for each output column (they share ``Λ``). ``NeuralLinear`` puts it on top of a trained
feature extractor ("neural linear", Snoek et al. 2015; Riquelme et al. 2018): cheap, exact
uncertainty in the last layer. Both predict in closed form (`exact_prediction`: the Gaussian
above, no sampling) through ``bnn.predict_with_uncertainty``; ``sample_functions`` draws
joint functions when asked.

Example:
    >>> posterior, _ = bnn.infer.neural_linear(body, (x, y), likelihood=bnn.Gaussian(0.1),
    ...                                        prior_precision=1.0)   # body: x -> features
    >>> bnn.predict_with_uncertainty(posterior, x_test, likelihood=bnn.Gaussian(0.1))
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from bnn._checks import check_finite_parameters, check_positive
from bnn.infer._batches import data_batches
from bnn.infer._indexed_data import model_device
from bnn.infer.history import History
from bnn.likelihoods import Gaussian, Likelihood, Prediction, require_one_std
from bnn.posterior._evaluate import eval_mode
from bnn.posterior._glm import glm_prediction
from bnn.posterior._model_input import check_model_input
from bnn.posterior.protocol import check_inputs
from bnn.random.default import RNGLike, resolve_rng
from bnn.random.rng import RNG

__all__ = ["BayesianLinearRegression", "NeuralLinear", "neural_linear"]


class BayesianLinearRegression:
    """Exact Gaussian posterior of a linear model with known noise; a `bnn.Posterior` on features.

    Args:
        prior_precision: ``α`` (> 0) of the prior ``N(0, α⁻¹ I)``.
        noise_std: observation noise ``σ`` (> 0).
        bias: append a constant feature (its weight is the intercept).
    """

    def __init__(
        self, *, prior_precision: float = 1.0, noise_std: float = 1.0, bias: bool = True
    ) -> None:
        self.prior_precision = check_positive("prior_precision", prior_precision)
        self.noise_std = check_positive("noise_std", noise_std)
        self.bias = bias
        self.mean: Tensor | None = None  # [D', K]
        self.precision_cholesky: Tensor | None = None  # [D', D']

    def _design(self, features: Tensor) -> Tensor:
        if not isinstance(features, Tensor) or features.dim() != 2:
            raise ValueError(
                f"features must be a [N, D] tensor, got {getattr(features, 'shape', features)}."
            )
        if features.device.type == "meta":
            raise ValueError("features are a meta tensor (a shape without values).")
        if not bool(torch.isfinite(features).all()):
            raise ValueError("features contain NaN or inf.")
        design = (
            features
            if not self.bias
            else torch.cat([features, torch.ones_like(features[:, :1])], dim=1)
        )
        if self.mean is not None and design.shape[1] != self.mean.shape[0]:
            raise ValueError(
                f"features have {features.shape[1]} columns but the head was fitted on "
                f"{self.mean.shape[0] - int(self.bias)}; pass inputs like the training inputs."
            )
        if self.mean is not None and design.dtype != self.mean.dtype:
            raise TypeError(
                f"features have dtype {design.dtype} but the head was fitted in "
                f"{self.mean.dtype}; convert the inputs with .to({self.mean.dtype})."
            )
        return design

    def fit(self, features: Tensor, y: Tensor) -> BayesianLinearRegression:
        """Compute the posterior from features ``[N, D]`` and targets ``[N]`` or ``[N, K]``."""
        return self.fit_batches([(features, y)])

    def fit_batches(self, batches: Iterable[tuple[Tensor, Tensor]]) -> BayesianLinearRegression:
        """The posterior from ``(features [B, D], targets [B] or [B, K])`` batches.

        Only the sufficient statistics ``ΦᵀΦ`` ``[D', D']`` and ``Φᵀy`` ``[D', K]`` are
        accumulated, so the rows never need to be in memory at once (one batch equals ``fit``).
        """
        noise_precision = 1.0 / self.noise_std**2
        gram: Tensor | None = None
        cross: Tensor | None = None
        rows = 0
        for features, y in batches:
            design, targets = self._checked_batch(features, y)
            scaled = noise_precision * design.T
            gram = scaled @ design if gram is None else gram + scaled @ design
            cross = scaled @ targets if cross is None else cross + scaled @ targets
            rows += design.shape[0]
        if gram is None or cross is None or rows == 0:
            raise ValueError("no data: features have 0 rows.")
        precision = self.prior_precision * torch.eye(
            gram.shape[0], dtype=gram.dtype, device=gram.device
        )
        self.precision_cholesky = torch.linalg.cholesky(precision + gram)
        self.mean = torch.cholesky_solve(cross, self.precision_cholesky)
        return self

    def _checked_batch(self, features: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        design = self._design(features)
        if not isinstance(y, Tensor) or y.shape[0] != design.shape[0] or y.dim() > 2:
            raise ValueError(
                f"y must be [N] or [N, K] with N = {design.shape[0]}, got {getattr(y, 'shape', y)}."
            )
        if not bool(torch.isfinite(y).all()):
            raise ValueError("y contains NaN or inf.")
        return design, y.reshape(y.shape[0], -1).to(design.dtype)

    def _fitted(self) -> tuple[Tensor, Tensor]:
        if self.mean is None or self.precision_cholesky is None:
            raise RuntimeError("call fit(features, y) before using the posterior.")
        return self.mean, self.precision_cholesky

    @property
    def covariance(self) -> Tensor:
        """Posterior covariance ``Λ⁻¹`` ``[D', D']`` (shared by all outputs)."""
        _, cholesky = self._fitted()
        return torch.cholesky_inverse(cholesky)

    def predict_moments(self, features: Tensor) -> tuple[Tensor, Tensor]:
        """Exact predictive mean ``[N, K]`` and epistemic variance ``φᵀ Λ⁻¹ φ`` ``[N]``."""
        mean, cholesky = self._fitted()
        design = self._design(features)
        solved = torch.linalg.solve_triangular(cholesky, design.T, upper=False)
        return design @ mean, (solved**2).sum(0)

    def closed_form_prediction(
        self,
        x: Tensor,
        *,
        likelihood: Likelihood | None,
        num_samples: int,
        rng: RNG,
        memory_budget: int,  # noqa: ARG002 - one matrix product
    ) -> Prediction | None:
        """The exact predictive at features ``x`` ``[N, D]`` (see `exact_prediction`)."""
        check_inputs(x, None, num_samples)
        return exact_prediction(self, x, likelihood, num_samples, rng)

    def sample_weights(self, num_samples: int, *, rng: RNGLike = None) -> Tensor:
        """Posterior weight draws ``[S, D', K]`` from the ``"predict"`` generator of ``rng``."""
        mean, cholesky = self._fitted()
        generator = resolve_rng(rng).torch_generator("predict", mean.device)
        noise = torch.randn(
            (num_samples, *mean.shape), generator=generator, dtype=mean.dtype, device=mean.device
        )
        # w = m + L⁻ᵀ ε has covariance (L Lᵀ)⁻¹ = Λ⁻¹.
        draws: Tensor = mean + torch.linalg.solve_triangular(cholesky.T, noise, upper=True)
        return draws

    def sample_functions(
        self,
        x: Tensor,
        num_samples: int,
        *,
        rng: RNGLike = None,
        memory_budget: int | None = None,  # noqa: ARG002 - one matrix product
    ) -> Tensor:
        """Function draws at features ``x`` ``[N, D]``: ``[S, N, K]``."""
        check_inputs(x, None, num_samples)
        return self._design(x) @ self.sample_weights(num_samples, rng=rng)


class NeuralLinear:
    """A trained feature extractor with a closed-form Bayesian linear head; a `bnn.Posterior`.

    Args:
        features: ``nn.Module`` mapping inputs to features ``[N, D]`` (kept fixed).
        head: a ``BayesianLinearRegression`` (fitted here by ``fit``).
    """

    def __init__(self, features: nn.Module, head: BayesianLinearRegression) -> None:
        self.features = features
        self.head = head

    def _features(self, x: Tensor) -> Tensor:
        with torch.no_grad(), eval_mode(self.features):
            return self.features(x)  # type: ignore[no-any-return]

    def fit(self, x: Tensor, y: Tensor) -> NeuralLinear:
        """Fit the head on the features of ``x``."""
        self.head.fit(self._features(x), y)
        return self

    def fit_batches(self, batches: Iterable[tuple[Tensor, Tensor]]) -> NeuralLinear:
        """Fit the head on the features of ``(x, y)`` batches, one batch in memory at a time."""
        self.head.fit_batches((self._features(x), y) for x, y in batches)
        return self

    def closed_form_prediction(
        self,
        x: Tensor,
        *,
        likelihood: Likelihood | None,
        num_samples: int,
        rng: RNG,
        memory_budget: int,  # noqa: ARG002 - one matrix product
    ) -> Prediction | None:
        """The exact predictive at inputs ``x`` (see `exact_prediction`)."""
        check_inputs(x, next(self.features.parameters(), None), num_samples)
        return exact_prediction(self.head, self._features(x), likelihood, num_samples, rng)

    def sample_functions(
        self,
        x: Tensor,
        num_samples: int,
        *,
        rng: RNGLike = None,
        memory_budget: int | None = None,  # noqa: ARG002 - one matrix product
    ) -> Tensor:
        """``[S, N, K]`` function draws at inputs ``x``."""
        check_inputs(x, next(self.features.parameters(), None), num_samples)
        return self.head.sample_functions(self._features(x), num_samples, rng=rng)


def exact_prediction(
    head: BayesianLinearRegression,
    features: Tensor,
    likelihood: Likelihood | None,
    num_samples: int,
    rng: RNG,
) -> Prediction | None:
    """``N(φᵀm, φᵀΛ⁻¹φ + σ²)`` per input and output, with ``σ`` the likelihood's std (``None``:
    noise-free); ``epistemic`` is ``φᵀΛ⁻¹φ``. The samples it carries are draws of the linear
    function per input. ``None`` (sample instead) for a non-Gaussian likelihood."""
    if likelihood is not None and not isinstance(likelihood, Gaussian):
        return None
    mean, variance = head.predict_moments(features)  # [N, K], [N]: the outputs share Λ
    covariance = torch.diag_embed(variance.unsqueeze(-1).expand_as(mean))
    generator = rng.torch_generator("predict", features.device)
    return glm_prediction(mean, covariance, likelihood, num_samples, generator, "probit")


def neural_linear(
    model: nn.Module,
    data: tuple[Tensor, Tensor] | Dataset[Any] | DataLoader[Any],
    *,
    likelihood: Likelihood,
    prior_precision: float = 1.0,
    bias: bool = True,
    rng: RNGLike = None,  # noqa: ARG001 - closed form: nothing is drawn
    progress: bool = True,  # noqa: ARG001 - one linear solve: nothing to show
) -> tuple[NeuralLinear, History]:
    """Exact Bayesian linear regression on the features ``model(x)`` (the "neural linear" model).

    With ``model = nn.Identity()`` this is plain Bayesian linear regression on ``x``; with a
    trained network minus its last layer it is the neural-linear model of Snoek et al. (2015).
    The posterior of the last-layer weights is exact (see the module docstring).

    Args:
        model: feature extractor ``x [N, ...] -> features [N, D]`` (kept fixed, eval mode).
        data: ``(x, y)`` with targets ``[N]`` or ``[N, K]``; or a ``Dataset`` of ``(x, y)``
            pairs or a ``DataLoader``, read once in batches: only ``ΦᵀΦ`` and ``Φᵀy`` are
            accumulated, so the data never need to fit in memory.
        likelihood: ``bnn.Gaussian(std)`` with a fixed ``std``: the observation noise ``σ``.
        prior_precision: ``α`` (> 0) of the weight prior ``N(0, α⁻¹ I)``.
        bias: append a constant feature (its weight is the intercept).
        rng: accepted for the common contract; the fit is closed-form.
        progress: accepted for the common contract; the fit is one linear solve.

    Returns:
        ``(NeuralLinear, History)``; the history records ``seconds``.

    Example:
        >>> posterior, _ = bnn.infer.neural_linear(nn.Identity(), (x, y),
        ...                                        likelihood=bnn.Gaussian(0.1))
        >>> posterior.head.covariance      # exact Λ⁻¹
    """
    if not isinstance(likelihood, Gaussian) or likelihood.learn_std:
        raise ValueError(
            "neural_linear needs a Gaussian likelihood with a fixed std (the observation "
            f"noise), e.g. bnn.Gaussian(0.1); got {likelihood!r}."
        )
    require_one_std(likelihood, "neural_linear")
    check_finite_parameters(model, "neural_linear")
    start = time.perf_counter()
    head = BayesianLinearRegression(
        prior_precision=prior_precision, noise_std=float(likelihood.std), bias=bias
    )
    posterior = NeuralLinear(model, head).fit_batches(_checked_batches(model, data))
    return posterior, History("neural_linear", extras={"seconds": time.perf_counter() - start})


def _checked_batches(model: nn.Module, data: object) -> Iterator[tuple[Tensor, Tensor]]:
    """``(x, y)`` batches on the model's device, each checked; the first probes the model."""
    for index, (x, y) in enumerate(data_batches(data, device=model_device(model))):
        if index == 0:
            check_model_input(model, x)
        yield x, y
