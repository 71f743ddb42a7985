"""CV+ and jackknife+ (Barber, Candès, Ramdas & Tibshirani 2021): conformal intervals and
sets without a held-out calibration set, from the out-of-fold predictions of the ``K`` models
a cross-validation trains anyway.

The data are split into ``K`` folds; model ``−k`` is trained without fold ``k``. Every point
``i`` gets an out-of-fold score from the model that did not see it: the residual
``R_i = |y_i − μ_{−k(i)}(x_i)|`` (regression, ``μ`` the predictive mean) or the APS score of
its label (classification, ``bnn.evaluate._conformal_sets``). At a new ``x``:

* regression (CV+): ``[q⁻_α{μ_{−k(i)}(x) − R_i}, q⁺_{1−α}{μ_{−k(i)}(x) + R_i}]``, with ``q⁻``
  the ``⌊α(n+1)⌋``-th smallest and ``q⁺`` the ``⌈(1−α)(n+1)⌉``-th smallest of the ``n``
  values; with ``method="normalized"`` the residual is divided by the fold model's predictive
  std, ``R_i = |y_i − μ_{−k(i)}(x_i)| / σ_{−k(i)}(x_i)``, and the interval is
  ``[q⁻_α{μ_{−k(i)}(x) − R_i σ_{−k(i)}(x)}, q⁺_{1−α}{μ_{−k(i)}(x) + R_i σ_{−k(i)}(x)}]``:
  as wide as the model's own uncertainty where it is, with the same guarantee (the intervals
  ``μ ± tσ`` are nested in ``t``; Gupta, Kuchibhotla & Ramdas 2022);
* classification: the labels ``y`` whose score under every point's fold model is beaten by
  fewer than ``(1−α)(n+1)`` of the out-of-fold scores:
  ``Σ_i 1[E_i < E_{−k(i)}(x, y)] < ⌈(1−α)(n+1)⌉`` (Romano et al. 2020, §3.3).

Coverage is at least ``1 − 2α`` for any model and exchangeable data, and close to ``1 − α``
in practice (for stable models it is ``1 − α`` up to a small term). ``folds = n`` is the
jackknife+ (``n`` models). Everything is used: no point is spent on calibration only.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from bnn._jobs import run_jobs
from bnn._progress import progress_bar
from bnn.evaluate._conformal_scores import check_calibration_pair, conformal_rank, fewest_points
from bnn.evaluate._conformal_sets import SetScore
from bnn.evaluate._out_of_bag import out_of_bag_predictive
from bnn.likelihoods import (
    ClassificationPrediction,
    Likelihood,
    RegressionPrediction,
    align_targets,
    class_indices,
)
from bnn.posterior.model import as_posterior
from bnn.posterior.protocol import Posterior
from bnn.predict import predict_with_uncertainty
from bnn.random.default import RNGLike, resolve_rng
from bnn.random.rng import RNG

__all__ = [
    "CrossConformal",
    "check_cross_options",
    "check_positive_std",
    "cv_plus",
    "jackknife_plus",
    "train_models",
]

Train = Callable[[Tensor, Tensor, RNG], Any]

_BLOCK_ELEMENTS = 2**24
"""Elements of the ``[n, block, ...]`` out-of-bag centres `CrossConformal.interval` holds at
once (64 MB in float32)."""


@dataclass
class CrossConformal:
    """The ``K`` fold models of a CV+ / jackknife+ run and their out-of-fold scores.

    Made by `cv_plus` / `jackknife_plus`. ``interval(x, level)`` (regression) and
    ``prediction_set(x, level)`` (classification) at any level ``1 − α`` with
    ``⌈(1−α)(n+1)⌉ ≤ n``.

    Also made by `jackknife_plus_after_bootstrap`, where a point is out of the bag of several
    models and its centre is their aggregate.

    Attributes:
        models: the fold posteriors (or predictors); ``models[k]`` was trained without fold
            ``k`` (or on bag ``k``).
        out_of_bag: ``[n, K]`` (bool): whether model ``k`` did not see point ``i``; one
            ``True`` per row for CV+ (``fold_of`` names it).
        scores: out-of-fold residuals ``[n, ...]`` (divided by the predictive std for
            ``method="normalized"``) or label scores ``[n]``.
        classification: whether the models are classifiers.
        level: the default level.
        method: ``"absolute"`` or ``"normalized"`` residuals (``"aps"`` for a classifier).
    """

    models: list[Any]
    out_of_bag: Tensor
    scores: Tensor
    classification: bool
    level: float
    likelihood: Likelihood | None
    num_samples: int
    score: SetScore
    method: str = "absolute"

    def __post_init__(self) -> None:
        if self.method not in ("absolute", "normalized", "aps"):
            raise ValueError(
                f"method must be 'absolute' or 'normalized' (or 'aps' for sets), got "
                f"{self.method!r}."
            )

    @property
    def fold_of(self) -> Tensor:
        """The fold of each point ``[n]``: the one model that did not see it (CV+)."""
        if not bool((self.out_of_bag.sum(1) == 1).all()):
            raise ValueError("points are out of the bag of several models here: no one fold each.")
        return self.out_of_bag.to(torch.long).argmax(1)

    def _predictions(self, x: Tensor, rng: RNGLike) -> list[Any]:
        generator = resolve_rng(rng)
        return [
            _predict(model, x, self.likelihood, self.num_samples, generator.spawn(f"fold-{k}"))
            for k, model in enumerate(self.models)
        ]

    def interval(
        self, x: Tensor, level: float | None = None, *, rng: RNGLike = None
    ) -> tuple[Tensor, Tensor]:
        """CV+ (or jackknife+-after-bootstrap) interval ``(lower, upper)``, each ``[N, ...]``,
        at ``level``.

        Memory: the ``K`` predictives ``[K, N, ...]``, and the ``n`` out-of-bag centres of a
        block of test inputs at a time (``n`` times the block, at most `_BLOCK_ELEMENTS`).
        """
        if self.classification:
            raise TypeError("intervals are for regression; use prediction_set for a classifier.")
        ranks = _ranks(len(self.out_of_bag), self.level if level is None else level)
        predictions = self._predictions(x, rng)
        means = torch.stack([p.mean for p in predictions])  # [K, N, ...]
        stds = torch.stack([p.std for p in predictions]) if self.method == "normalized" else None
        if stds is not None:
            check_positive_std(stds, "of these inputs")
        per_input = len(self.out_of_bag) * max(1, means[0, :1].numel())
        block = max(1, _BLOCK_ELEMENTS // per_input)
        bounds = [
            self._bounds(
                means[:, start : start + block],
                None if stds is None else stds[:, start : start + block],
                ranks,
            )
            for start in range(0, max(1, means.shape[1]), block)  # one (empty) block for no inputs
        ]
        return torch.cat([b[0] for b in bounds]), torch.cat([b[1] for b in bounds])

    def _bounds(
        self, means: Tensor, stds: Tensor | None, ranks: tuple[int, int]
    ) -> tuple[Tensor, Tensor]:
        """The interval at one block of test inputs, from its ``[K, B, ...]`` means."""
        # [n, B, ...]: the model(s) that did not see point i
        per_point, per_point_std = out_of_bag_predictive(means, stds, self.out_of_bag)
        residuals = self.scores.to(means).reshape(self.scores.shape[0], 1, *self.scores.shape[1:])
        if per_point_std is not None:  # R_i σ_{−i}(x)
            residuals = residuals * per_point_std
        lower = torch.kthvalue(per_point - residuals, ranks[0], dim=0).values
        upper = torch.kthvalue(per_point + residuals, ranks[1], dim=0).values
        return lower, upper

    def prediction_set(
        self, x: Tensor, level: float | None = None, *, rng: RNGLike = None
    ) -> Tensor:
        """CV+ prediction set ``[N, K]`` (bool) at ``level`` (classification)."""
        if not self.classification:
            raise TypeError("prediction sets are for classifiers; use interval for regression.")
        fold_of = self.fold_of
        _, upper_rank = _ranks(len(fold_of), self.level if level is None else level)
        generator = resolve_rng(rng)
        probs = [p.class_probs.mean(0) for p in self._predictions(x, generator)]
        uniform = torch.rand(
            x.shape[0],
            generator=generator.torch_generator("conformal", x.device),
            dtype=probs[0].dtype,
            device=x.device,
        )
        fold_scores = torch.stack([self.score.scores(p, uniform) for p in probs])  # [K, N, C]
        beaten = torch.zeros(fold_scores.shape[1:], dtype=torch.long, device=x.device)
        for k in range(len(self.models)):  # the points of fold k against model −k
            own = self.scores[fold_of == k].to(fold_scores).sort().values
            beaten += torch.searchsorted(own, fold_scores[k].contiguous(), right=False)
        return beaten < upper_rank


def cv_plus(
    train: Train,
    x: Tensor,
    y: Tensor,
    *,
    folds: int = 10,
    level: float = 0.9,
    method: str = "absolute",
    likelihood: Likelihood | None = None,
    num_samples: int = 100,
    rng: RNGLike = None,
    executor: Executor | None = None,
    threads_per_job: int | None = None,
    progress: bool = True,
) -> CrossConformal:
    """Train ``folds`` models, each without one fold, and score every point out of fold.

    Args:
        train: ``train(x_train, y_train, rng) -> posterior`` (or a model
            ``predict_with_uncertainty`` accepts, or any object with ``predict(x) ->
            Prediction``); picklable when ``executor`` is a process pool (a module-level
            function).
        x: all the data's inputs ``[n, ...]`` (no calibration set is held out).
        y: targets ``[n, ...]`` (class indices ``[n]`` for a classifier).
        folds: ``K`` (``2 ≤ K ≤ n``); ``K = n`` is the jackknife+.
        level: default coverage ``1 − α``; needs ``⌈(1−α)(n+1)⌉ ≤ n``.
        method: regression scores: ``"absolute"`` residuals (intervals of one width around
            the fold models' means) or ``"normalized"`` (residuals over the fold model's
            predictive std: widths follow the model's uncertainty; every predictive std must
            be positive). Ignored for a classifier (APS scores).
        likelihood: observation model of the fold models' predictions (``None``: their own).
        num_samples: function samples of every prediction.
        rng: fold ``k`` trains with ``rng.spawn(f"fold-{k}")``; the folds are a permutation
            from the generator ``"folds"``.
        executor: trains the folds on any ``concurrent.futures.Executor``.
        threads_per_job: torch threads while a fold trains (``None``: unchanged here, 1 on an
            executor); the same value gives the same bits serially and on an executor.
        progress: a bar over the folds.

    Returns:
        A `CrossConformal`.

    Example:
        >>> def train(x, y, rng):
        ...     return bnn.fit(make_net(), (x, y), likelihood=bnn.Gaussian(0.1), rng=rng)[0]
        >>> cv = cv_plus(train, x, y, folds=10, likelihood=bnn.Gaussian(0.1), rng=0)
        >>> lower, upper = cv.interval(x_test)
    """
    check_calibration_pair(x, y, num_samples)
    n = x.shape[0]
    if isinstance(folds, bool) or not isinstance(folds, int) or not 2 <= folds <= n:
        raise ValueError(
            f"folds must be an int in [2, n = {n}] (n: the jackknife+), got {folds!r}."
        )
    _ranks(n, level)  # enough points for the level, before any training
    check_cross_options(train, y, method)
    parent = resolve_rng(rng)
    order = torch.randperm(n, generator=parent.torch_generator("folds"))
    fold_of = torch.empty(n, dtype=torch.long)
    fold_of[order] = torch.arange(n) % folds
    jobs = [
        (train, x[fold_of != k], y[fold_of != k], parent.spawn(f"fold-{k}")) for k in range(folds)
    ]
    models = train_models(jobs, executor, threads_per_job, progress, "cv+ folds")
    return _score_out_of_fold(
        models, fold_of, x, y, float(level), method, likelihood, num_samples, parent
    )


def jackknife_plus(train: Train, x: Tensor, y: Tensor, **options: Any) -> CrossConformal:
    """`cv_plus` with one fold per point (``n`` models)."""
    return cv_plus(train, x, y, folds=x.shape[0], **options)


def train_models(
    jobs: list[tuple[Train, Tensor, Tensor, RNG]],
    executor: Executor | None,
    threads_per_job: int | None,
    progress: bool,
    description: str,
) -> list[Any]:
    """``train(x, y, rng)`` of every job (here or on ``executor``) under a progress bar, each
    result as a posterior or a predictor."""
    bar = progress_bar(range(len(jobs)), desc=description, disable=not progress)
    trained = run_jobs(
        _train_fold,
        jobs,
        executor=executor,
        threads_per_job=threads_per_job,
        on_done=lambda: bar.update(1),
    )
    bar.close()
    return [_fold_model(model) for model in trained]


def _fold_model(trained: object) -> Any:
    """A trained fold: a posterior (a model becomes one), or anything with ``predict(x)``."""
    if isinstance(trained, Posterior | nn.Module):
        return as_posterior(trained)
    if callable(getattr(trained, "predict", None)):
        return trained
    raise TypeError(
        "train must return a bnn posterior, a model predict_with_uncertainty accepts, or an "
        f"object with predict(x) -> Prediction; got {type(trained).__name__}."
    )


def _predict(model: Any, x: Tensor, likelihood: Likelihood | None, samples: int, rng: RNG) -> Any:
    """A fold's prediction at ``x``: through ``predict_with_uncertainty`` for a posterior, or
    the fold's own ``predict(x)`` (e.g. a pipeline that standardises its inputs)."""
    if isinstance(model, Posterior):
        return predict_with_uncertainty(
            model, x, likelihood=likelihood, num_samples=samples, rng=rng
        )
    return model.predict(x)


