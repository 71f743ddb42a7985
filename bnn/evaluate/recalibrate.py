"""Make a model's stated uncertainty honest after training: scaling and conformal prediction.

Two families, both fitted on a held-out **calibration set** ``(x_cal, y_cal)`` that the model
did not train on, both returned as wrapper `bnn.Posterior` objects, so that
``bnn.predict_with_uncertainty``, ``bnn.calibration`` and the metrics use them unchanged:

* **Scaling** (a parametric fix, one number): `temperature_scale` divides a classifier's logits
  by a temperature ``T`` (Guo et al. 2017, "On Calibration of Modern Neural Networks");
  `std_scale` multiplies a regression predictive's spread by one factor ``s`` (Levi et al.
  2022, "Evaluating and Calibrating Uncertainty Prediction in Regression Tasks"). Both minimise
  the calibration-set NLL. Cheap, keep the model's ranking of inputs, but promise nothing.
  `vector_scale` fits a scale and a bias per class (``2K`` parameters; in
  ``bnn.evaluate._vector_scaling``). `isotonic_recalibrate` maps a regression predictive CDF
  through the empirical CDF of the calibration PIT values (Kuleshov et al. 2018; in
  ``bnn.evaluate._isotonic``): a non-parametric fix of every quantile at once.
* **Conformal prediction** (`conformalize`, in ``bnn.evaluate._conformal``): intervals or
  prediction sets with a finite-sample guarantee ``P(y ∈ C(x)) ≥ level`` for exchangeable data,
  whatever the model; `cv_plus` / `jackknife_plus` (in ``bnn.evaluate._cross_conformal``)
  need no held-out set: they use the out-of-fold predictions of a cross-validation;
  `jackknife_plus_after_bootstrap` (in ``bnn.evaluate._bootstrap_conformal``) centres them on
  aggregates of many models trained on resamples, for learners whose fold models disagree.

For a posterior with ``S`` function samples, temperature scaling scales **each sample's
logits** by ``1/T`` and then averages the ``S`` softmaxes (a Bayesian predictive is a mixture
of categorical distributions; dividing the averaged probabilities' logits would be a different
model). Std scaling maps the mixture ``p(y|x)`` to the distribution of ``m + s (Y − m)``
(``m`` its mean): every component's offset from ``m`` and every component's std is multiplied
by ``s``, so the predictive mean stays and the total std becomes ``s·std``.

Example:
    >>> scaled = bnn.evaluate.recalibrate.temperature_scale(
    ...     posterior, x_cal, y_cal, likelihood=bnn.Categorical(), rng=0)
    >>> scaled.temperature                       # > 1: the model was over-confident
    >>> bnn.predict_with_uncertainty(scaled, x_test, likelihood=bnn.Categorical())
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from bnn.evaluate._bootstrap_conformal import jackknife_plus_after_bootstrap
from bnn.evaluate._conformal import (
    ConformalClassificationPrediction,
    ConformalPosterior,
    ConformalRegressionPrediction,
    conformalize,
)
from bnn.evaluate._conformal_scores import (
    check_calibration_pair,
)
from bnn.evaluate._cross_conformal import CrossConformal, cv_plus, jackknife_plus
from bnn.evaluate._glm_temperature import (
    glm_calibration_nll,
    is_glm_classifier,
    scaled_glm_prediction,
)
from bnn.evaluate._isotonic import (
    IsotonicRecalibrated,
    IsotonicRegressionPrediction,
    isotonic_recalibrate,
)
from bnn.evaluate._pooled_temperature import PooledTemperatureScaled, pooled_temperature_scale
from bnn.evaluate._scaling import (
    LogitMap,
    calibration_logits,
    check_temperature,
    minimise_log_factor,
    resolve_likelihood,
)
from bnn.evaluate._std_scaling import StdScaled, std_scale
from bnn.evaluate._vector_scaling import VectorScaled, vector_scale
from bnn.likelihoods import (
    Bernoulli,
    Categorical,
    Likelihood,
    Prediction,
    class_indices,
)
from bnn.posterior.model import as_posterior
from bnn.posterior.protocol import Posterior
from bnn.random.default import RNGLike, resolve_rng
from bnn.random.rng import RNG

__all__ = [
    "ConformalClassificationPrediction",
    "ConformalPosterior",
    "ConformalRegressionPrediction",
    "CrossConformal",
    "IsotonicRecalibrated",
    "IsotonicRegressionPrediction",
    "PooledTemperatureScaled",
    "StdScaled",
    "TemperatureScaled",
    "VectorScaled",
    "conformalize",
    "cv_plus",
    "isotonic_recalibrate",
    "jackknife_plus",
    "jackknife_plus_after_bootstrap",
    "pooled_temperature_scale",
    "std_scale",
    "temperature_scale",
    "vector_scale",
]


class TemperatureScaled(LogitMap):
    """A classifier posterior whose function samples (logits) are divided by ``temperature``.

    Made by `temperature_scale`. ``sample_functions(x, S)`` returns the wrapped posterior's
    samples ``[S, N, K]`` (or ``[S, N]``/``[S, N, 1]`` for a Bernoulli logit) divided by ``T``;
    the arg-max of each sample, hence a point estimate's accuracy, is unchanged.

    Args:
        posterior: any `bnn.Posterior` whose outputs are logits.
        temperature: ``T > 0`` (``> 1`` softens over-confident predictions).
        likelihood: ``bnn.Categorical()`` or ``bnn.Bernoulli()``, carried (``None``: the
            wrapped posterior's own, if any); `temperature_scale` passes the one it fitted with.
    """

    def __init__(
        self, posterior: Posterior, temperature: float, likelihood: Likelihood | None = None
    ) -> None:
        super().__init__(posterior, likelihood)
        self.temperature = check_temperature(temperature)

    def transform(self, logits: Tensor) -> Tensor:
        """Each sample's logits divided by ``T``."""
        return logits / self.temperature

    def closed_form_prediction(
        self,
        x: Tensor,
        *,
        likelihood: Likelihood | None,
        num_samples: int,
        rng: RNG,
        memory_budget: int,
    ) -> Prediction | None:
        """A linearised (GLM) posterior's own predictive of the logits over ``T``; ``None``
        (sample the scaled functions) for any other posterior."""
        if not is_glm_classifier(self.posterior, likelihood):
            return None
        assert likelihood is not None
        return scaled_glm_prediction(
            self.posterior, x, self.temperature, likelihood, num_samples, rng, memory_budget
        )


def temperature_scale(
    posterior: Posterior,
    x_cal: Tensor,
    y_cal: Tensor,
    *,
    likelihood: Likelihood | None = None,
    num_samples: int = 100,
    rng: RNGLike = None,
) -> TemperatureScaled:
    """Fit a temperature ``T`` on a calibration set (Guo et al. 2017); wrap the posterior.

    Minimises ``NLL(T) = −1/n Σ_i log (1/S) Σ_s softmax(z_s(x_i) / T)[y_i]`` over ``log T`` by
    L-BFGS in float64, with the ``S`` logit samples ``z_s`` drawn once (common random numbers).
    With ``S = 1`` (a point estimate) this is the convex problem of Guo et al.

    Args:
        posterior: any `bnn.Posterior` (or a model) whose outputs are logits ``[N, K]`` (or
            one logit per input for a Bernoulli likelihood).
        x_cal: calibration inputs ``[n, ...]``, not used in training.
        y_cal: class indices ``[n]`` (0/1 for a Bernoulli likelihood).
        likelihood: ``bnn.Categorical()`` or ``bnn.Bernoulli()`` (``None``: the one the
            posterior carries, else ``Categorical``; a different one than the posterior
            carries is refused). The scaled posterior carries it.
        num_samples: function samples ``S`` drawn at ``x_cal``.
        rng: randomness of those samples (the posterior's ``"predict"`` stream).

    Returns:
        `TemperatureScaled` with the fitted ``temperature`` (its ``nll_before``/``nll_after``
        record the calibration-set NLL at ``T = 1`` and at the optimum).

    Raises:
        TypeError / ValueError: not a classification likelihood, mismatched or invalid
            targets, an empty calibration set.

    Example:
        >>> scaled = temperature_scale(posterior, x_cal, y_cal, rng=0)
        >>> bnn.predict_with_uncertainty(scaled, x_test, likelihood=bnn.Categorical()).probs
    """
    posterior = as_posterior(posterior)  # a model (MCDropout, Bayesian layers) or a posterior
    chosen = resolve_likelihood(posterior, likelihood, Categorical())
    if is_glm_classifier(posterior, chosen):
        return _glm_temperature_scale(posterior, chosen, x_cal, y_cal, num_samples, rng)
    likelihood, logits = calibration_logits(
        posterior, likelihood, x_cal, y_cal, num_samples, rng, "temperature scaling"
    )
    if isinstance(likelihood, Bernoulli):  # softmax([0, z]) = [1 - σ(z), σ(z)]
        z = logits.reshape(logits.shape[0], logits.shape[1])
        logits = torch.stack([torch.zeros_like(z), z], dim=-1)
    if logits.dim() != 3:
        raise ValueError(
            f"temperature scaling needs logits [S, N, K], got samples of shape "
            f"{tuple(logits.shape)}."
        )
    labels = class_indices(y_cal, logits.shape[1], logits.shape[2]).to(logits.device)
    index = labels.view(1, -1, 1).expand(logits.shape[0], -1, 1)

    def nll(log_temperature: Tensor) -> Tensor:
        log_probs = (logits * torch.exp(-log_temperature)).log_softmax(-1).gather(-1, index)
        log_mixture = torch.logsumexp(log_probs.squeeze(-1), 0) - math.log(logits.shape[0])
        return -log_mixture.mean()

    log_temperature = minimise_log_factor(nll, logits.device)
    scaled = TemperatureScaled(posterior, math.exp(log_temperature), likelihood)
    scaled.nll_before = float(nll(torch.zeros((), dtype=torch.float64, device=logits.device)))
    scaled.nll_after = float(nll(torch.tensor(log_temperature, dtype=torch.float64)))
    return scaled


def _glm_temperature_scale(
    posterior: Posterior,
    likelihood: Likelihood,
    x_cal: Tensor,
    y_cal: Tensor,
    num_samples: int,
    rng: RNGLike,
) -> TemperatureScaled:
    """`temperature_scale` of a linearised (GLM) classifier posterior, fitted on its own
    closed-form predictive (``bnn.evaluate._glm_temperature``)."""
    check_calibration_pair(x_cal, y_cal, num_samples)
    nll = glm_calibration_nll(posterior, x_cal, y_cal, num_samples, resolve_rng(rng))
    device = x_cal.device
    log_temperature = minimise_log_factor(nll, device)
    scaled = TemperatureScaled(posterior, math.exp(log_temperature), likelihood)
    scaled.nll_before = float(nll(torch.zeros((), dtype=torch.float64, device=device)))
    scaled.nll_after = float(nll(torch.tensor(log_temperature, dtype=torch.float64)))
    return scaled
