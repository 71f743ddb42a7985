"""Jackknife+-after-bootstrap (Kim, Xu & Barber 2020): CV+ intervals whose centres are
aggregates of many models, from ``B`` models trained on resamples of the data.

Model ``b`` is trained on bag ``S_b`` (``m`` points drawn with replacement, or without);
point ``i``'s out-of-bag predictive is the equal-weight mixture of the models whose bag left
it out (about ``B·e⁻¹`` of them for the bootstrap). Its score is the residual of that
mixture's mean (divided by its std with ``method="normalized"``), and at a new ``x`` the
interval is CV+'s with the out-of-bag mixture in place of the fold model:
``[q⁻_α{μ̃_{−i}(x) − R_i σ̃_{−i}(x)}, q⁺_{1−α}{μ̃_{−i}(x) + R_i σ̃_{−i}(x)}]``.

Why: CV+ widens by the disagreement of its ``K`` fold models, once through the out-of-fold
residuals and once through the scatter of the fold models' predictions at ``x``; with an
unstable learner (a neural network on a few hundred points) it covers well above ``1 − α``.
Averaging over many out-of-bag models shrinks that scatter, so the coverage comes back
towards ``1 − α`` at the cost of ``B`` trainings. Kim et al. prove CV+'s ``1 − 2α`` when the
number of bags is itself drawn from a binomial (``random_count=True``; here as long as no point
is in every bag, since such points are dropped); with a fixed ``B`` (the
default, as in MAPIE) that bound is not proven, and coverage is measured instead (near
``1 − α`` in the tests).

A point that is in every bag has no out-of-bag model: it is left out of the calibration
scores with a warning, before any training (raise ``resamplings``; the chance is about
``0.63^B`` for the bootstrap, ``(m/n)^B`` for subsamples).
"""

from __future__ import annotations

import warnings
from concurrent.futures import Executor

import torch
from torch import Tensor

from bnn.evaluate._conformal_scores import check_calibration_pair, fewest_points
from bnn.evaluate._conformal_sets import SetScore
from bnn.evaluate._cross_conformal import (
    CrossConformal,
    Train,
    _predict,
    _ranks,
    check_cross_options,
    check_positive_std,
    train_models,
)
from bnn.evaluate._out_of_bag import draw_bags, out_of_bag_at_own_points
from bnn.likelihoods import Bernoulli, Categorical, Likelihood, RegressionPrediction, align_targets
from bnn.random.default import RNGLike, resolve_rng
from bnn.random.rng import RNG

__all__ = ["jackknife_plus_after_bootstrap"]


