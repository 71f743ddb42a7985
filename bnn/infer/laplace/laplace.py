"""The Laplace approximation of a trained network (MacKay 1992; Daxberger et al. 2021).

Around the trained weights ``θ*`` (a MAP estimate under the prior ``N(0, δ⁻¹ I)``) the
posterior of the selected parameters is approximated by ``N(θ*, Λ⁻¹)`` with
``Λ = GGN / σ² + δ I`` (σ² only for a Gaussian likelihood): the generalised Gauss-Newton
curvature (``bnn.infer.laplace._curvature``), dense, diagonal or per-layer Kronecker-factored
(``nn.Linear``, and ``nn.Conv1d`` / ``nn.Conv2d`` by KFAC-expand). The
Laplace estimate of the log marginal likelihood (Immer et al. 2021)

    log p(D | δ, σ) ≈ log p(D | θ*, σ) − ½ [ Σ_j δ_j θ*_j² + log det Λ − Σ_j log δ_j ]

chooses the prior precision (scalar or per layer) and the noise, and is exact for Bayesian
linear regression, where the Laplace posterior is the exact posterior.

Example:
    >>> posterior, _ = bnn.infer.laplace(net, (x, y), likelihood=bnn.Gaussian(0.1),
    ...                                  subset="last_layer", hessian="kron")
    >>> posterior.optimize_prior_precision()           # marginal likelihood
    >>> bnn.predict_with_uncertainty(posterior, x_test)  # GLM predictive, closed form
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Sequence
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset

from bnn._checks import check_finite_parameters
from bnn._progress import progress_bar
from bnn.infer._batches import data_batches
from bnn.infer._indexed_data import model_device
from bnn.infer.history import History
from bnn.infer.laplace._curvature import CurvatureSums, accumulate_curvature
from bnn.infer.laplace._posterior import Hessian, LaplacePosterior
from bnn.infer.laplace._selection import (
    KronLayer,
    check_precision,
    kron_layers,
    layer_groups,
    select_parameters,
    whole_linear_layers,
)
from bnn.likelihoods import Categorical, Gaussian, Likelihood, require_one_std
from bnn.nn.layers import bayesian_modules
from bnn.posterior._glm import check_glm_likelihood
from bnn.posterior._model_input import check_model_input
from bnn.posterior.gaussian import Predictive
from bnn.posterior.protocol import check_memory_budget
from bnn.random.default import RNGLike

__all__ = ["LaplacePosterior", "laplace"]

_HESSIANS = ("full", "kron", "diag")
MAX_FULL_PARAMETERS = 20_000
"""Largest selection ``hessian="full"`` accepts (its precision has ``P²`` entries)."""


def _check_arguments(model: object, likelihood: object, hessian: object) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}.")
    if any(True for _ in bayesian_modules(model)):
        raise ValueError("model has Bayesian layers; laplace needs a plain (MAP-trained) network.")
    if not isinstance(likelihood, Gaussian | Categorical):
        raise ValueError(
            "laplace supports bnn.Gaussian (regression) and bnn.Categorical (classification) "
            f"likelihoods, got {type(likelihood).__name__}; train with one of those."
        )
    if hessian not in _HESSIANS:
        raise ValueError(f"hessian must be one of {_HESSIANS}, got {hessian!r}.")


def laplace(
    model: nn.Module,
    data: tuple[Tensor, Tensor] | Dataset[Any] | DataLoader[Any],
    *,
    likelihood: Likelihood,
    subset: str | Iterable[str | nn.Module] = "last_layer",
    hessian: Hessian = "kron",
    prior_precision: float | Sequence[float] | Tensor = 1.0,
    predictive: Predictive = "glm",
    link: Literal["probit", "mc"] = "probit",
    batch_size: int = 256,
    memory_budget: int | None = None,
    rng: RNGLike = None,  # noqa: ARG001 - deterministic: nothing is drawn in the fit
    progress: bool = True,
) -> tuple[LaplacePosterior, History]:
    """Laplace approximation around the trained weights of ``model``.

    Args:
        model: a trained plain network (its weights are the MAP ``θ*``; left unchanged).
        data: the training data ``(x, y)`` (split into ``batch_size`` batches), a ``Dataset``
            of ``(x, y)`` pairs (read in ``batch_size`` batches) or a ``DataLoader``.
        likelihood: ``bnn.Gaussian(σ)`` (regression; ``σ`` is the initial noise) or
            ``bnn.Categorical()`` (classification): the one the network was trained with.
        subset: ``"last_layer"`` (the last module that owns parameters), ``"all"``, or an
            iterable of module / parameter names or modules.
        hessian: ``"full"`` (exact GGN, ≤ 20,000 parameters), ``"kron"`` (KFAC per
            ``nn.Linear`` layer; per ``nn.Conv1d`` / ``nn.Conv2d`` layer with ``groups=1``
            and ``padding_mode="zeros"`` by KFAC-expand, one datum per output location, see
            ``bnn.infer.laplace._curvature``) or ``"diag"`` (exact diagonal of the GGN, any layer).
        prior_precision: ``δ`` of the prior ``N(0, δ⁻¹ I)``: a scalar or one per layer
            (``posterior.groups``); tune it with ``optimize_prior_precision``.
        predictive: what ``predict_with_uncertainty`` uses: ``"glm"`` (linearised; closed form
            for Gaussian, probit for categorical) or ``"samples"`` (sampled weights).
        link: ``"probit"`` or ``"mc"`` for the categorical GLM predictive.
        batch_size: inputs per curvature batch (a tuple ``data``).
        memory_budget: bytes one chunk of Jacobians may use (``None``: the device default).
        rng: accepted for the common contract; the fit draws nothing (sampling later uses the
            ``rng`` given to ``sample_functions``).
        progress: show a tqdm bar over batches.

    Returns:
        ``(LaplacePosterior, History)``; the history records ``seconds`` and
        ``log_marginal_likelihood``.

    Raises:
        TypeError / ValueError: bad arguments, no parameter matching ``subset``, a layer
            ``"kron"`` cannot factor, non-finite curvature or a singular precision.

    Example:
        >>> posterior, history = bnn.infer.laplace(net, (x, y), likelihood=bnn.Categorical(),
        ...                                        hessian="kron", progress=False)
        >>> history.log_marginal_likelihood
    """
    _check_arguments(model, likelihood, hessian)
    require_one_std(likelihood, "laplace")
    check_finite_parameters(model, "laplace")
    names = select_parameters(model, subset)
    parameters = dict(model.named_parameters())
    shapes = [parameters[n].shape for n in names]
    if hessian == "full" and sum(s.numel() for s in shapes) > MAX_FULL_PARAMETERS:
        raise ValueError(
            f"hessian='full' stores a {sum(s.numel() for s in shapes)}² matrix; select fewer "
            f"parameters (≤ {MAX_FULL_PARAMETERS}, e.g. subset='last_layer') or use 'kron'/'diag'."
        )
    groups, group_index = layer_groups(names, shapes)
    layers: Sequence[KronLayer] = kron_layers(model, names, groups) if hessian == "kron" else []
    if hessian == "diag":  # whole Linear layers: the exact diagonal from KFAC-sized factors
        layers = whole_linear_layers(model, names, groups) or []  # else per-datum Jacobians
    reference = parameters[names[0]]
    precision = check_precision(prior_precision, len(groups), reference)
    if predictive == "glm":
        check_glm_likelihood(likelihood)
    budget = check_memory_budget(memory_budget, reference.device)
    read = data_batches(data, batch_size, device=model_device(model))
    start = time.perf_counter()
    sums = CurvatureSums()
    for index, batch in enumerate(progress_bar(read, desc="laplace", disable=not progress)):
        if index == 0:
            check_model_input(model, batch[0])
        accumulate_curvature(sums, hessian, model, names, layers, likelihood, batch, budget)
    if sums.count == 0:
        raise ValueError("the data has no rows; give at least one (x, y) pair.")
    _check_finite(sums)
    posterior = LaplacePosterior(
        model,
        names,
        groups,
        group_index.to(reference.device),
        sums,
        hessian=hessian,
        layer_bias=[layer.bias is not None for layer in layers] if hessian == "kron" else [],
        likelihood=likelihood,
        prior_precision=precision,
        predictive=predictive,
        link=link,
    )
    history = History(
        "laplace",
        extras={
            "seconds": time.perf_counter() - start,
            "log_marginal_likelihood": float(posterior.log_marginal_likelihood().detach()),
        },
    )
    return posterior, history


def _check_finite(sums: CurvatureSums) -> None:
    tensors = [
        t for t in (sums.full, sums.diagonal, *sums.factors_a, *sums.factors_g) if t is not None
    ]
    if not all(bool(torch.isfinite(t).all()) for t in tensors) or not math.isfinite(
        sums.squared_error + sums.log_likelihood
    ):
        raise ValueError(
            "the curvature (or the data fit) is not finite: the network outputs NaN/inf on the "
            "training data. Check the trained weights and the inputs (standardise them)."
        )
