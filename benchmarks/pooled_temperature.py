"""A temperature per function sample against one on the pooled predictive, on the same networks.

    python benchmarks/pooled_temperature.py --train fashion-mnist --data-dir DIR [--seed 0]

Trains one seed's deep ensemble and MultiSWAG exactly as ``bnn benchmark images`` does
(``SeedRun``: the same data split, networks and bits at the same thread count), fits both
temperatures on the first half of the validation split — ``temperature_scale`` (each sample's
logits over ``T``, then the average) and ``pooled_temperature_scale`` (the average, then
``p̄^{1/T}``) — and prints each one's validation NLL on the second half, and test NLL and ECE
(15 bins). The predictions of one method share their function samples (same ``rng``), so the
rows differ by the temperature's order only.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from bnn.apps.datasets.images import load_image_data
from bnn.apps.images.methods import TRAIN, SeedRun, validation_halves
from bnn.apps.images.network import Settings
from bnn.evaluate.metrics import expected_calibration_error, nll
from bnn.evaluate.recalibrate import pooled_temperature_scale, temperature_scale
from bnn.likelihoods import Categorical, ClassificationPrediction
from bnn.posterior import as_posterior
from bnn.predict import predict_with_uncertainty
from bnn.random.rng import RNG


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", default="fashion-mnist")
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/benchdata/images"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    settings = Settings(temperature_on_top=True)
    rng = RNG(args.seed)
    data = load_image_data(args.data_dir / args.train, validation=settings.validation, rng=rng)
    run = SeedRun(data, settings, rng, progress=True)
    calibration, choice = validation_halves(data.validation, settings)
    print(f"{args.train}, seed {args.seed}, {args.threads} thread(s)\n")
    print("| method | temperature | T | validation NLL (2nd half) | test NLL | test ECE (%) |")
    print("|---|---|---:|---:|---:|---:|")
    for method in ("ensemble", "multiswag"):
        trained = TRAIN[method](run)
        posterior = as_posterior(trained.posterior)
        orders = (("per sample", temperature_scale), ("pooled", pooled_temperature_scale))
        for order, scale in orders:
            scaled = scale(
                posterior,
                calibration.x,
                calibration.y,
                likelihood=Categorical(),
                num_samples=trained.num_samples,
                rng=rng.spawn(f"fit {method}"),
            )
            row = [method, order, f"{scaled.temperature:.3f}"]
            for part in (choice, data.test):
                prediction = predict_with_uncertainty(
                    scaled,
                    part.x,
                    likelihood=Categorical(),
                    num_samples=trained.num_samples,
                    rng=rng.spawn(f"predict {method}"),
                )
                assert isinstance(prediction, ClassificationPrediction)
                row.append(f"{nll(prediction, part.y):.4f}")
            row.append(f"{100 * expected_calibration_error(prediction, data.test.y):.2f}")
            print("| " + " | ".join(row) + " |", flush=True)


if __name__ == "__main__":
    main()