def _train_fold(job: tuple[Train, Tensor, Tensor, RNG]) -> Any:
    train, x, y, rng = job
    return train(x, y, rng)


def _score_out_of_fold(
    models: list[Posterior],
    fold_of: Tensor,
    x: Tensor,
    y: Tensor,
    level: float,
    method: str,
    likelihood: Likelihood | None,
    num_samples: int,
    parent: RNG,
) -> CrossConformal:
    """Every point's score under the model that did not see it."""
    score = SetScore()
    scores: Tensor | None = None
    classification = False
    for k, model in enumerate(models):
        held = fold_of == k
        child = parent.spawn(f"out of fold {k}")
        prediction = _predict(model, x[held], likelihood, num_samples, child)
        classification = isinstance(prediction, ClassificationPrediction)
        fold_scores = _scores_of(prediction, y[held], child, score, method).detach().cpu()
        if scores is None:
            scores = torch.empty((len(fold_of), *fold_scores.shape[1:]), dtype=fold_scores.dtype)
        scores[held] = fold_scores
    assert scores is not None
    return CrossConformal(
        models,
        torch.nn.functional.one_hot(fold_of, len(models)).bool(),
        scores,
        classification,
        level,
        likelihood,
        num_samples,
        score,
        "aps" if classification else method,
    )


