"""``predict_with_uncertainty``: one entry point for every posterior."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from bnn.likelihoods import (
    Likelihood,
    Prediction,
    RegressionPrediction,
    same_observation_model,
)
from bnn.posterior.closed_form import ClosedFormPredictive
from bnn.posterior.marginal import MarginalPredictive
from bnn.posterior.model import as_posterior
from bnn.posterior.protocol import (
    CarriesLikelihood,
    Posterior,
    check_finite_batch,
    check_memory_budget,
)
from bnn.random import GLOBAL_STATE_LOCK
from bnn.random.default import RNGLike, resolve_rng

__all__ = ["observation_model", "predict_with_uncertainty"]


def predict_with_uncertainty(
    model_or_posterior: object,
    x: Tensor,
    *,
    num_samples: int = 100,
    likelihood: Likelihood | None = None,
    rng: RNGLike = None,
    batch_size: int | None = None,
    memory_budget: int | None = None,
    joint: bool = True,
) -> Prediction:
    """Predictive distribution at ``x`` from ``num_samples`` function samples.

    Args:
        model_or_posterior: a model with Bayesian layers, an ``MCDropout``, or any `Posterior`
            (what a ``bnn.infer`` method returns).
        x: inputs ``[N, ...]`` on the model's device and dtype.
        num_samples: function samples ``S`` (≥ 1).
        likelihood: the observation model; it decides how samples aggregate. ``None``: the
            posterior's own (``predictive_likelihood``) if it carries one, else outputs are
            noise-free regression means (only epistemic uncertainty).
        rng: randomness (stream ``"predict"``); an int seed makes the call reproducible.
        batch_size: split ``x`` into batches of this many inputs (each batch draws its own
            function samples: per-input marginals are exact; for samples coherent across all
            inputs, leave it ``None`` — samples are already chunked to ``memory_budget``).
        memory_budget: bytes one vectorised chunk of samples may use (``None``: 64 MiB for
            inputs on the CPU, 1 GiB on a GPU), passed to ``sample_functions``.
        joint: ``True``: function samples (one weight draw shared by all inputs). ``False``
            (for a model with Bayesian layers and/or MC dropout): samples of each input's
            predictive with independent noise per input, by local reparameterisation
            (`bnn.posterior.MarginalPredictive`) — the same per-input marginals, no joint
            samples across inputs, many fewer random draws: the fast choice for small batches.

    A posterior that predicts in closed form (`bnn.posterior.closed_form.ClosedFormPredictive`,
    e.g. a Laplace posterior with ``predictive="glm"``) hands over its prediction directly;
    ``batch_size`` does not apply to it (its per-input marginals need no split).

    Returns:
        ``RegressionPrediction`` (``mean``, ``std``, ``epistemic``, ``aleatoric``,
        ``interval(level)``, ``samples`` ``[S, N, ...]``) or ``ClassificationPrediction``
        (``probs``, ``entropy``, ``expected_entropy``, ``mutual_information``).

    Example:
        >>> pred = bnn.predict_with_uncertainty(model, x, likelihood=bnn.Gaussian(0.1), rng=0)
        >>> lower, upper = pred.interval(0.95)
    """
    posterior = _posterior(model_or_posterior, joint)
    check_finite_batch(x, num_samples)  # device and dtype: checked by the posterior
    budget = check_memory_budget(memory_budget, x.device)
    if likelihood is not None and not isinstance(likelihood, Likelihood):
        raise TypeError(f"likelihood must be a bnn Likelihood, got {type(likelihood).__name__}.")
    if batch_size is not None and (
        isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1
    ):
        raise ValueError(f"batch_size must be a positive int or None, got {batch_size!r}.")
    likelihood = observation_model(posterior, likelihood)
    generator = resolve_rng(rng)
    if isinstance(posterior, ClosedFormPredictive):  # e.g. Laplace's linearised predictive
        direct = posterior.closed_form_prediction(
            x, likelihood=likelihood, num_samples=num_samples, rng=generator, memory_budget=budget
        )
        if direct is not None:
            return direct
    batches = [x] if batch_size is None else list(torch.split(x, batch_size))
    with torch.no_grad(), GLOBAL_STATE_LOCK:  # one call at a time: see docs/reliability.md
        samples = torch.cat(
            [
                posterior.sample_functions(batch, num_samples, rng=generator, memory_budget=budget)
                for batch in batches
            ],
            dim=1,
        )
    _check_one_output_per_input(x, samples)
    if likelihood is None:
        return RegressionPrediction(
            samples=samples,
            loc=samples,
            scale=torch.zeros((), dtype=samples.dtype, device=samples.device),
        )
    return likelihood.predict(samples)


def _posterior(model_or_posterior: object, joint: object) -> Posterior:
    if not isinstance(joint, bool):
        raise TypeError(f"joint must be True or False, got {joint!r}.")
    if joint:
        return as_posterior(model_or_posterior)
    if not isinstance(model_or_posterior, nn.Module) or isinstance(model_or_posterior, Posterior):
        raise ValueError(
            "joint=False draws per-input samples by local reparameterisation of a model's "
            f"Bayesian layers and dropout; {type(model_or_posterior).__name__} is not such a "
            "model. Pass the network (with Bayesian layers or MCDropout), or joint=True."
        )
    return MarginalPredictive(model_or_posterior)


def observation_model(
    posterior: Posterior, likelihood: Likelihood | None, doing: str = "predict"
) -> Likelihood | None:
    """The caller's likelihood, or the one the posterior carries (the same one passed again
    is no clash); a different one is refused (``doing`` names the call in the message)."""
    carried = posterior.predictive_likelihood if isinstance(posterior, CarriesLikelihood) else None
    if carried is None:
        return likelihood
    if likelihood is None or same_observation_model(likelihood, carried):
        return carried
    raise ValueError(
        f"this {type(posterior).__name__} carries its own observation model ({carried!r}; e.g. "
        "ensemble members that each learned a noise scale, or the likelihood a conformal "
        "predictor was calibrated with), and likelihood= gives another one "
        f"({likelihood!r}); {doing} without likelihood= to use the carried one."
    )


def _check_one_output_per_input(x: Tensor, samples: Tensor) -> None:
    """A 1-d ``x`` must give one output per entry; else the model read it as one input."""
    if x.dim() != 1 or (samples.dim() >= 2 and samples.shape[1] == x.shape[0]):
        return
    raise ValueError(
        f"x of shape {tuple(x.shape)} has no feature dimension, and the model returned "
        f"{tuple(samples.shape[1:])} per sample rather than one output per entry: it read x "
        f"as one input with {x.shape[0]} features. Pass x.unsqueeze(-1) for {x.shape[0]} "
        "scalar inputs, or x.unsqueeze(0) for one input."
    )
