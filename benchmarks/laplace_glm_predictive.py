"""The all-layer Laplace GLM predictive per test point: per-layer factors against per-input
Jacobians, and against laplace-torch, in one run.

    python benchmarks/laplace_glm_predictive.py [--test 4000] [--threads 2]

Networks: MLP 13→200→200→1 (43,201 parameters, Gaussian likelihood) and 13→200→200→10
(45,010 parameters, categorical, probit link), trained 20 epochs on 2,000 random inputs.
For each of ``hessian="kron"`` and ``"diag"`` (all layers, float32) the GLM predictive
``bnn.predict_with_uncertainty(posterior, x)`` of ``--test`` inputs is timed (median of 3):

* ``bnn``: ``J Σ Jᵀ`` from each layer's inputs and output Jacobians (``LaplacePosterior``);
* ``bnn, per-input Jacobians``: the dense reference (``GaussianPosterior.functional_moments``,
  per-input ``[C, P]`` Jacobians times the factor), on 500 inputs;
* ``laplace-torch`` (when installed: ``pip install laplace-torch``, then uninstall
  torchvision): ``Laplace(model, ..., subset_of_weights="all", hessian_structure=...)``,
  ``la(x, pred_type="glm", link_approx="probit")``, same prior precision, on 500 inputs.

Prints milliseconds per test point and the largest relative difference of the predictive
variance between the two ``bnn`` paths; numbers of an idle 2-core machine are in
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

import bnn
from bnn.posterior.gaussian import GaussianPosterior


def trained(outputs: int) -> tuple[nn.Module, torch.Tensor, torch.Tensor, bnn.Likelihood]:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2000, 13, generator=generator)
    with bnn.RNG(0).stream("init"):
        net = nn.Sequential(
            nn.Linear(13, 200), nn.ReLU(), nn.Linear(200, 200), nn.ReLU(), nn.Linear(200, outputs)
        )
    if outputs == 1:
        y = torch.sin(x[:, :1]) + 0.1 * torch.randn(2000, 1, generator=generator)
        likelihood: bnn.Likelihood = bnn.Gaussian(0.1)
    else:
        y = (x[:, :outputs].argmax(-1) + (x[:, -1] > 1).long()) % outputs
        likelihood = bnn.Categorical()
    bnn.fit(net, (x, y), likelihood=likelihood, epochs=20, batch_size=128, rng=0, progress=False)
    return net, x, y, likelihood


def seconds(fn: Callable[[], Any], repeats: int = 3) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def laplace_torch(net: nn.Module, x: torch.Tensor, y: torch.Tensor, hessian: str, outputs: int):
    """laplace-torch's GLM predictive as a function of test inputs, or ``None``."""
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore")
            from laplace import Laplace
    except ImportError:
        return None
    loader = torch.utils.data.DataLoader(
        torch.utils.data.TensorDataset(x, y if outputs > 1 else y), batch_size=256
    )
    la = Laplace(
        net,
        "regression" if outputs == 1 else "classification",
        subset_of_weights="all",
        hessian_structure={"kron": "kron", "diag": "diag"}[hessian],
        prior_precision=1.0,
        sigma_noise=0.1 if outputs == 1 else 1.0,
    )
    la.fit(loader, progress_bar=False)

    def predict(inputs: torch.Tensor) -> None:
        for block in torch.split(inputs, 500):
            la(block, pred_type="glm", link_approx="probit")

    return predict


print = functools.partial(print, flush=True)  # noqa: A001 - rows as they come


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--test", type=int, default=4000)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    x_test = torch.randn(args.test, 13, generator=torch.Generator().manual_seed(1))
    few = x_test[:500]  # for the per-input Jacobians and the peer
    print(f"all-layer Laplace GLM predictive, ms per test point, {args.threads} threads\n")
    print("| network | hessian | bnn | bnn, per-input Jacobians | laplace-torch | max rel. diff. |")
    print("|---|---|---:|---:|---:|---:|")
    for outputs in (1, 10):
        net, x, y, likelihood = trained(outputs)
        for hessian in ("kron", "diag"):
            posterior, _ = bnn.infer.laplace(
                net, (x, y), likelihood=likelihood, subset="all", hessian=hessian, progress=False
            )
            fast = seconds(lambda p=posterior: bnn.predict_with_uncertainty(p, x_test))
            dense = seconds(lambda p=posterior: GaussianPosterior.functional_moments(p, few), 1)
            covariance = posterior.functional_moments(few)[1]
            reference = GaussianPosterior.functional_moments(posterior, few)[1]
            difference = float(((covariance - reference).abs() / reference.abs().max()).max())
            peer = laplace_torch(net, x, y, hessian, outputs)
            peer_ms = (
                "—"
                if peer is None
                else f"{seconds(lambda peer=peer: peer(few), 1) / 500 * 1e3:.2f}"
            )
            print(
                f"| {sum(p.numel() for p in net.parameters()):,} parameters, {outputs} "
                f"output{'s' if outputs > 1 else ''} | {hessian} | "
                f"{fast / args.test * 1e3:.3f} | {dense / 500 * 1e3:.2f} | {peer_ms} "
                f"| {difference:.1e} |"
            )


if __name__ == "__main__":
    main()