def _scores_of(prediction: object, y: Tensor, rng: RNG, score: SetScore, method: str) -> Tensor:
    """Absolute (or normalized) residuals of the predictive mean, or the (randomized) APS
    score of the label."""
    if isinstance(prediction, RegressionPrediction):
        targets = align_targets(y, prediction.loc.shape[1:], "out-of-fold prediction")
        residuals = (targets.to(prediction.mean) - prediction.mean).abs()
        if method == "absolute":
            return residuals
        check_positive_std(prediction.std, "for some training points")
        return residuals / prediction.std
    if isinstance(prediction, ClassificationPrediction):
        probs = prediction.class_probs.mean(0)
        labels = class_indices(y, probs.shape[0], probs.shape[-1]).to(probs.device)
        uniform = torch.rand(
            probs.shape[0], generator=rng.torch_generator("conformal"), dtype=probs.dtype
        ).to(probs.device)
        return score.scores(probs, uniform).gather(-1, labels[:, None]).squeeze(-1)
    raise TypeError(f"cannot cross-conformalize a {type(prediction).__name__}.")


def check_cross_options(train: object, y: Tensor, method: object) -> None:
    """A callable ``train``, finite targets and a known regression score, before training."""
    if method not in ("absolute", "normalized"):
        raise ValueError(f"method must be 'absolute' or 'normalized', got {method!r}.")
    if not callable(train):
        raise TypeError(f"train must be a function (x, y, rng) -> posterior, got {type(train)}.")
    if y.is_floating_point() and not bool(torch.isfinite(y).all()):
        raise ValueError("y contains NaN or inf; remove those rows first.")


def check_positive_std(std: Tensor, where: str) -> None:
    """Normalised scores divide by predictive stds: all must be positive."""
    if not bool((std > 0).all()):
        raise ValueError(
            f"method 'normalized' divides by the models' predictive std, which is 0 {where}; "
            "use method='absolute' or predict with the likelihood's noise."
        )


def _ranks(n: int, level: float) -> tuple[int, int]:
    """``(⌊α(n+1)⌋, ⌈(1−α)(n+1)⌉)``, the ranks of CV+'s lower and upper quantiles."""
    if n < fewest_points(level):
        raise ValueError(
            f"CV+ at level {level} needs at least {fewest_points(level)} points, got {n}; pass "
            "more data or a lower level."
        )
    upper = conformal_rank(n, level)
    return n + 1 - upper, upper
