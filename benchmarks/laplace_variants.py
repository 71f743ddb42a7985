"""Laplace variants on the UCI splits: which curvature subset, and how to pick δ and σ.

    python benchmarks/laplace_variants.py DATASET SPLITS [DATA_DIR]

For each split: the benchmark's MAP network (``bnn.apps.uci.posthoc``), then last-layer and
all-layer KFAC Laplace with (1) the prior precision δ (per layer) and noise σ by the marginal
likelihood, (2) then σ re-chosen on the validation split, (3) δ and σ both by a grid on the
validation split. Prints the test log-likelihood and 95 % coverage per variant and split, and
the mean ± standard error at the end.
"""

from __future__ import annotations

import math
import sys

import torch

from bnn.apps.datasets import load_uci
from bnn.apps.uci import posthoc as uci_posthoc
from bnn.apps.uci.command import _prepare
from bnn.apps.uci.common import Defaults
from bnn.evaluate import metrics
from bnn.infer.laplace.laplace import LaplacePosterior, laplace
from bnn.infer.training.fit import Validation
from bnn.likelihoods import Gaussian, RegressionPrediction
from bnn.predict import predict_with_uncertainty
from bnn.random.rng import RNG

NOISE_FACTORS = 2.0 ** torch.linspace(-1, 2, 13)
PRECISIONS = torch.logspace(-3, 3, 25)


def validation_log_likelihood(posterior: LaplacePosterior, validation: Validation) -> float:
    return -metrics.nll(predict_with_uncertainty(posterior, validation.x), validation.y)


def choose_noise(posterior: LaplacePosterior, validation: Validation) -> None:
    """σ on a grid of multiples of the current one, by the validation log-likelihood."""
    base = posterior.noise_std
    assert base is not None
    scores = {}
    for factor in (2.0 ** torch.linspace(-1, 2, 31)).tolist():
        posterior.noise_std = base * factor
        scores[factor] = validation_log_likelihood(posterior, validation)
    posterior.noise_std = base * max(scores, key=scores.__getitem__)


def choose_both(posterior: LaplacePosterior, validation: Validation) -> None:
    """δ and σ on a grid, by the validation log-likelihood."""
    base = posterior.noise_std
    assert base is not None
    scores = {}
    for precision in PRECISIONS.tolist():
        for factor in NOISE_FACTORS.tolist():
            posterior.prior_precision = precision
            posterior.noise_std = base * factor
            scores[precision, factor] = validation_log_likelihood(posterior, validation)
    precision, factor = max(scores, key=scores.__getitem__)
    posterior.prior_precision = precision
    posterior.noise_std = base * factor


def run_split(dataset: str, index: int, data_dir: str) -> dict[str, tuple[float, float]]:
    split = load_uci(dataset, index, data_dir=data_dir)
    rng = RNG(0).spawn(index)
    data, y_scaler = _prepare(split, Defaults(), rng)
    validation = data.options["validation"]
    network, learned = uci_posthoc._map_network(data, rng)
    y_test = split.y_test.unsqueeze(-1)

    def score(posterior: LaplacePosterior) -> tuple[float, float]:
        prediction = predict_with_uncertainty(posterior, data.x_test)
        assert isinstance(prediction, RegressionPrediction)
        rescaled = prediction.rescale(y_scaler.mean, y_scaler.std)
        return -metrics.nll(rescaled, y_test), metrics.interval_coverage(rescaled, y_test, 0.95)

    results = {}
    for subset in ("last_layer", "all"):
        posterior, _ = laplace(
            network,
            (data.x, data.y),
            likelihood=Gaussian(float(learned.std.detach())),
            subset=subset,
            hessian="kron",
            progress=False,
        )
        posterior.optimize_prior_precision(per_layer=True, optimize_noise=True)
        results[f"{subset}-marglik"] = score(posterior)
        choose_noise(posterior, validation)
        results[f"{subset}-marglik+valnoise"] = score(posterior)
        choose_both(posterior, validation)
        results[f"{subset}-valboth"] = score(posterior)
    return results


def main() -> None:
    torch.set_num_threads(1)
    dataset, splits = sys.argv[1], int(sys.argv[2])
    data_dir = sys.argv[3] if len(sys.argv) > 3 else "/work/shared/benchdata/uci"
    per_split = []
    for index in range(splits):
        per_split.append(run_split(dataset, index, data_dir))
        print(index, {k: tuple(round(v, 3) for v in vs) for k, vs in per_split[-1].items()})
    for variant in per_split[0]:
        values = [row[variant][0] for row in per_split]
        coverage = [row[variant][1] for row in per_split]
        mean = sum(values) / len(values)
        error = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1) / len(values))
        print(f"{variant:28s} LL {mean:.3f} ± {error:.3f}  cov {sum(coverage) / len(coverage):.3f}")


if __name__ == "__main__":
    main()
