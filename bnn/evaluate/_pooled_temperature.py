"""Pool-then-calibrate temperature scaling (Rahaman & Thiery 2021, "Uncertainty Quantification
and Deep Ensembles"): one temperature on the pooled predictive of a mixture.

`temperature_scale` divides each function sample's logits by ``T`` and then averages the
softmaxes (calibrate, then pool). Averaging several confident members makes a predictive
that is less confident than each of them, so a deep ensemble, MultiSWAG or MC dropout is often
under-confident *as a mixture* while its members are not; a temperature on the members cannot
undo what the averaging does. Pool-then-calibrate tempers the mixture itself::

    p̃(y | x) ∝ p̄(y | x)^{1/T},   p̄ = (1/S) Σ_s p_s      (a sigmoid of logit(p̄)/T for Bernoulli)

``T`` minimises the calibration-set NLL of ``p̃``, a convex problem in ``1/T`` (a one-feature
multinomial logistic regression on ``log p̄``). With one function sample (a point estimate) the
two orders are the same model.

What is given up: the tempered predictive is one categorical distribution, not a mixture, so
its epistemic part (mutual information) is 0; ``sample_functions`` returns ``S`` copies of its
logits. Score out-of-distribution inputs by the predictive entropy or max probability then.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from bnn.evaluate._conformal import inner_prediction
from bnn.evaluate._conformal_scores import check_calibration_pair
from bnn.evaluate._scaling import (
    ScalingWrapper,
    check_temperature,
    classification_likelihood,
    minimise,
)
from bnn.likelihoods import (
    Bernoulli,
    Categorical,
    ClassificationPrediction,
    Likelihood,
    class_indices,
)
from bnn.posterior.model import as_posterior
from bnn.posterior.protocol import Posterior, check_memory_budget
from bnn.random.default import RNGLike, resolve_rng
from bnn.random.rng import RNG

__all__ = ["PooledTemperatureScaled", "pooled_temperature_scale"]

_LOG_TEMPERATURE_BOUND = math.log(1e4)  # the fitted temperature lies in [1e-4, 1e4]


class PooledTemperatureScaled(ScalingWrapper):
    """A classifier posterior whose pooled predictive is tempered: ``p̃ ∝ p̄^{1/T}``.

    Made by `pooled_temperature_scale`. ``predict_with_uncertainty`` draws the wrapped
    posterior's predictive (its closed form when it has one, e.g. Laplace's probit), averages
    its ``S`` samples' class probabilities and tempers the average; the prediction has one
    sample (``class_probs`` ``[1, N, K]``). The arg-max, hence accuracy, is the pooled one's.

    Args:
        posterior: any `bnn.Posterior` whose outputs are logits.
        temperature: ``T > 0`` (``< 1`` sharpens an under-confident mixture).
        likelihood: ``bnn.Categorical()`` or ``bnn.Bernoulli()``, the model of its outputs.
    """

    def __init__(self, posterior: Posterior, temperature: float, likelihood: Likelihood) -> None:
        if not isinstance(likelihood, Categorical | Bernoulli):
            raise TypeError(
                "pooled temperature scaling tempers class probabilities: pass bnn.Categorical() "
                f"or bnn.Bernoulli(), got {type(likelihood).__name__}."
            )
        super().__init__(posterior, likelihood)
        self.temperature = check_temperature(temperature)
        self.likelihood: Likelihood = likelihood

    def closed_form_prediction(
        self,
        x: Tensor,
        *,
        likelihood: Likelihood | None,  # noqa: ARG002 (resolved to self.likelihood by the caller)
        num_samples: int,
        rng: RNG,
        memory_budget: int,
    ) -> ClassificationPrediction:
        """The tempered pooled predictive at ``x``: ``class_probs`` ``[1, N, K]``."""
        pooled = _pooled_log_probs(
            self.posterior, x, self.likelihood, num_samples, rng, memory_budget
        )
        return _prediction(pooled / self.temperature, self.likelihood)

    def sample_functions(
        self,
        x: Tensor,
        num_samples: int,
        *,
        rng: RNGLike = None,
        memory_budget: int | None = None,
    ) -> Tensor:
        """``S`` copies of the tempered predictive's logits ``[S, N, K]`` (``[S, N]`` for a
        Bernoulli logit)."""
        budget = check_memory_budget(memory_budget, x.device)
        prediction = self.closed_form_prediction(
            x,
            likelihood=self.likelihood,
            num_samples=num_samples,
            rng=resolve_rng(rng),
            memory_budget=budget,
        )
        return prediction.samples.expand(num_samples, *prediction.samples.shape[1:]).contiguous()


def pooled_temperature_scale(
    posterior: Posterior,
    x_cal: Tensor,
    y_cal: Tensor,
    *,
    likelihood: Likelihood | None = None,
    num_samples: int = 100,
    rng: RNGLike = None,
) -> PooledTemperatureScaled:
    """Fit one temperature on a calibration set to the pooled predictive; wrap the posterior.

    Minimises ``NLL(T) = −1/n Σ_i log softmax(log p̄(x_i) / T)[y_i]`` over ``log T`` by L-BFGS
    in float64, with ``p̄`` the posterior's predictive class probabilities (``S`` samples drawn
    once, or its closed form). Prefer it to `temperature_scale` for mixtures (deep ensembles,
    MultiSWAG, MC dropout) whose averaged predictive is under-confident; the module docstring
    says what it gives up.

    Args:
        posterior: any `bnn.Posterior` (or a model) whose outputs are logits ``[N, K]`` (or
            one logit per input for a Bernoulli likelihood).
        x_cal: calibration inputs ``[n, ...]``, not used in training.
        y_cal: class indices ``[n]`` (0/1 for a Bernoulli likelihood).
        likelihood: ``bnn.Categorical()`` or ``bnn.Bernoulli()`` (``None``: the one the
            posterior carries, else ``Categorical``).
        num_samples: function samples ``S`` of the pooled predictive at ``x_cal``.
        rng: randomness of those samples.

    Returns:
        `PooledTemperatureScaled` with the fitted ``temperature``, and ``nll_before`` /
        ``nll_after``: the calibration-set NLL at ``T = 1`` and at the optimum.

    Example:
        >>> ensemble = bnn.infer.deep_ensemble(make_net, (x, y), likelihood=bnn.Categorical())
        >>> scaled = pooled_temperature_scale(ensemble, x_cal, y_cal, rng=0)
        >>> scaled.temperature                      # < 1: the mixture was under-confident
        >>> bnn.predict_with_uncertainty(scaled, x_test).probs   # [N, K]
    """
    posterior = as_posterior(posterior)  # a model (MCDropout, Bayesian layers) or a posterior
    likelihood = classification_likelihood(posterior, likelihood, "pooled temperature scaling")
    check_calibration_pair(x_cal, y_cal, num_samples)
    budget = check_memory_budget(None, x_cal.device)
    with torch.no_grad():
        pooled = _pooled_log_probs(
            posterior, x_cal, likelihood, num_samples, resolve_rng(rng), budget
        ).to(torch.float64)
    labels = class_indices(y_cal, pooled.shape[0], pooled.shape[1]).to(pooled.device)

    def nll(log_temperature: Tensor) -> Tensor:
        log_probs = (pooled * torch.exp(-log_temperature)).log_softmax(-1)
        return -log_probs.gather(-1, labels[:, None]).mean()

    start = torch.zeros((), dtype=torch.float64, device=pooled.device)
    log_temperature = float(minimise(nll, start, _LOG_TEMPERATURE_BOUND))
    scaled = PooledTemperatureScaled(posterior, math.exp(log_temperature), likelihood)
    scaled.nll_before = float(nll(start))
    scaled.nll_after = float(nll(torch.tensor(log_temperature, dtype=torch.float64)))
    return scaled


def _pooled_log_probs(
    posterior: Posterior,
    x: Tensor,
    likelihood: Likelihood,
    num_samples: int,
    rng: RNG,
    memory_budget: int,
) -> Tensor:
    """``log p̄`` ``[N, K]`` (two classes for a Bernoulli): the log of the posterior's
    predictive class probabilities."""
    prediction = inner_prediction(posterior, x, likelihood, num_samples, rng, memory_budget)
    if not isinstance(prediction, ClassificationPrediction):
        raise TypeError(
            "pooled temperature scaling wraps a classifier; its predictive is a "
            f"{type(prediction).__name__}."
        )
    pooled = prediction.class_probs.mean(0)
    return pooled.clamp_min(torch.finfo(pooled.dtype).tiny).log()


def _prediction(log_probs: Tensor, likelihood: Likelihood) -> ClassificationPrediction:
    """A one-sample prediction of the tempered class probabilities ``softmax(log_probs)``."""
    log_probs = log_probs.log_softmax(-1)
    if isinstance(likelihood, Bernoulli):
        logit = (log_probs[..., 1] - log_probs[..., 0])[None]
        probs = log_probs.exp()[None]
        return ClassificationPrediction(samples=logit, class_probs=probs, binary=True)
    return ClassificationPrediction(samples=log_probs[None], class_probs=log_probs.exp()[None])
