"""The GP predictive at 8,000 test points: `bnn`'s closed form against joint sampling and
against GPyTorch's own predictive, in one run.

    python benchmarks/gp_predictive.py [--train 1000] [--test 8000] [--repeats 3]

An exact GP (RBF, learned noise, 100 Adam steps of the marginal likelihood, float32 data) on
``y = sin(2x) + 0.1 ε``, ``x ~ U(-3, 3)``; test inputs on ``[-4, 4]``. Each variant runs in
a fresh process (its peak resident memory above the trained model's is its cost; time is the
median of ``--repeats`` calls after one warm-up):

* ``bnn closed form``: ``bnn.predict_with_uncertainty(posterior, x)`` — per-input Gaussian
  from the mean and the diagonal of the posterior covariance, blocks sized to the memory
  budget;
* ``bnn joint samples``: 100 joint function samples (``posterior.sample_functions``, an
  ``N × N`` Cholesky) through the Gaussian likelihood — what ``predict_with_uncertainty``
  did before it used the closed form;
* ``GPyTorch``: ``likelihood(model(x))`` with GPyTorch's defaults (float32 model) and, as
  the exact reference, the same in float64 with dense Cholesky solves.

Prints the test NLL of each against the float64 reference, the largest mean and std errors,
seconds and MB; the numbers of an idle 2-core machine are in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
import warnings

import torch

import bnn

VARIANTS = ("bnn closed form", "bnn joint samples", "GPyTorch (float32)", "GPyTorch (float64)")


def data(n_train: int, n_test: int) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(n_train, 1, generator=generator) * 6 - 3
    y = torch.sin(2 * x[:, 0]) + 0.1 * torch.randn(n_train, generator=generator)
    x_test = torch.linspace(-4, 4, n_test)[:, None]
    y_test = torch.sin(2 * x_test[:, 0]) + 0.1 * torch.randn(n_test, generator=generator)
    return x, y, x_test, y_test


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def moments(variant: str, posterior: object, x_test: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Predictive mean and std ``[N]`` of ``variant``."""
    if variant == "bnn closed form":
        prediction = bnn.predict_with_uncertainty(posterior, x_test, rng=0)
        return prediction.mean[:, 0], prediction.std[:, 0]
    if variant == "bnn joint samples":
        samples = posterior.sample_functions(x_test, 100, rng=0)  # type: ignore[attr-defined]
        prediction = posterior.predictive_likelihood.predict(samples)  # type: ignore[attr-defined]
        return prediction.mean[:, 0], prediction.std[:, 0]
    from bnn.infer.gp._models import _exact_linear_algebra, float64_exact_model

    model, likelihood = posterior.gp_model, posterior.gp_likelihood  # type: ignore[attr-defined]
    with torch.no_grad():
        if variant == "GPyTorch (float32)":
            distribution = likelihood(model(x_test))
        else:
            model64 = float64_exact_model(model)
            with _exact_linear_algebra():
                distribution = model64.likelihood(model64(x_test.double()))
        return distribution.mean.float(), distribution.variance.sqrt().float()


def measure(variant: str, n_train: int, n_test: int, repeats: int) -> dict[str, object]:
    """Train, then time ``variant`` (in this process: run it in a fresh one)."""
    torch.set_num_threads(2)
    warnings.filterwarnings("ignore")
    x, y, x_test, y_test = data(n_train, n_test)
    posterior, _ = bnn.infer.gp(
        None,
        (x, y),
        likelihood=bnn.Gaussian(0.3, learn_std=True),
        method="exact",
        epochs=100,
        rng=0,
        progress=False,
    )
    moments(variant, posterior, x_test[:10])  # warm-up; the float64 copy is made here
    before = peak_mb()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        mean, std = moments(variant, posterior, x_test)
        seconds.append(time.perf_counter() - start)
    nll = -torch.distributions.Normal(mean.double(), std.double()).log_prob(y_test.double())
    return {
        "variant": variant,
        "seconds": statistics.median(seconds),
        "peak_mb_above_model": peak_mb() - before,
        "nll": float(nll.mean()),
        "mean": mean.double().tolist(),
        "std": std.double().tolist(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train", type=int, default=1000)
    parser.add_argument("--test", type=int, default=8000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.variant is not None:  # a child process: measure one variant
        print(json.dumps(measure(args.variant, args.train, args.test, args.repeats)))
        return
    rows = []
    for variant in VARIANTS:
        command = [sys.executable, __file__, "--variant", variant]
        command += ["--train", str(args.train), "--test", str(args.test)]
        command += ["--repeats", str(args.repeats)]
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        rows.append(json.loads(output.strip().splitlines()[-1]))
    reference = rows[-1]
    print(f"exact GP, {args.train} training points, {args.test} test points, 2 threads\n")
    print("| | test NLL | max mean error | max std error (rel.) | seconds | MB |")
    print("|---|---:|---:|---:|---:|---:|")
    for row in rows:
        mean_error = max(abs(a - b) for a, b in zip(row["mean"], reference["mean"], strict=True))
        std_error = max(abs(a / b - 1) for a, b in zip(row["std"], reference["std"], strict=True))
        print(
            f"| {row['variant']} | {row['nll']:.6f} | {mean_error:.2e} | {std_error:.2e} "
            f"| {row['seconds']:.2f} | {row['peak_mb_above_model']:.0f} |"
        )


if __name__ == "__main__":
    main()
