"""``bayesianize``: turn layers of an existing network into Bayesian layers, in place.

Every selected module with parameters of its own is wrapped in a ``bnn.nn.BayesianModule``.
Normalisation layers (BatchNorm, LayerNorm, GroupNorm, InstanceNorm) stay deterministic.

Initialisation:

* ``init="moped"`` (Krishnan et al. 2020, "Specifying weight priors in Bayesian deep neural
  networks with empirical Bayes"): posterior means are the current (pretrained) weights and
  posterior stds are ``delta · |w|``, so the converted network starts at the trained one.
* ``init="random"``: the module's own ``reset_parameters()`` draws fresh means (inside
  ``rng.stream("init")``) and every posterior std starts at ``init_std``.

Example:
    >>> net = nn.Sequential(nn.Linear(4, 50), nn.ReLU(), nn.Linear(50, 1))
    >>> bnn.bayesianize(net, only=[ "2" ])     # last layer only ("neural linear" style)
    >>> bnn.bayesianize(net, estimator="flipout", init="random", rng=0)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Literal

import torch
from torch import nn
from torch.nn.modules.batchnorm import _NormBase

from bnn._checks import check_positive
from bnn.nn.layers import DEFAULT_INIT_STD, BayesianModule, bayesian_modules, check_estimator
from bnn.nn.priors import Normal, Prior
from bnn.random.default import RNGLike, resolve_rng

__all__ = ["bayesianize"]

Selection = str | Iterable[str] | type | tuple[type, ...] | Callable[[str, nn.Module], bool] | None
PriorSpec = Prior | Callable[[str, nn.Module], Prior] | None

NORMALISATION = (_NormBase, nn.LayerNorm, nn.GroupNorm, nn.LocalResponseNorm, nn.RMSNorm)
MOPED_MIN_STD = 1e-8


def bayesianize(
    model: nn.Module,
    *,
    prior: PriorSpec = None,
    estimator: str = "reparam",
    init: Literal["moped", "random"] = "moped",
    delta: float = 0.1,
    init_std: float = DEFAULT_INIT_STD,
    only: Selection = None,
    rng: RNGLike = None,
) -> nn.Module:
    """Replace the selected layers of ``model`` by Bayesian layers, in place.

    Args:
        model: the network. Containers are modified in place; a single leaf module (e.g. an
            ``nn.Linear``) cannot replace itself, so always use the return value.
        prior: one `Prior` for all layers, or ``prior(name, module) -> Prior`` per layer
            (default ``Normal(0, 1)``).
        estimator: ``"reparam"``, ``"local_reparam"`` or ``"flipout"`` (see
            ``bnn.nn.estimators``).
        init: ``"moped"`` keeps the current weights as posterior means with std
            ``delta · |w|``; ``"random"`` re-initialises means and uses std ``init_std``.
        delta: MOPED relative std (> 0).
        init_std: initial posterior std for ``init="random"`` (> 0).
        only: which layers: ``None`` (all with parameters, except normalisation), a qualified
            name or list of names (as in ``model.named_modules()``), a module type or tuple of
            types, or a predicate ``(name, module) -> bool``.
        rng: randomness for ``init="random"`` (stream ``"init"``).

    Returns:
        ``model`` (or the wrapper, when ``model`` itself is the only selected layer).

    Raises:
        ValueError: unknown estimator/init, an estimator that does not fit a selected layer,
            names that do not exist or have no parameters, or a selection that matches nothing.
    """
    if init not in ("moped", "random"):
        raise ValueError(f"init must be 'moped' or 'random', got {init!r}.")
    check_positive("delta", delta)
    check_positive("init_std", init_std)
    targets = _select(model, only)
    for _, module in targets:
        check_estimator(estimator, module)
    generator = resolve_rng(rng)
    for name, module in targets:
        layer_prior = _prior_for(prior, name, module)
        if init == "random":
            with generator.stream("init"):
                _reset(module, name)
            stds: float | dict[str, torch.Tensor] = init_std
        else:
            stds = {
                n: (delta * p.detach().abs()).clamp_min(MOPED_MIN_STD)
                for n, p in module.named_parameters(recurse=False)
            }
        wrapped = BayesianModule(module, prior=layer_prior, estimator=estimator, init_std=stds)
        if name == "":
            return wrapped
        parent_name, _, child_name = name.rpartition(".")
        setattr(model.get_submodule(parent_name), child_name, wrapped)
    return model


def _candidates(model: nn.Module) -> list[tuple[str, nn.Module]]:
    found: list[tuple[str, nn.Module]] = []
    inside_bayesian: list[str] = []
    for name, module in model.named_modules():
        if any(p == "" or name == p or name.startswith(p + ".") for p in inside_bayesian):
            continue
        if isinstance(module, BayesianModule):
            inside_bayesian.append(name)
            continue
        if isinstance(module, NORMALISATION):
            continue
        if any(True for _ in module.parameters(recurse=False)):
            found.append((name, module))
    return found


def _select(model: nn.Module, only: Selection) -> list[tuple[str, nn.Module]]:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}.")
    candidates = _candidates(model)
    if only is None:
        selected = candidates
    elif isinstance(only, type) or (
        isinstance(only, tuple) and all(isinstance(t, type) for t in only)
    ):
        selected = [(n, m) for n, m in candidates if isinstance(m, only)]
    elif callable(only):
        selected = [(n, m) for n, m in candidates if only(n, m)]
    else:
        names = [only] if isinstance(only, str) else [str(n) for n in only]
        available = dict(candidates)
        unknown = [n for n in names if n not in available]
        converted = [n for n in unknown if _inside_bayesian(model, n)]
        if converted:
            raise ValueError(
                f"only= names {converted} are already Bayesian layers (bayesianize was called "
                "on them before); select plain layers only, or convert a fresh copy."
            )
        if unknown:
            raise ValueError(
                f"only= names {unknown} are not convertible layers of this model; convertible "
                f"names are {sorted(available)} (normalisation layers stay deterministic)."
            )
        selected = [(n, available[n]) for n in names]
    if not selected:
        bayesian = [name or type(model).__name__ for name, _ in bayesian_modules(model)]
        if bayesian and only is None:
            raise ValueError(
                f"the model is already Bayesian: {bayesian[:5]} are Bayesian layers and no "
                "plain layer is left to convert. Call bayesianize once, on the plain network; "
                "to change priors or initialisation, convert a fresh copy of it."
            )
        raise ValueError(
            "bayesianize selected no layer: the model has no parameterised layers matching "
            f"only={only!r}" + (f" (already Bayesian: {bayesian[:5]})." if bayesian else ".")
        )
    return selected


def _inside_bayesian(model: nn.Module, name: str) -> bool:
    """Whether ``name`` is a Bayesian layer of ``model`` or lies inside one."""
    return any(
        name == path or name.startswith(f"{path}.") or path == ""
        for path, _ in bayesian_modules(model)
    )


def _prior_for(prior: PriorSpec, name: str, module: nn.Module) -> Prior:
    if prior is None:
        return Normal()
    if isinstance(prior, Prior):
        return prior
    chosen = prior(name, module)
    if not isinstance(chosen, Prior):
        raise TypeError(f"prior({name!r}, ...) returned {type(chosen).__name__}, not a Prior.")
    return chosen


def _reset(module: nn.Module, name: str) -> None:
    reset = getattr(module, "reset_parameters", None)
    if not callable(reset):
        raise ValueError(
            f"init='random' needs {name or 'the module'} ({type(module).__name__}) to have "
            "reset_parameters(); initialise it yourself and use init='moped'."
        )
    reset()
