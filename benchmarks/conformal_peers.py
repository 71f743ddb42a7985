"""Split conformal prediction in bnn, MAPIE and TorchCP on the same predictions.

    python benchmarks/conformal_peers.py [--repetitions 50]

Needs a benchmark environment with ``mapie`` and ``torchcp`` (never dependencies of bnn; see
docs/benchmarks.md for how it was built). One trained model per task gives the predictions;
every repetition draws a fresh calibration/test split of held-out data, and each library
calibrates on the calibration part and predicts on the test part from *those same numbers*:

* regression (a heteroscedastic MLP, ``HeteroscedasticGaussian``): absolute residuals around
  the predictive mean, and CQR around the predictive 5 % / 95 % quantiles;
* classification (a 10-class MLP): APS and RAPS sets, randomized and not.

Prints mean coverage (with its standard error over repetitions) and mean width / set size per
library and method at level 0.9.
"""

from __future__ import annotations

import argparse
import math
import warnings

import numpy as np
import torch
from torch import Tensor, nn

import bnn
from bnn.evaluate import metrics
from bnn.evaluate.recalibrate import conformalize

LEVEL = 0.9


class Lookup:
    """A prefit scikit-learn estimator whose "inputs" are row numbers into fixed outputs."""

    def __init__(self, values: np.ndarray, classes: int | None = None) -> None:
        self.values = values
        if classes is not None:
            self.classes_ = np.arange(classes)

    def fit(self, x: np.ndarray, y: np.ndarray) -> Lookup:  # noqa: ARG002 - prefit
        return self

    def predict(self, x: np.ndarray) -> np.ndarray:
        rows = x[:, 0].astype(int)
        values = self.values[rows]
        return values.argmax(-1) if values.ndim == 2 else values

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return self.values[x[:, 0].astype(int)]

    def get_params(self, deep: bool = True) -> dict:  # noqa: ARG002
        return {}

    def __sklearn_is_fitted__(self) -> bool:
        return True


class Fixed:
    """A posterior whose one function sample is a fixed table of outputs, indexed by row."""

    def __init__(self, outputs: Tensor) -> None:
        self.outputs = outputs

    def sample_functions(self, x, num_samples, *, rng=None, memory_budget=None):  # noqa: ANN001, ARG002
        return self.outputs[x[:, 0].long()].unsqueeze(0)


def regression_task() -> tuple[Tensor, Tensor]:
    """Raw outputs (mean, raw std) of a heteroscedastic MLP on 4,000 held-out points, and y."""
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(5000, 1, generator=generator) * 4 - 2
    noise = 0.1 + 0.4 * x.abs()
    y = torch.sin(2 * x) + noise * torch.randn(x.shape, generator=generator)
    with bnn.RNG(0).stream("init"):
        net = nn.Sequential(nn.Linear(1, 64), nn.Tanh(), nn.Linear(64, 2))
    likelihood = bnn.HeteroscedasticGaussian()
    bnn.fit(net, (x[:1000], y[:1000]), likelihood=likelihood, epochs=300, lr=1e-2, rng=0)
    with torch.no_grad():
        return net(x[1000:]).double(), y[1000:].double()


def classification_task() -> tuple[Tensor, Tensor]:
    """Logits of a 10-class MLP (trained long: over-confident) on 4,000 held-out points."""
    generator = torch.Generator().manual_seed(1)
    weights = torch.randn(8, 10, generator=generator)
    x = torch.randn(5000, 8, generator=generator)
    y = torch.multinomial((x @ weights).softmax(-1), 1, generator=generator).squeeze(-1)
    with bnn.RNG(1).stream("init"):
        net = nn.Sequential(nn.Linear(8, 64), nn.ReLU(), nn.Linear(64, 10))
    bnn.fit(net, (x[:1000], y[:1000]), likelihood=bnn.Categorical(), epochs=200, lr=1e-2, rng=1)
    with torch.no_grad():
        return net(x[1000:]).double(), y[1000:]


def split(n: int, repetition: int) -> tuple[Tensor, Tensor]:
    order = torch.randperm(n, generator=torch.Generator().manual_seed(100 + repetition))
    return order[:1000], order[1000:]


def regression_row(outputs: Tensor, y: Tensor, cal: Tensor, test: Tensor, seed: int) -> dict:
    """Coverage and mean width per library and method for one calibration/test split."""
    from mapie.regression import ConformalizedQuantileRegressor, SplitConformalRegressor
    from torchcp.regression.score import ABS, CQR

    rows = torch.arange(len(y)).double().unsqueeze(-1)
    likelihood = bnn.HeteroscedasticGaussian()
    prediction = likelihood.predict(outputs.unsqueeze(0))
    mean = prediction.mean.squeeze(-1)
    low, high = (q.squeeze(-1) for q in prediction.interval(LEVEL))
    result = {}
    for method in ("absolute", "cqr"):
        conformal = conformalize(
            Fixed(outputs), rows[cal], y[cal], method=method, likelihood=likelihood, rng=seed
        )
        lower, upper = conformal.interval(rows[test], rng=seed)
        result[("bnn", method)] = _interval_scores(lower.squeeze(-1), upper.squeeze(-1), y[test])
    x_cal, x_test = rows[cal].numpy(), rows[test].numpy()
    y_cal = y[cal].squeeze(-1).numpy()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mapie = SplitConformalRegressor(Lookup(mean.numpy()), confidence_level=LEVEL, prefit=True)
        mapie.conformalize(x_cal, y_cal)
        _, bounds = mapie.predict_interval(x_test)
        result[("MAPIE", "absolute")] = _interval_scores(
            torch.from_numpy(bounds[:, 0, 0]), torch.from_numpy(bounds[:, 1, 0]), y[test]
        )
        quantiles = [Lookup(low.numpy()), Lookup(high.numpy()), Lookup(mean.numpy())]
        cqr = ConformalizedQuantileRegressor(quantiles, confidence_level=LEVEL, prefit=True)
        cqr.conformalize(x_cal, y_cal)
        _, bounds = cqr.predict_interval(x_test, symmetric_correction=True)
        result[("MAPIE", "cqr")] = _interval_scores(
            torch.from_numpy(bounds[:, 0, 0]), torch.from_numpy(bounds[:, 1, 0]), y[test]
        )
    for method, score, predicts in (
        ("absolute", ABS(), mean.unsqueeze(-1)),
        ("cqr", CQR(), torch.stack([low, high], -1)),
    ):
        scores = score(predicts[cal], y[cal].squeeze(-1))
        q_hat = _torchcp_quantile(scores.flatten()).reshape(-1)
        intervals = score.generate_intervals(predicts[test], q_hat).reshape(len(test), -1)
        result[("TorchCP", method)] = _interval_scores(intervals[:, 0], intervals[:, 1], y[test])
    return result


