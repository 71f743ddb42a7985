"""ArviZ bridge: every posterior as an ArviZ object, and convergence summaries.

This is the only module that imports ArviZ. It hides the difference between ArviZ 0.2x
(``InferenceData``, Python ≤ 3.11) and ArviZ ≥ 1.0 (``DataTree``, Python ≥ 3.12): both get the
same groups and dims.

Groups written by ``to_arviz``:

* ``posterior`` — parameter draws ``(chain, draw, *shape)`` named as in
  ``bnn.nn.layers.weight_space`` (for a `bnn.posterior.ParameterPosterior`), and ``f``
  (function values at ``x``) when ``x`` is given;
* ``posterior_predictive`` — ``y`` drawn from the predictive, one per function sample;
* ``log_likelihood`` — pointwise ``log p(y_i | f_s)``, one term per element of ``y`` with the
  dims ``y`` has in ``posterior_predictive`` and ``observed_data`` (for ``az.loo``; with
  several outputs per input, LOO leaves out one element at a time);
* ``observed_data`` — ``y``;
* ``sample_stats`` — NUTS/HMC statistics (``diverging``, ``step_size``, ``tree_depth``, ...),
  from the posterior's draws or from the method's `History`.

Variational, MC-dropout and ensemble draws are independent, not Markov chains: they are
stored as one chain and the object's attribute ``bnn_is_mcmc = 0`` says that R-hat does not
apply (``summary`` then reports R-hat as NaN).
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import torch
from torch import Tensor

from bnn.infer.history import History
from bnn.likelihoods import (
    ClassificationPrediction,
    Likelihood,
    Prediction,
    RegressionPrediction,
)
from bnn.posterior.model import DEFAULT_DRAWS, as_posterior
from bnn.posterior.protocol import CarriesLikelihood, Draws, ParameterPosterior
from bnn.random.default import RNGLike, resolve_rng

__all__ = ["arviz_major_version", "arviz_module", "is_arviz", "loo", "to_arviz"]


def arviz_module() -> Any:
    """The installed ArviZ, imported without its 1.x refactor announcement."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="ArviZ is undergoing", category=FutureWarning)
        import arviz

    return arviz


def arviz_major_version() -> int:
    """Major version of the installed ArviZ (0 or 1)."""
    return int(str(arviz_module().__version__).split(".")[0])


# ------------------------------------------------------------------------------ conversion
def to_arviz(
    posterior: object,
    *,
    x: Tensor | None = None,
    observed: Tensor | None = None,
    likelihood: Likelihood | None = None,
    prediction: Prediction | None = None,
    num_samples: int | None = None,
    history: History | None = None,
    rng: RNGLike = None,
) -> Any:
    """Convert a posterior (and optionally its predictions) to an ArviZ object.

    Args:
        posterior: any `bnn.Posterior` (what a ``bnn.infer`` method returns), or a model with
            Bayesian layers or ``MCDropout``.
        x: inputs ``[N, ...]``: adds the function values ``f`` and, with a likelihood or a
            prediction, the predictive groups.
        observed: targets ``[N, ...]`` for ``observed_data`` and ``log_likelihood``.
        likelihood: observation model turning function samples into a predictive (default:
            the one the posterior carries, if any).
        prediction: a prediction made earlier (its samples must be the posterior's draws in
            order, e.g. ``predict_with_uncertainty(sample_set, x, num_samples=len)``).
        num_samples: draws for generative posteriors (``None``: 100); a `SampleSet` uses all of
            its draws.
        history: the method's `History`; its ``sample_stats`` fill the ``sample_stats``
            group when the draws bring none.
        rng: randomness for draws and posterior-predictive sampling.

    Returns:
        ``arviz.InferenceData`` (ArviZ 0.2x) or ``xarray.DataTree`` (ArviZ ≥ 1).

    Raises:
        ValueError: an empty posterior, ``observed`` not matching the prediction, NaN values.
    """
    generator = resolve_rng(rng)
    draws = _draws(posterior, x, num_samples, generator)
    if likelihood is None and isinstance(posterior, CarriesLikelihood):
        likelihood = posterior.predictive_likelihood
    if prediction is None and draws.functions is not None and likelihood is not None:
        prediction = likelihood.predict(draws.functions.flatten(0, 1))
    groups: dict[str, dict[str, np.ndarray]] = {"posterior": {}}
    dims: dict[str, list[str]] = {}
    chains, length = _chain_shape(draws)
    for name, value in draws.parameters.items():
        groups["posterior"][name] = _numpy(value)
        dims[name] = [f"{name}_dim_{i}" for i in range(value.dim() - 2)]
    if draws.functions is not None:
        groups["posterior"]["f"] = _numpy(draws.functions)
        dims["f"] = ["obs_id", *[f"f_dim_{i}" for i in range(draws.functions.dim() - 3)]]
    if not groups["posterior"]:
        raise ValueError("nothing to convert: the posterior has no parameters and no x was given.")
    if isinstance(prediction, RegressionPrediction) and prediction.weights is not None:
        raise ValueError(
            "mixture-density predictions have several weighted components per draw; convert "
            "the posterior without them (drop prediction/likelihood) or use a Gaussian head."
        )
    if prediction is not None:
        if prediction.num_samples != chains * length:
            raise ValueError(
                f"prediction has {prediction.num_samples} samples but the posterior has "
                f"{chains}×{length} draws; predict with num_samples equal to all draws."
            )
        with generator.stream("ppc"):
            replicated = _replicate(prediction)
        groups["posterior_predictive"] = {
            "y": _numpy(replicated.reshape(chains, length, *replicated.shape[1:]))
        }
        dims["y"] = ["obs_id", *[f"y_dim_{i}" for i in range(replicated.dim() - 2)]]
    if observed is not None:
        observed = _check_observed(observed, prediction)
        groups["observed_data"] = {"y": observed.detach().cpu().numpy()}
        if prediction is not None:
            pointwise = _pointwise_log_likelihood(prediction, observed)
            groups["log_likelihood"] = {
                "y": _numpy(pointwise.reshape(chains, length, *observed.shape))
            }
    sample_stats = draws.sample_stats or (history.sample_stats if history is not None else {})
    if sample_stats:
        groups["sample_stats"] = {k: _numpy(v) for k, v in sample_stats.items()}
    return _from_dict(groups, dims, is_mcmc=draws.is_mcmc)


