"""``predict_with_uncertainty``: one entry point for every posterior."""

from __future__ import annotations

import copy

import torch
from torch import Tensor

from bnn.default_rng import RNGLike, resolve_rng
from bnn.likelihoods import Likelihood
from bnn.posterior import ModelPosterior, Posterior, as_posterior, check_inputs
from bnn.prediction import Prediction, RegressionPrediction
from bnn.validation import check_int

__all__ = ["predict_with_uncertainty"]


def predict_with_uncertainty(
    model_or_posterior: object,
    x: Tensor,
    *,
    num_samples: int = 100,
    likelihood: Likelihood | None = None,
    rng: RNGLike = None,
    batch_size: int | None = None,
    memory_budget: int | None = None,
) -> Prediction:
    """Predictive distribution at ``x`` from ``num_samples`` function samples.

    Args:
        model_or_posterior: a model with Bayesian layers, an ``MCDropout``, or any `Posterior`.
        x: inputs ``[N, ...]`` on the model's device and dtype.
        num_samples: function samples ``S`` (≥ 1).
        likelihood: the observation model; it decides how samples aggregate. ``None`` treats
            outputs as noise-free regression means (only epistemic uncertainty).
        rng: randomness (stream ``"predict"``); an int seed makes the call reproducible.
        batch_size: split ``x`` into batches of this many inputs (each batch draws its own
            function samples: per-input marginals are exact; for samples coherent across all
            inputs, leave it ``None`` — samples are already chunked to ``memory_budget``).
        memory_budget: bytes one vectorised chunk of samples may use (``None``: the
            posterior's own setting; 64 MiB for models). Applies to models and `SampleSet`s.

    Returns:
        ``RegressionPrediction`` (``mean``, ``std``, ``epistemic``, ``aleatoric``,
        ``interval(level)``, ``samples`` ``[S, N, ...]``) or ``ClassificationPrediction``
        (``probs``, ``entropy``, ``expected_entropy``, ``mutual_information``).

    Example:
        >>> pred = bnn.predict_with_uncertainty(model, x, likelihood=bnn.Gaussian(0.1), rng=0)
        >>> lower, upper = pred.interval(0.95)
    """
    posterior = _with_budget(model_or_posterior, memory_budget)
    reference = posterior.reference_tensor() if isinstance(posterior, ModelPosterior) else None
    check_inputs(x, reference, num_samples)
    if likelihood is not None and not isinstance(likelihood, Likelihood):
        raise TypeError(f"likelihood must be a bnn Likelihood, got {type(likelihood).__name__}.")
    if batch_size is not None and (
        isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1
    ):
        raise ValueError(f"batch_size must be a positive int or None, got {batch_size!r}.")
    _refuse_mismatched_member_likelihoods(posterior, likelihood)
    generator = resolve_rng(rng)
    batches = [x] if batch_size is None else list(torch.split(x, batch_size))
    with torch.no_grad():
        samples = torch.cat(
            [posterior.sample_functions(batch, num_samples, rng=generator) for batch in batches],
            dim=1,
        )
    if likelihood is None:
        return RegressionPrediction(
            samples=samples,
            loc=samples,
            scale=torch.zeros((), dtype=samples.dtype, device=samples.device),
        )
    return likelihood.predict(samples)


def _with_budget(model_or_posterior: object, memory_budget: int | None) -> Posterior:
    """The posterior, chunked to ``memory_budget`` if given (the caller's object untouched)."""
    if memory_budget is None:
        return as_posterior(model_or_posterior)
    check_int("memory_budget", memory_budget)
    if isinstance(model_or_posterior, Posterior) and hasattr(model_or_posterior, "memory_budget"):
        budgeted = copy.copy(model_or_posterior)
        budgeted.memory_budget = memory_budget
        return budgeted
    return as_posterior(model_or_posterior, memory_budget=memory_budget)


def _refuse_mismatched_member_likelihoods(
    posterior: Posterior, likelihood: Likelihood | None
) -> None:
    """An ensemble whose members learned their own noise must not be read with another one."""
    learned = getattr(posterior, "has_learned_likelihoods", None)
    if likelihood is not None and callable(learned) and learned():
        raise ValueError(
            "the ensemble's members learned their own likelihood parameters (e.g. a noise "
            "scale each); use ensemble.predictive(x) for the mixture with each member's own "
            "likelihood, or train heteroscedastic members (bnn.HeteroscedasticGaussian)."
        )