def jackknife_plus_after_bootstrap(
    train: Train,
    x: Tensor,
    y: Tensor,
    *,
    resamplings: int = 30,
    sample_size: int | None = None,
    replace: bool = True,
    random_count: bool = False,
    level: float = 0.9,
    method: str = "absolute",
    likelihood: Likelihood | None = None,
    num_samples: int = 100,
    rng: RNGLike = None,
    executor: Executor | None = None,
    threads_per_job: int | None = None,
    progress: bool = True,
) -> CrossConformal:
    """Train ``resamplings`` models on resamples; score every point by its out-of-bag models.

    Args:
        train: ``train(x_bag, y_bag, rng) -> posterior`` (or a model, or any object with
            ``predict(x) -> RegressionPrediction``), as for `cv_plus`.
        x: all the data's inputs ``[n, ...]``.
        y: regression targets ``[n, ...]`` (intervals only: for a classifier use `cv_plus`).
        resamplings: ``B ≥ 2`` models.
        sample_size: ``m``, the points in each bag (``None``: ``n`` with replacement, ``n/2``
            rounded down without); without replacement ``m < n``, so every bag leaves some out.
        replace: draw bags with replacement (the bootstrap) or without (subsampling: no point
            twice in a bag, e.g. for a learner that carves its own validation set from it).
        random_count: train a random number of models, ``B ~ Binomial(resamplings, p)`` with
            ``p`` the chance that a bag of ``m`` draws from ``n + 1`` points leaves out a given
            one (``(1 − 1/(n+1))^m`` with replacement, ``1 − m/(n+1)`` without): Kim et al.'s
            construction, under which coverage ``≥ 1 − 2α`` is proven for any learner as long
            as every point has an out-of-bag model (points in every bag are warned about and
            dropped; a count below 2 is refused: raise ``resamplings`` then). About
            ``p·resamplings`` models train (``p ≈ 0.37`` for the bootstrap), so raise
            ``resamplings`` accordingly. ``False``: exactly ``resamplings`` models (as MAPIE;
            coverage measured, not proven).
        level: default coverage ``1 − α``.
        method: ``"absolute"`` residuals or ``"normalized"`` (over the out-of-bag mixture's
            std).
        likelihood: observation model of the models' predictions (``None``: their own).
        num_samples: function samples of every prediction.
        executor: trains the models on any ``concurrent.futures.Executor``.
        threads_per_job: torch threads while a model trains (``None``: unchanged here, 1 on
            an executor); the same value gives the same bits serially and on an executor.
        progress: a bar over the models.
        rng: model ``b`` trains with ``rng.spawn(f"resample-{b}")``; the bags come from the
            generator ``"bags"``, a random count from ``"bag count"``.

    Returns:
        A `CrossConformal` whose ``interval(x, level)`` gives ``(lower, upper)`` ``[N, ...]``.

    Example:
        >>> def train(x, y, rng):
        ...     with rng.stream("init"):
        ...         net = torch.nn.Sequential(torch.nn.Linear(1, 32), torch.nn.Tanh(),
        ...                                   torch.nn.Linear(32, 1))
        ...     return bnn.fit(net, (x, y), likelihood=bnn.Gaussian(0.1), rng=rng)[0]
        >>> jab = jackknife_plus_after_bootstrap(train, x, y, resamplings=30, rng=0)
        >>> lower, upper = jab.interval(x_test, 0.9)  # [N, 1] each
    """
    check_calibration_pair(x, y, num_samples)
    n = x.shape[0]
    _check_options(n, resamplings, sample_size, replace, y, likelihood)
    if not isinstance(random_count, bool):
        raise TypeError(f"random_count must be True or False, got {random_count!r}.")
    _ranks(n, level)  # enough points for the level, before any training
    check_cross_options(train, y, method)
    parent = resolve_rng(rng)
    size = sample_size if sample_size is not None else (n if replace else n // 2)
    count = resamplings
    if random_count:
        count = binomial_bag_count(
            n, resamplings, size, replace, parent.torch_generator("bag count")
        )
    bags = draw_bags(n, count, size, replace, parent.torch_generator("bags"))
    out_of_bag = torch.ones(n, count, dtype=torch.bool)
    for b, bag in enumerate(bags):
        out_of_bag[bag, b] = False
    covered = _points_out_of_some_bag(out_of_bag, level)
    jobs = [(train, x[bag], y[bag], parent.spawn(f"resample-{b}")) for b, bag in enumerate(bags)]
    models = train_models(jobs, executor, threads_per_job, progress, "jackknife+ab models")
    return _score_out_of_bag(
        models, out_of_bag, covered, x, y, float(level), method, likelihood, num_samples, parent
    )


def binomial_bag_count(
    n: int, resamplings: int, size: int, replace: bool, generator: torch.Generator
) -> int:
    """Kim et al.'s number of bags, ``Binomial(resamplings, p)``: of ``resamplings`` bags of
    ``size`` draws from ``n + 1`` points, those that leave out point ``n + 1`` (the test
    point), each with chance ``p``. Refused below 2 (too few ``resamplings`` for ``p``)."""
    leave_out = (1 - 1 / (n + 1)) ** size if replace else 1 - size / (n + 1)
    count = int(
        torch.binomial(
            torch.tensor(float(resamplings), dtype=torch.float64),
            torch.tensor(leave_out, dtype=torch.float64),
            generator=generator,
        )
    )
    if count < 2:
        raise ValueError(
            f"random_count drew {count} of {resamplings} bags (each kept with chance "
            f"{leave_out:.3f}); jackknife+-after-bootstrap needs at least 2: raise resamplings "
            f"(about {max(2, round(10 / leave_out))} keep 10 on average) or lower sample_size."
        )
    return count


def _check_options(
    n: int,
    resamplings: object,
    sample_size: object,
    replace: object,
    y: Tensor,
    likelihood: Likelihood | None,
) -> None:
    if isinstance(resamplings, bool) or not isinstance(resamplings, int) or resamplings < 2:
        raise ValueError(f"resamplings must be an int ≥ 2 (30 is common), got {resamplings!r}.")
    if not isinstance(replace, bool):
        raise TypeError(f"replace must be True or False, got {replace!r}.")
    largest = n if replace else n - 1
    if sample_size is not None and (
        isinstance(sample_size, bool)
        or not isinstance(sample_size, int)
        or not 1 <= sample_size <= largest
    ):
        raise ValueError(
            f"sample_size must be an int in [1, {largest}] (n = {n}; without replacement a "
            f"bag must leave points out), got {sample_size!r}."
        )
    if not y.is_floating_point() or isinstance(likelihood, Categorical | Bernoulli):
        raise TypeError(
            "jackknife+-after-bootstrap makes regression intervals; these are class labels "
            f"(y of dtype {y.dtype}, likelihood {type(likelihood).__name__}): use cv_plus for "
            "prediction sets, or pass float targets and a regression likelihood."
        )


def _points_out_of_some_bag(out_of_bag: Tensor, level: float) -> Tensor:
    """``[n]`` (bool): the points some bag left out; the others are warned about (before any
    training) and dropped from the scores."""
    covered = out_of_bag.any(1)
    if not bool(covered.all()):
        warnings.warn(
            f"{int((~covered).sum())} of {len(covered)} points are in every bag and have no "
            "out-of-bag model; they are left out of the calibration scores. Raise resamplings "
            "or lower sample_size.",
            stacklevel=3,
        )
        kept = int(covered.sum())
        if kept < fewest_points(level):
            raise ValueError(
                f"only {kept} points are out of some bag, and level {level} needs "
                f"{fewest_points(level)}: raise resamplings or lower sample_size."
            )
    return covered


def _score_out_of_bag(
    models: list[object],
    out_of_bag: Tensor,
    covered: Tensor,
    x: Tensor,
    y: Tensor,
    level: float,
    method: str,
    likelihood: Likelihood | None,
    num_samples: int,
    parent: RNG,
) -> CrossConformal:
    """Every point's residual under the mixture of the models that left it out."""
    predictions = [
        _predict(model, x[covered], likelihood, num_samples, parent.spawn(f"out of bag {b}"))
        for b, model in enumerate(models)
    ]
    if not all(isinstance(p, RegressionPrediction) for p in predictions):
        raise TypeError(
            "jackknife+-after-bootstrap makes regression intervals; the models predict "
            f"{type(predictions[0]).__name__}: use cv_plus for a classifier."
        )
    means = torch.stack([p.mean for p in predictions])  # [B, n', ...]
    stds = torch.stack([p.std for p in predictions]) if method == "normalized" else None
    own_mean, own_std = out_of_bag_at_own_points(means, stds, out_of_bag[covered])
    targets = align_targets(y[covered], means.shape[1:], "out-of-bag prediction").to(own_mean)
    scores = (targets - own_mean).abs()
    if own_std is not None:
        check_positive_std(own_std, "for some training points")
        scores = scores / own_std
    return CrossConformal(
        models,
        out_of_bag[covered],
        scores.detach().cpu(),
        False,
        level,
        likelihood,
        num_samples,
        SetScore(),
        method,
    )
