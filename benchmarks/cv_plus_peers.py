"""CV+, jackknife+ and jackknife+-after-bootstrap in bnn and MAPIE on the same folds (or bags)
and the same models.

    python benchmarks/cv_plus_peers.py [--repetitions 50] [--only bootstrap]

Needs a benchmark environment with ``mapie`` (1.x) and scikit-learn (never dependencies of
bnn). Each repetition draws ``n = 200`` training and 1,000 test points of a linear problem
with noise that grows with ``|x|``; both libraries train scikit-learn's ``LinearRegression``
on the same folds (bnn's seeded folds are handed to MAPIE as a ``PredefinedSplit``; ``K = n``
for the jackknife+) and build absolute-residual CV+ intervals at level 0.9 — so the intervals
should agree to rounding. bnn's normalised CV+ (residuals over a fold model's std) is printed
beside them; MAPIE's cross-conformal regressor has no normalised score to compare it with.
Jackknife+-after-bootstrap: 30 bags drawn by bnn (bootstrap, and subsamples of n/2 without
replacement), handed to MAPIE's ``JackknifeAfterBootstrapRegressor`` as a ``Subsample`` that
yields them; both aggregate the out-of-bag models by their mean.

Prints, per method and library: mean coverage ± its standard error over repetitions, mean
width, and the largest difference between bnn's and MAPIE's interval ends.
"""

from __future__ import annotations

import argparse
import math

import numpy as np
import torch
from mapie.regression import CrossConformalRegressor, JackknifeAfterBootstrapRegressor
from mapie.subsample import Subsample
from sklearn.linear_model import LinearRegression
from sklearn.model_selection import PredefinedSplit
from torch import Tensor

import bnn
from bnn.evaluate._out_of_bag import draw_bags
from bnn.evaluate.recalibrate import cv_plus, jackknife_plus_after_bootstrap
from bnn.likelihoods import RegressionPrediction

LEVEL = 0.9
N_TRAIN, N_TEST = 200, 1000
BAGS = 30


