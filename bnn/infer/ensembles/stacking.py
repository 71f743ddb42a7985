"""Stacking of predictive distributions (Yao, Vehtari, Simpson & Gelman 2018).

Given ``K`` posteriors (any mix: MC dropout, VI, ensembles, Laplace, GPs, ...), stacking finds
weights ``w`` on the simplex that maximise the held-out log score of the mixture

    ``max_w Σ_i log Σ_k w_k p_k(y_i | x_i)``,

where ``p_k(y_i | x_i)`` is member ``k``'s predictive density of datum ``i`` on data it did not
train on: a **validation set** (``method="validation"``) or the training data left out one at a
time by Pareto-smoothed importance sampling (``method="loo"``, PSIS-LOO; Vehtari et al. 2017).
Unlike Bayesian model averaging, which concentrates on one member as data grow, stacking keeps
members that are right in different places. The problem is concave; it is solved by the EM
fixed point ``w_k ← 1/N Σ_i w_k p_ki / Σ_j w_j p_ji``, stopped when the duality gap
``max_k (1/N Σ_i p_ki / p_i) − 1`` (an upper bound on the distance to the optimum of the mean
log score) is below ``tolerance``.

The result, `StackedPosterior`, is a `bnn.Posterior`: ``S`` function samples are split among
the members in proportion to ``w`` by systematic resampling (one uniform from the ``RNG``), and
member ``k`` draws its share with ``rng.spawn(k)``.

Example:
    >>> stacked, history = bnn.infer.stack([dropout, ensemble], x_val, y_val,
    ...                                    likelihood=bnn.Gaussian(0.1), rng=0)
    >>> history.weights, history.member_log_scores, history.stacked_log_score
    >>> bnn.predict_with_uncertainty(stacked, x_test, likelihood=bnn.Gaussian(0.1))
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence

import torch
from torch import Tensor

from bnn._checks import check_int, check_positive
from bnn.infer.ensembles._stacking_densities import (
    closed_form,
    event_shape,
    member_log_densities,
    member_prediction,
)
from bnn.infer.history import History
from bnn.likelihoods import (
    ClassificationPrediction,
    Likelihood,
    Prediction,
    RegressionPrediction,
)
from bnn.posterior.closed_form import ClosedFormPredictive
from bnn.posterior.protocol import (
    CarriesLikelihood,
    Posterior,
    check_batch,
    check_memory_budget,
)
from bnn.random import GLOBAL_STATE_LOCK
from bnn.random.default import RNGLike, resolve_rng
from bnn.random.rng import RNG

__all__ = ["StackedPosterior", "stack", "stacking_weights"]

METHODS = ("validation", "loo")


class StackedPosterior:
    """A weighted mixture of posteriors: ``p(f | D) = Σ_k w_k p_k(f | D)``.

    Args:
        members: ``K`` posteriors whose predictions have the same shape.
        weights: ``[K]``, non-negative, summing to 1.
        likelihood: the observation model of members that carry none (a member that carries
            its own, e.g. a GP with its learned noise, keeps it).

    Shapes: ``sample_functions(x, S)`` returns ``[S, N, ...]``: member ``k`` contributes
    ``⌈S W_k − u⌉ − ⌈S W_{k−1} − u⌉`` samples (``W`` the cumulative weights, one
    ``u ~ U[0, 1)`` from ``rng``'s generator ``"stacking"``), drawn with ``rng.spawn(k)``; a
    member that returns fewer (an ensemble of ``M`` members) is resampled with replacement
    (generator ``"stacking resample"`` of ``rng.spawn(k)``). Samples come in member order.
    When some member carries its own likelihood, ``bnn.predict_with_uncertainty`` gets the
    mixture of the members' own predictives from the same draws (``closed_form_prediction``).
    """

    def __init__(
        self, members: Sequence[Posterior], weights: Tensor, likelihood: Likelihood | None = None
    ) -> None:
        if not members or not all(isinstance(m, Posterior) for m in members):
            raise TypeError("members must be a non-empty sequence of bnn Posteriors.")
        weights = torch.as_tensor(weights, dtype=torch.float64).detach().cpu()
        if weights.shape != (len(members),):
            raise ValueError(
                f"weights must have shape [{len(members)}], got {tuple(weights.shape)}."
            )
        if not bool(torch.isfinite(weights).all()) or bool((weights < 0).any()):
            raise ValueError("weights must be finite and non-negative.")
        if abs(float(weights.sum()) - 1.0) > 1e-9:
            raise ValueError(f"weights must sum to 1, got {float(weights.sum())}.")
        self.members = list(members)
        self.weights = weights
        self.likelihood = likelihood

    def counts(self, num_samples: int, rng: RNGLike = None) -> Tensor:
        """How many of ``num_samples`` samples each member draws ``[K]`` (systematic resampling)."""
        generator = resolve_rng(rng).torch_generator("stacking")
        u = float(torch.rand((), generator=generator, dtype=torch.float64))
        edges = torch.ceil(num_samples * self.weights.cumsum(0).clamp_max(1.0) - u)
        edges = torch.cat([torch.zeros(1, dtype=torch.float64), edges.clamp(0, num_samples)])
        edges[-1] = num_samples
        return edges.diff().long()

    def _draw(
        self, x: Tensor, num_samples: int, rng: RNGLike, memory_budget: int | None
    ) -> list[tuple[int, Tensor]]:
        """``(member, its share of the samples)`` for every member with a positive count."""
        check_batch(x, num_samples)
        generator = resolve_rng(rng)
        return [
            (k, self._member_samples(k, x, count, generator.spawn(k), memory_budget))
            for k, count in enumerate(self.counts(num_samples, generator).tolist())
            if count > 0
        ]

    def _member_samples(
        self, k: int, x: Tensor, count: int, child: RNG, memory_budget: int | None
    ) -> Tensor:
        """``count`` function samples of member ``k`` (resampled if it returns fewer)."""
        samples = self.members[k].sample_functions(x, count, rng=child, memory_budget=memory_budget)
        if samples.shape[0] < count:
            index = torch.randint(
                0,
                samples.shape[0],
                (count,),
                generator=child.torch_generator("stacking resample"),
            ).to(samples.device)
            samples = samples[index]
        return samples[:count]

    def sample_functions(
        self,
        x: Tensor,
        num_samples: int,
        *,
        rng: RNGLike = None,
        memory_budget: int | None = None,
    ) -> Tensor:
        """``num_samples`` function samples of the mixture at ``x``: ``[S, N, ...]``."""
        parts = self._draw(x, num_samples, rng, memory_budget)
        shapes = {tuple(samples.shape[1:]) for _, samples in parts}
        if len(shapes) > 1:
            raise ValueError(
                f"the members' raw outputs have different shapes {sorted(shapes)} (e.g. a "
                "heteroscedastic head beside a GP); use bnn.predict_with_uncertainty, which "
                "mixes the members' predictions."
            )
        return torch.cat([samples for _, samples in parts], 0)

    def closed_form_prediction(
        self,
        x: Tensor,
        *,
        likelihood: Likelihood | None,
        num_samples: int,
        rng: RNG,
        memory_budget: int,
    ) -> Prediction | None:
        """The mixture of the members' own predictives, each with its share of the samples.

        A member with a closed form (a GP, a Laplace posterior with ``predictive="glm"``)
        gives it, as it would alone; the others are predicted from their function samples.
        ``None`` (predict from ``sample_functions`` with one likelihood) when no member
        carries a likelihood and either none has a closed form or no likelihood is given.
        """
        carries = any(_carried(member) is not None for member in self.members)
        has_closed_form = any(isinstance(member, ClosedFormPredictive) for member in self.members)
        if not carries and not (has_closed_form and (likelihood or self.likelihood)):
            return None
        check_batch(x, num_samples)
        budget = check_memory_budget(memory_budget, x.device)
        predictions, shares = [], []
        with torch.no_grad(), GLOBAL_STATE_LOCK:  # as bnn.predict_with_uncertainty samples
            for k, count in enumerate(self.counts(num_samples, rng).tolist()):
                if count == 0:
                    continue
                child = rng.spawn(k)
                member_likelihood = _member_likelihood(
                    self.members[k], k, likelihood or self.likelihood
                )
                direct = closed_form(self.members[k], x, member_likelihood, count, child, budget)
                if direct is None:
                    samples = self._member_samples(k, x, count, child, budget)
                    direct = member_likelihood.predict(samples)
                predictions.append(direct)
                shares.append(count / num_samples)
        return _mixture(predictions, shares)


def _carried(member: Posterior) -> Likelihood | None:
    return member.predictive_likelihood if isinstance(member, CarriesLikelihood) else None


def _member_likelihood(member: Posterior, k: int, default: Likelihood | None) -> Likelihood:
    likelihood = _carried(member) or default
    if likelihood is None:
        raise TypeError(
            f"posteriors[{k}] carries no observation model; pass likelihood=, e.g. "
            "bnn.Gaussian(0.1)."
        )
    return likelihood


def _mixture(predictions: list[Prediction], shares: list[float]) -> Prediction:
    """One prediction mixing ``predictions`` with weights ``shares`` (summing to 1)."""
    if all(isinstance(p, RegressionPrediction) for p in predictions):
        regression = [p for p in predictions if isinstance(p, RegressionPrediction)]
        loc = torch.cat([p.loc for p in regression], 0)
        return RegressionPrediction(
            samples=loc,
            loc=loc,
            scale=torch.cat([p.scale.expand_as(p.loc) for p in regression], 0),
            weights=torch.cat(
                [p.component_weights * share for p, share in zip(regression, shares, strict=True)],
                0,
            ),
        )
    if all(isinstance(p, ClassificationPrediction) for p in predictions):
        classification = [p for p in predictions if isinstance(p, ClassificationPrediction)]
        probs = torch.cat([p.class_probs for p in classification], 0)  # equal per sample
        return ClassificationPrediction(
            samples=probs.clamp_min(1e-45).log(),
            class_probs=probs,
            binary=classification[0].binary,
        )
    raise ValueError("the stacked members mix regression and classification predictions.")


def stacking_weights(
    log_densities: Tensor, *, tolerance: float = 1e-10, max_iterations: int = 100_000
) -> tuple[Tensor, float, int]:
    """Weights on the simplex maximising ``1/N Σ_i log Σ_k w_k exp(L_ki)`` (EM, float64).

    Args:
        log_densities: ``L`` ``[K, N]``, member ``k``'s log predictive density of datum ``i``.
        tolerance: stop when the duality gap (an upper bound on how far the mean log score is
            below its maximum) falls below it.
        max_iterations: at most this many EM steps.

    Returns:
        ``(weights [K], gap, iterations)``.
    """
    log_densities = log_densities.detach().to(torch.float64)
    k, _ = log_densities.shape
    # subtract the per-datum maximum: ratios p_ki / max_j p_ji in (0, 1]
    ratios = torch.exp(log_densities - log_densities.amax(0, keepdim=True))
    weights = torch.full((k,), 1.0 / k, dtype=torch.float64, device=ratios.device)
    gap = math.inf
    iterations = 0
    for iterations in range(1, max_iterations + 1):  # noqa: B007 - the count is returned
        mixture = weights @ ratios  # [N]
        gradient = (ratios / mixture).mean(1)  # [K]; Σ_k w_k g_k = 1
        gap = float(gradient.max()) - 1.0
        if gap <= tolerance:
            break
        weights = weights * gradient
        weights = weights / weights.sum()
    # EM reaches a vertex (one member) only in the limit: take the best member itself when it
    # scores higher, so the stack never scores below its best member.
    best = int(log_densities.mean(1).argmax())
    if float(torch.log(weights @ ratios).mean()) < float(torch.log(ratios[best]).mean()):
        weights = torch.zeros_like(weights)
        weights[best] = 1.0
    return weights.cpu(), gap, iterations


def stack(
    posteriors: Sequence[Posterior],
    x_val: Tensor,
    y_val: Tensor,
    *,
    likelihood: Likelihood | None = None,
    method: str = "validation",
    num_samples: int = 100,
    tolerance: float = 1e-10,
    rng: RNGLike = None,
    progress: bool = True,  # noqa: ARG001 - one pass per member, no loop worth a bar
) -> tuple[StackedPosterior, History]:
    """Stack posteriors by the held-out log score; the mixture is a `StackedPosterior`.

    Args:
        posteriors: ``K ≥ 1`` posteriors whose function samples have the same shape
            (trained without ``(x_val, y_val)`` for ``"validation"``; on them for ``"loo"``).
        x_val: inputs ``[N, ...]``.
        y_val: targets ``[N, ...]`` (class indices ``[N]`` for classifiers).
        likelihood: the observation model of members that carry none (e.g.
            ``bnn.Gaussian(0.1)``); a member that carries its own (a GP with its learned
            noise, an ensemble of learned noise levels, a boosted model with a learned std)
            is scored and predicted with that one. Required unless every member carries one.
        method: ``"validation"``: ``p_k(y_i)`` is member ``k``'s predictive
            ``1/S Σ_s p(y_i | f_s(x_i))`` on held-out data. ``"loo"``: the PSIS-LOO estimate
            of ``p_k(y_i | y_{−i})`` from ``S`` draws at the training data (Pareto ``k̂``
            recorded in the history; ``k̂ > 0.7`` marks unreliable points).
        num_samples: function samples ``S`` per member.
        tolerance: duality-gap tolerance of the weight optimisation.
        rng: randomness: member ``k`` samples with ``rng.spawn(k)``.
        progress: accepted for the common signature (nothing long to show).

    Returns:
        ``(StackedPosterior, History)``; ``history.weights`` (list of ``K`` floats),
        ``member_log_scores`` and ``stacked_log_score`` (mean log score per datum on the data
        used), ``gap``, ``iterations``, ``seconds`` and, for ``"loo"``, ``max_pareto_k`` per
        member.

    Raises:
        TypeError / ValueError: not posteriors, a member without a likelihood, members whose
            predictions differ in shape, mismatched ``x_val``/``y_val``, an unknown method.

    Example:
        >>> stacked, history = stack([laplace_posterior, ensemble], x_val, y_val,
        ...                          likelihood=bnn.Gaussian(0.1), rng=0)
        >>> print(history.weights)
    """
    start = time.perf_counter()
    likelihoods = _check_arguments(
        posteriors, x_val, y_val, method, likelihood, num_samples, tolerance
    )
    generator = resolve_rng(rng)
    predictions = [
        _validation_prediction(k, member, lk, x_val, num_samples, generator.spawn(k))
        for k, (member, lk) in enumerate(zip(posteriors, likelihoods, strict=True))
    ]
    samples = [prediction.samples for prediction in predictions]
    shapes = {event_shape(p) for p in predictions}
    if len(shapes) > 1:
        raise ValueError(
            f"the posteriors' predictions have different shapes per input {sorted(shapes)}; "
            "stack posteriors of models with the same outputs."
        )
    history = History("stack", extras={"method": method})
    log_densities = member_log_densities(method, predictions, likelihoods, samples, y_val, history)
    if not bool(torch.isfinite(log_densities).all()):
        raise ValueError("a member gives a non-finite log density on the data; check it.")
    weights, gap, iterations = stacking_weights(log_densities, tolerance=tolerance)
    mixture = torch.logsumexp(log_densities + weights.to(log_densities).log().unsqueeze(1), 0)
    history.extras.update(
        weights=weights.tolist(),
        member_log_scores=log_densities.mean(1).tolist(),
        stacked_log_score=float(mixture.mean()),
        gap=gap,
        iterations=iterations,
        seconds=time.perf_counter() - start,
    )
    return StackedPosterior(list(posteriors), weights, likelihood), history


def _validation_prediction(
    k: int, member: Posterior, likelihood: Likelihood, x: Tensor, num_samples: int, child: RNG
) -> Prediction:
    """Member ``k``'s predictive on the validation inputs, as it predicts alone: its closed
    form where it has one, else from ``num_samples`` function samples."""
    with torch.no_grad():
        budget = check_memory_budget(None, x.device)
        direct = closed_form(member, x, likelihood, num_samples, child, budget)
        if direct is not None:
            return direct
        return member_prediction(k, likelihood, member.sample_functions(x, num_samples, rng=child))


def _check_arguments(
    posteriors: Sequence[Posterior],
    x_val: Tensor,
    y_val: Tensor,
    method: str,
    likelihood: Likelihood | None,
    num_samples: int,
    tolerance: float,
) -> list[Likelihood]:
    """Refuse bad arguments before any work; each member's likelihood."""
    if isinstance(posteriors, Posterior) or not isinstance(posteriors, Sequence):
        raise TypeError("posteriors must be a list of bnn Posteriors.")
    if not posteriors:
        raise ValueError("stack needs at least one posterior.")
    for k, member in enumerate(posteriors):
        if not isinstance(member, Posterior):
            raise TypeError(f"posteriors[{k}] is a {type(member).__name__}, not a bnn Posterior.")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}.")
    if likelihood is not None and not isinstance(likelihood, Likelihood):
        raise TypeError(f"likelihood must be a bnn Likelihood, got {type(likelihood).__name__}.")
    likelihoods = [_member_likelihood(m, k, likelihood) for k, m in enumerate(posteriors)]
    check_batch(x_val, num_samples)
    check_positive("tolerance", tolerance)
    check_int("num_samples", num_samples)
    if not isinstance(y_val, Tensor) or y_val.dim() == 0 or y_val.shape[0] != x_val.shape[0]:
        shape = tuple(y_val.shape) if isinstance(y_val, Tensor) else type(y_val).__name__
        raise ValueError(
            f"x_val has {x_val.shape[0]} rows but y_val is {shape}; pass the targets of the "
            "same inputs."
        )
    return likelihoods