def _draws(posterior: object, x: Tensor | None, num_samples: int | None, rng: RNGLike) -> Draws:
    """Weight draws (and ``f`` at ``x``) from a parameter posterior; ``f`` alone otherwise."""
    if num_samples is not None and (
        isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1
    ):
        raise ValueError(f"num_samples must be a positive int, got {num_samples!r}.")
    resolved = as_posterior(posterior)
    if isinstance(resolved, ParameterPosterior):
        return resolved.draws(num_samples, x=x, rng=rng)
    functions = None
    if x is not None:
        count = DEFAULT_DRAWS if num_samples is None else num_samples
        with torch.no_grad():
            functions = resolved.sample_functions(x, count, rng=rng).unsqueeze(0)
    return Draws(parameters={}, functions=functions)


def _chain_shape(draws: Draws) -> tuple[int, int]:
    reference = (
        draws.functions
        if draws.functions is not None
        else next(iter(draws.parameters.values()), None)
    )
    if reference is None:
        raise ValueError("the posterior is empty: no parameter draws and no function values.")
    return int(reference.shape[0]), int(reference.shape[1])


def _numpy(value: Tensor) -> np.ndarray:
    array = value.detach().cpu()
    if array.is_floating_point():
        if not bool(torch.isfinite(array).all()):
            raise ValueError("draws contain NaN or inf; check the sampler's output.")
        array = array.to(torch.float64)
    return array.numpy()


def _replicate(prediction: Prediction) -> Tensor:
    if isinstance(prediction, RegressionPrediction):
        scale = prediction.scale.expand_as(prediction.loc)
        return prediction.loc + scale * torch.randn_like(prediction.loc)
    if isinstance(prediction, ClassificationPrediction):
        flat = prediction.class_probs.reshape(-1, prediction.class_probs.shape[-1])
        labels = torch.multinomial(flat, 1).reshape(prediction.class_probs.shape[:-1])
        return labels
    raise TypeError(f"cannot draw replicated data from {type(prediction).__name__}.")


def _check_observed(observed: Tensor, prediction: Prediction | None) -> Tensor:
    if not isinstance(observed, Tensor):
        raise TypeError(f"observed must be a torch.Tensor, got {type(observed).__name__}.")
    if observed.is_floating_point() and not bool(torch.isfinite(observed).all()):
        raise ValueError("observed contains NaN or inf.")
    if prediction is None:
        return observed
    if isinstance(prediction, RegressionPrediction):
        expected = prediction.loc.shape[1:]
    elif isinstance(prediction, ClassificationPrediction):
        expected = prediction.class_probs.shape[1:-1]
    else:
        raise TypeError(f"unsupported prediction type {type(prediction).__name__}.")
    if observed.shape != expected:
        if len(expected) >= 1 and expected[-1] == 1 and observed.shape == expected[:-1]:
            return observed.unsqueeze(-1)
        raise ValueError(
            f"observed has shape {tuple(observed.shape)} but the prediction is {tuple(expected)} "
            "per sample; pass the targets of the same inputs."
        )
    return observed


def _pointwise_log_likelihood(prediction: Prediction, observed: Tensor) -> Tensor:
    if isinstance(prediction, RegressionPrediction):
        scale = prediction.scale.expand_as(prediction.loc)
        if not bool((scale > 0).all()):
            raise ValueError("log_likelihood needs observation noise: pass a likelihood.")
        # one term per observed element, with the dims of y in every group
        return (
            -0.5 * ((observed - prediction.loc) / scale) ** 2
            - torch.log(scale)
            - 0.5 * math.log(2 * math.pi)
        )
    assert isinstance(prediction, ClassificationPrediction)
    index = (
        observed.long()
        .unsqueeze(0)
        .unsqueeze(-1)
        .expand(prediction.num_samples, *observed.shape, 1)
    )
    return torch.log(prediction.class_probs.gather(-1, index).squeeze(-1).clamp_min(1e-45))


def _from_dict(
    groups: dict[str, dict[str, np.ndarray]], dims: dict[str, list[str]], *, is_mcmc: bool
) -> Any:
    az = arviz_module()
    attrs = {"inference_library": "bnn", "bnn_is_mcmc": int(is_mcmc)}
    if arviz_major_version() >= 1:
        tree = az.from_dict(groups, dims=dims)
        for child in tree.children.values():
            child.attrs = {**child.attrs, **attrs}
        return tree
    data = az.from_dict(**groups, dims=dims)
    for name in data.groups():
        getattr(data, name).attrs.update(attrs)
    return data


def is_arviz(obj: object) -> bool:
    """Whether ``obj`` is an ArviZ object (``InferenceData`` or ``DataTree``)."""
    return type(obj).__name__ in ("InferenceData", "DataTree")


def loo(data: Any) -> Any:
    """``arviz.loo`` (PSIS-LOO-CV) on a converted object with a ``log_likelihood`` group."""
    return arviz_module().loo(data)