def classification_row(logits: Tensor, y: Tensor, cal: Tensor, test: Tensor, seed: int) -> dict:
    """Coverage and mean set size per library and method for one calibration/test split."""
    from mapie.classification import SplitConformalClassifier
    from torchcp.classification.predictor import SplitPredictor
    from torchcp.classification.score import APS, RAPS

    rows = torch.arange(len(y)).double().unsqueeze(-1)
    probs = logits.softmax(-1)
    result = {}
    for randomized in (False, True):
        for method, options in (("aps", {}), ("raps", {"penalty": 0.01, "k_reg": 2})):
            conformal = conformalize(
                Fixed(logits),
                rows[cal],
                y[cal],
                likelihood=bnn.Categorical(),
                method=method,
                randomized=randomized,
                rng=seed,
                **options,
            )
            prediction = bnn.predict_with_uncertainty(conformal, rows[test], rng=seed)
            name = f"{method} {'randomized' if randomized else 'conservative'}"
            result[("bnn", name)] = (
                metrics.set_coverage(prediction, y[test]),
                metrics.mean_set_size(prediction),
            )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for method in ("aps", "raps"):
            mapie = SplitConformalClassifier(
                Lookup(probs.numpy(), classes=10),
                confidence_level=LEVEL,
                conformity_score=method,
                prefit=True,
            )
            mapie.conformalize(rows[cal].numpy(), y[cal].numpy())
            for last, name in ((True, "conservative"), ("randomized", "randomized")):
                _, sets = mapie.predict_set(
                    rows[test].numpy(), conformity_score_params={"include_last_label": last}
                )
                result[("MAPIE", f"{method} {name}")] = _set_scores(
                    torch.from_numpy(sets[:, :, 0]), y[test]
                )
    torch.manual_seed(seed)  # TorchCP draws its randomisation from torch's global generator
    for method, score in (("aps", APS()), ("raps", RAPS(penalty=0.01, kreg=2))):
        predictor = SplitPredictor(score, alpha=1 - LEVEL)
        predictor.calculate_threshold(logits[cal].float(), y[cal])
        sets = predictor.predict_with_logits(logits[test].float())
        result[("TorchCP", f"{method} randomized")] = _set_scores(_as_mask(sets, 10), y[test])
    return result


def _torchcp_quantile(scores: Tensor) -> Tensor:
    from torchcp.utils.common import calculate_conformal_value

    return calculate_conformal_value(scores, 1 - LEVEL)


def _as_mask(sets: object, classes: int) -> Tensor:
    if isinstance(sets, Tensor):
        return sets.bool()
    mask = torch.zeros(len(sets), classes, dtype=torch.bool)  # type: ignore[arg-type]
    for row, members in enumerate(sets):  # type: ignore[arg-type]
        mask[row, torch.as_tensor(members, dtype=torch.long)] = True
    return mask


def _interval_scores(lower: Tensor, upper: Tensor, y: Tensor) -> tuple[float, float]:
    y = y.squeeze(-1)
    covered = ((y >= lower) & (y <= upper)).double().mean()
    return float(covered), float((upper - lower).mean())


def _set_scores(sets: Tensor, y: Tensor) -> tuple[float, float]:
    covered = sets[torch.arange(len(y)), y].double().mean()
    return float(covered), float(sets.sum(-1).double().mean())


def summarise(rows: list[dict], kind: str) -> None:
    print(f"\n{kind}: mean over {len(rows)} calibration/test splits (1,000 / 3,000), level 0.9")
    print(f"{'method':26s} {'library':8s} {'coverage':>16s} {kind.split()[-1]:>8s}")
    for key in sorted(rows[0], key=lambda k: (k[1], k[0])):
        coverage = np.array([row[key][0] for row in rows])
        size = np.array([row[key][1] for row in rows])
        error = coverage.std(ddof=1) / math.sqrt(len(rows))
        print(f"{key[1]:26s} {key[0]:8s} {coverage.mean():9.4f} ± {error:.4f} {size.mean():8.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repetitions", type=int, default=50)
    args = parser.parse_args()
    torch.set_num_threads(1)
    outputs, y = regression_task()
    logits, labels = classification_task()
    regression, classification = [], []
    for repetition in range(args.repetitions):
        cal, test = split(len(y), repetition)
        regression.append(regression_row(outputs, y, cal, test, repetition))
        classification.append(classification_row(logits, labels, cal, test, repetition))
    summarise(regression, "regression, interval width")
    summarise(classification, "classification, set size")


if __name__ == "__main__":
    main()