def task(seed: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = 4 * torch.rand(N_TRAIN + N_TEST, 2, generator=g, dtype=torch.float64) - 2
    noise = (0.2 + x[:, :1].abs()) * torch.randn(N_TRAIN + N_TEST, 1, generator=g)
    y = x @ torch.tensor([[1.5], [-0.5]], dtype=torch.float64) + noise
    return x[:N_TRAIN], y[:N_TRAIN], x[N_TRAIN:], y[N_TRAIN:]


class FittedLine:
    """scikit-learn's least squares, with the std of its residuals scaled by ``0.2 + |x₁|``."""

    def __init__(self, x: Tensor, y: Tensor, rng: bnn.RNG) -> None:  # noqa: ARG002
        self.model = LinearRegression().fit(x.numpy(), y.squeeze(-1).numpy())
        shape = 0.2 + x[:, 0].abs()
        residuals = y.squeeze(-1) - self._mean(x)
        self.scale = float(((residuals / shape) ** 2).mean().sqrt())

    def _mean(self, x: Tensor) -> Tensor:
        return torch.from_numpy(self.model.predict(x.numpy()))

    def predict(self, x: Tensor) -> RegressionPrediction:
        mean = self._mean(x)[None, :, None]
        std = (self.scale * (0.2 + x[:, 0].abs()))[None, :, None]
        return RegressionPrediction(mean, mean, std)


def row(seed: int, folds: int) -> dict[tuple[str, str], tuple[float, float, float]]:
    x, y, x_test, y_test = task(seed)
    results, bounds = {}, {}
    for method in ("absolute", "normalized"):
        cross = cv_plus(
            FittedLine, x, y, folds=folds, level=LEVEL, method=method, rng=seed, progress=False
        )
        bounds[method] = [bound.squeeze(-1) for bound in cross.interval(x_test)]
        results[("bnn", method)] = (*_scores(*bounds[method], y_test), 0.0)
    mapie = CrossConformalRegressor(
        LinearRegression(), confidence_level=LEVEL, method="plus", cv=_same_folds(cross)
    )
    results[("MAPIE", "absolute")] = _against(mapie, bounds["absolute"], x, y, x_test, y_test)
    return results


def bootstrap_row(seed: int, replace: bool) -> dict[tuple[str, str], tuple[float, float, float]]:
    x, y, x_test, y_test = task(seed)
    results, bounds = {}, {}
    for method in ("absolute", "normalized"):
        jab = jackknife_plus_after_bootstrap(
            FittedLine, x, y, resamplings=BAGS, replace=replace, level=LEVEL, method=method,
            rng=seed, progress=False,
        )  # fmt: skip
        bounds[method] = [bound.squeeze(-1) for bound in jab.interval(x_test)]
        results[("bnn", method)] = (*_scores(*bounds[method], y_test), 0.0)
    size = N_TRAIN if replace else N_TRAIN // 2  # bnn's defaults
    bags = draw_bags(N_TRAIN, BAGS, size, replace, bnn.RNG(seed).torch_generator("bags"))
    for b, bag in enumerate(bags):  # the draw rebuilt is the draw bnn trained on
        assert not bool(jab.out_of_bag[bag, b].any())
    mapie = JackknifeAfterBootstrapRegressor(
        LinearRegression(), confidence_level=LEVEL, resampling=_SameBags(bags)
    )
    results[("MAPIE", "absolute")] = _against(mapie, bounds["absolute"], x, y, x_test, y_test)
    return results


def _against(
    mapie: object, mine: list[Tensor], x: Tensor, y: Tensor, x_test: Tensor, y_test: Tensor
) -> tuple[float, float, float]:
    """MAPIE's coverage and width after fitting it on ``(x, y)``, and its largest difference
    from bnn's interval ends ``mine``."""
    fitted = mapie.fit_conformalize(x.numpy(), y.squeeze(-1).numpy())  # type: ignore[attr-defined]
    _, intervals = fitted.predict_interval(x_test.numpy())
    theirs = [torch.from_numpy(intervals[:, end, 0]) for end in (0, 1)]
    gap = max(float((a - b).abs().max()) for a, b in zip(mine, theirs, strict=True))
    return (*_scores(*theirs, y_test), gap)


class _SameBags(Subsample):  # type: ignore[misc]
    """MAPIE's resampling, yielding bnn's bags (repeats included) and their out-of-bag points."""

    def __init__(self, bags: list[Tensor]) -> None:
        super().__init__(n_resamplings=len(bags))
        self.bags = [bag.numpy() for bag in bags]

    def split(self, X: object, *args: object, **kwargs: object):  # noqa: ANN201, N803, ARG002
        for bag in self.bags:
            yield bag, np.setdiff1d(np.arange(N_TRAIN), bag)


def _same_folds(cross: object) -> PredefinedSplit:
    return PredefinedSplit(cross.fold_of.numpy())  # type: ignore[attr-defined]


def _scores(lower: Tensor, upper: Tensor, y: Tensor) -> tuple[float, float]:
    y = y.squeeze(-1)
    inside = (lower <= y) & (y <= upper)
    return float(inside.double().mean()), float((upper - lower).mean())


def summarise(rows: list[dict], name: str) -> None:
    print(f"\n{name}: {len(rows)} repetitions, n = {N_TRAIN}, {N_TEST} test points, level {LEVEL}")
    print("| method | library | coverage | mean width | max |bnn − MAPIE| |")
    print("|---|---|---:|---:|---:|")
    for key in rows[0]:
        coverage = np.array([r[key][0] for r in rows])
        width = np.array([r[key][1] for r in rows])
        gap = max(r[key][2] for r in rows)
        error = coverage.std(ddof=1) / math.sqrt(len(rows))
        difference = f"{gap:.1e}" if key[0] == "MAPIE" else ""
        print(
            f"| {key[1]} | {key[0]} | {coverage.mean():.4f} ± {error:.4f} | "
            f"{width.mean():.4f} | {difference} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repetitions", type=int, default=50)
    parser.add_argument("--only", choices=["cross", "bootstrap"], default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    for name, folds in (("CV+ (10 folds)", 10), ("jackknife+", N_TRAIN)):
        if args.only != "bootstrap":
            summarise([row(seed, folds) for seed in range(args.repetitions)], name)
    for replace, bags in ((True, "bootstrap bags"), (False, "subsamples of n/2")):
        if args.only == "cross":
            continue
        rows = [bootstrap_row(seed, replace) for seed in range(args.repetitions)]
        summarise(rows, f"jackknife+-after-bootstrap ({BAGS} {bags}, mean)")


if __name__ == "__main__":
    main()
