"""The image benchmark's anchors, in one run: plain PyTorch (MAP and a deep ensemble written
directly in torch) and laplace-torch on bnn's MAP weights, beside bnn's own methods.

    python benchmarks/images_vs_peers.py [--train fashion-mnist] [--data-dir DIR]
        [--epochs 10] [--members 5] [--threads 2] [--peer-images 1000] [--seeds K]
        [--sections cost,anchors,laplace,laplace_all] [--train-images N]

Run it in a benchmark environment (laplace-torch is not a dependency:
``pip install laplace-torch``, then ``pip uninstall torchvision``). Without laplace-torch the
PyTorch anchors and bnn's costs still print.

What it measures (the LeNet of ``bnn.apps.images``, seed 0, the benchmark's validation split):

1. **Cost floor.** One epoch of plain PyTorch (Adam, batch 128, the same shuffling cost) against
   one epoch of ``bnn.fit`` on the same network (MAP) and on its ``vi`` version (flipout);
   32 plain forward passes over the 10,000 test images against bnn's 32-sample MC-dropout and
   ``vi`` predictions.
2. **Quality anchors**, on seeds ``0..K-1`` (``--seeds``; each seed's training images and
   validation split are the benchmark's for that seed): the plain-PyTorch MAP network and a
   5-member ensemble trained in plain PyTorch, and laplace-torch's last-layer KFAC with its own
   marglik prior on bnn's MAP of the seed: accuracy, NLL, ECE (15 bins), Brier, AUROC
   (entropy) against the OOD set, a row per seed and mean ± s.e.
3. **laplace-torch on bnn's MAP weights** (``bnn.apps.images`` seed 0's ``map``):
   last-layer KFAC — log marginal likelihood and GLM probit probabilities at one prior
   precision (bnn's marglik optimum), compared with bnn's, on the MAP LeNet and on a copy
   whose last layer has no bias (laplace-torch drops the weight-bias cross-covariance that
   bnn's KFAC keeps, see ``compare_last_layer``); fit + marglik + prediction times;
   all-layer KFAC — fit, and GLM probit prediction time per image on ``--peer-images`` test
   images (bnn also on all 10,000); both methods' quality with their own marglik prior.
"""

from __future__ import annotations

import argparse
import copy
import functools
import math
import statistics
import time
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

import bnn
from bnn.apps.datasets.images import ImageSet, load_image_data, load_images
from bnn.apps.images.evaluation import PeakMemory
from bnn.apps.images.methods import (
    SeedRun,
    laplace_all_trained,
    laplace_trained,
    mc_dropout_trained,
    vi_trained,
)
from bnn.apps.images.network import Settings, lenet
from bnn.evaluate.metrics import accuracy, brier_score, expected_calibration_error, nll
from bnn.evaluate.ood import auroc
from bnn.likelihoods import ClassificationPrediction

print = functools.partial(print, flush=True)  # noqa: A001 - rows as they come


def plain_epochs(net: nn.Module, x: Tensor, y: Tensor, epochs: int, seed: int) -> list[float]:
    """Adam on the mean cross-entropy, batch 128, a fresh permutation per epoch; seconds each."""
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(seed)
    seconds = []
    net.train()
    for _ in range(epochs):
        start = time.perf_counter()
        order = torch.randperm(len(x), generator=generator)
        for batch in order.split(128):
            loss = nn.functional.cross_entropy(net(x[batch]), y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        seconds.append(time.perf_counter() - start)
    net.eval()
    return seconds


def probabilities(nets: list[nn.Module], x: Tensor) -> ClassificationPrediction:
    with torch.no_grad():
        logits = torch.stack([torch.cat([net(b) for b in x.split(1000)]) for net in nets])
    return ClassificationPrediction(samples=logits, class_probs=torch.softmax(logits, -1))


def quality(
    prediction: ClassificationPrediction, y: Tensor, ood: ClassificationPrediction
) -> list[float]:
    """Accuracy (%), NLL, ECE (%), Brier and the entropy's AUROC against ``ood``."""
    return [
        100 * accuracy(prediction, y),
        nll(prediction, y),
        100 * expected_calibration_error(prediction, y),
        brier_score(prediction, y),
        auroc(prediction.entropy, ood.entropy),
    ]


def formatted(scores: list[float]) -> list[str]:
    return [f"{value:.{digits}f}" for value, digits in zip(scores, DIGITS, strict=True)]


def row(*cells: str) -> None:
    print("| " + " | ".join(cells) + " |")


def table(*header: str) -> None:
    row(*header)
    print("|---|" + "---:|" * (len(header) - 1))


def from_probs(probs: Tensor) -> ClassificationPrediction:
    return ClassificationPrediction(
        samples=probs.log().unsqueeze(0), class_probs=probs.unsqueeze(0)
    )


def timed(work: Any) -> tuple[Any, float, float]:
    """``(result, seconds, peak GB)`` of ``work()``."""
    with PeakMemory() as peak:
        start = time.perf_counter()
        result = work()
        seconds = time.perf_counter() - start
    return result, seconds, peak.bytes / 2**30


def laplace_torch(
    net: nn.Module, x: Tensor, y: Tensor, subset: str, prior_precision: float | None
) -> Any:
    """laplace-torch's KFAC Laplace of ``net`` (a copy), or ``None`` without laplace-torch."""
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore")
            from laplace import Laplace
    except ImportError:
        return None
    # laplace-torch sums per-batch Kronecker factors, each normalised by its own batch size:
    # equal to the full-data KFAC only when every batch has the same size
    batch = max(b for b in range(1, 1001) if len(x) % b == 0)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=batch)
    la = Laplace(
        copy.deepcopy(net),
        "classification",
        subset_of_weights=subset,
        hessian_structure="kron",
        prior_precision=1.0 if prior_precision is None else prior_precision,
    )
    la.fit(loader, progress_bar=False)
    if prior_precision is None:
        la.optimize_prior_precision(method="marglik", pred_type="glm", link_approx="probit")
    return la


def peer_probs(la: Any, x: Tensor, block: int = 500) -> Tensor:
    """laplace-torch's GLM probit probabilities of ``x`` in blocks of ``block`` images (its
    all-layer predictive forms each block's full Jacobians: about 70 MB per image for the
    LeNet, so blocks of 500 need over 24 GB)."""
    with torch.no_grad():
        return torch.cat([la(b, pred_type="glm", link_approx="probit") for b in x.split(block)])


def without_last_bias(network: nn.Module) -> nn.Module:
    """A copy of ``network`` whose last linear layer has no bias (the same weights)."""
    copied = copy.deepcopy(network)
    last = copied[-1]
    replacement = nn.Linear(last.in_features, last.out_features, bias=False)
    replacement.weight.data.copy_(last.weight.data)
    copied[-1] = replacement
    return copied


def compare_last_layer(
    posterior: Any,
    network: nn.Module,
    x: Tensor,
    y: Tensor,
    x_test: Tensor,
    delta: float,
    what: str,
) -> None:
    """bnn's and laplace-torch's last-layer KFAC Laplace of ``network`` at prior precision
    ``delta``: the largest difference of the GLM probit probabilities and the log marginal
    likelihoods. laplace-torch (through curvlinops' ``separate_weight_and_bias=True``) factors a
    layer's weight and bias as two Kronecker blocks, dropping their cross-covariance; bnn
    factors ``[W, b]`` as one (KFAC on the homogeneous input ``[a, 1]``, Martens & Grosse
    2015). The two agree exactly when the last layer has no bias."""
    if posterior is None:
        posterior, _ = bnn.infer.laplace(
            copy.deepcopy(network), (x, y), likelihood=bnn.Categorical(), progress=False
        )
    posterior.prior_precision = delta
    ours = bnn.predict_with_uncertainty(posterior, x_test, likelihood=bnn.Categorical()).probs
    peer = laplace_torch(network, x, y, "last_layer", delta)
    theirs = peer_probs(peer, x_test)
    ours_lml = float(posterior.log_marginal_likelihood().detach())
    peer_lml = float(peer.log_marginal_likelihood().detach())
    print(
        f"  {what}: max |p_bnn - p_laplace-torch| {float((ours - theirs).abs().max()):.2e}; "
        f"log marginal likelihood bnn {ours_lml:.4f}, laplace-torch {peer_lml:.4f} "
        f"(relative difference {abs(ours_lml - peer_lml) / abs(peer_lml):.2e})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train", default="fashion-mnist")
    parser.add_argument("--data-dir", type=Path, default=Path("../shared/benchdata/images"))
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--members", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--peer-images", type=int, default=200)
    parser.add_argument(
        "--seeds",
        type=int,
        default=1,
        help="quality anchors on seeds 0..K-1 (each seed's validation split and training "
        "images as the benchmark's seed), mean ± s.e.; the other sections use seed 0",
    )
    parser.add_argument(
        "--sections",
        default="cost,anchors,laplace,laplace_all",
        help="comma-separated parts to run (cost, anchors, laplace, laplace_all)",
    )
    parser.add_argument("--train-images", type=int, default=None, help="a subset (smoke test)")
    args = parser.parse_args()
    if args.seeds < 1:
        parser.error(f"--seeds must be at least 1, got {args.seeds}")
    torch.set_num_threads(args.threads)
    other = {"mnist": "fashion-mnist", "fashion-mnist": "mnist"}[args.train]
    settings = Settings(epochs=args.epochs, train_images=args.train_images)
    data = load_image_data(args.data_dir / args.train, validation=settings.validation, rng=0)
    ood_x = load_images(args.data_dir / other, "test").x
    if args.train_images is not None:
        kept = slice(0, args.train_images)
        data = replace(data, train=ImageSet(data.train.x[kept], data.train.y[kept]))
    (x, y), (x_test, y_test) = (data.train.x, data.train.y), (data.test.x, data.test.y)
    print(f"{args.train} -> {other}: {len(x)} training images, {args.threads} threads\n")

    sections = set(args.sections.split(","))
    if "cost" in sections:
        cost_floor(data, x, y, x_test)
    if "anchors" in sections:
        anchors_over_seeds(args, settings, ood_x)
    run = SeedRun(data, settings, bnn.RNG(0), progress=False)
    if "laplace" in sections:
        last_layer(run, x, y, x_test, y_test, ood_x)
    if "laplace_all" in sections:
        all_layers(run, x, y, x_test, args.peer_images)


def cost_floor(data: Any, x: Tensor, y: Tensor, x_test: Tensor) -> None:
    """Epochs and 32-sample predictions of bnn against plain PyTorch."""
    with bnn.RNG(0).stream("init"):
        plain = lenet()
    plain_seconds = plain_epochs(plain, x, y, 1, seed=0)[0]
    with bnn.RNG(0).stream("init"):
        fitted = lenet()
    _, fit_seconds, _ = timed(
        lambda: bnn.fit(
            fitted, (x, y), likelihood=bnn.Categorical(), epochs=1, lr=1e-3, rng=0, progress=False
        )
    )
    one_epoch = SeedRun(data, Settings(epochs=1), bnn.RNG(0), progress=False)
    vi = vi_trained(one_epoch)
    dropout = mc_dropout_trained(one_epoch)
    with torch.no_grad():
        start = time.perf_counter()
        for _ in range(32):
            torch.cat([plain(b) for b in x_test.split(1000)])
        plain_forward = time.perf_counter() - start
    _, vi_predict, _ = timed(lambda: vi.predict(x_test, bnn.RNG(1)))
    _, dropout_predict, _ = timed(lambda: dropout.predict(x_test, bnn.RNG(1)))
    table("step", "plain PyTorch (s)", "bnn (s)", "ratio")
    for step, floor, ours in (
        ("epoch, MAP (`fit`)", plain_seconds, fit_seconds),
        ("epoch, `vi` (flipout)", plain_seconds, vi.seconds),
        ("epoch, `mc_dropout`", plain_seconds, dropout.seconds),
        ("32 samples x 10,000 test images, `mc_dropout`", plain_forward, dropout_predict),
        ("32 samples x 10,000 test images, `vi`", plain_forward, vi_predict),
    ):
        row(step, f"{floor:.2f}", f"{ours:.2f}", f"{ours / floor:.2f}")


def anchors_over_seeds(args: argparse.Namespace, settings: Settings, ood_x: Tensor) -> None:
    """The quality anchors on seeds ``0..args.seeds-1``: a row per seed, then mean ± s.e."""
    print()
    header = ("anchor", "seed", "accuracy (%)", "NLL", "ECE (%)", "Brier", "AUROC", "train (s)")
    table(*header)
    per_anchor: dict[str, list[list[float]]] = {}
    for seed in range(args.seeds):
        data = load_image_data(
            args.data_dir / args.train, validation=settings.validation, rng=bnn.RNG(seed)
        )
        if args.train_images is not None:
            kept = slice(0, args.train_images)
            data = replace(data, train=ImageSet(data.train.x[kept], data.train.y[kept]))
        for name, scores, seconds in seed_anchors(data, ood_x, settings, args, seed):
            row(name, str(seed), *formatted(scores), seconds)
            per_anchor.setdefault(name, []).append(scores)
    if args.seeds > 1:
        print(f"\nmean ± s.e. over {args.seeds} seeds\n")
        table(*header[:1], *header[2:-1])
        for name, runs in per_anchor.items():
            columns = zip(*runs, strict=True)
            row(name, *(mean_se(c, d) for c, d in zip(columns, DIGITS, strict=True)))


DIGITS = (2, 4, 2, 4, 4)
"""Printed decimals of accuracy (%), NLL, ECE (%), Brier, AUROC."""


def mean_se(values: tuple[float, ...], digits: int) -> str:
    mean = statistics.fmean(values)
    se = statistics.stdev(values) / math.sqrt(len(values))
    return f"{mean:.{digits}f} ± {se:.{digits}f}"


def seed_anchors(
    data: Any, ood_x: Tensor, settings: Settings, args: argparse.Namespace, seed: int
) -> list[tuple[str, list[float], str]]:
    """Seed ``seed``'s anchors: the plain-PyTorch MAP network and deep ensemble (members from
    ``RNG(seed).spawn(m)``; seed 0 is the single-seed run's), and laplace-torch's last-layer
    KFAC with its own marglik prior on bnn's MAP of that seed (when installed)."""
    x, y, x_test, y_test = data.train.x, data.train.y, data.test.x, data.test.y
    members: list[nn.Module] = []
    seconds = []
    for member in range(args.members):
        with bnn.RNG(seed).spawn(member).stream("init"):
            net = lenet()
        seconds.append(sum(plain_epochs(net, x, y, args.epochs, seed=seed * args.members + member)))
        members.append(net)
    first = [members[0]]
    anchors = [
        ("PyTorch MAP", quality(probabilities(first, x_test), y_test, probabilities(first, ood_x))),
        (
            f"PyTorch deep ensemble ({args.members})",
            quality(probabilities(members, x_test), y_test, probabilities(members, ood_x)),
        ),
    ]
    times = [f"{seconds[0]:.1f}", f"{sum(seconds):.1f}"]
    network, _ = SeedRun(data, settings, bnn.RNG(seed), progress=False).map_network()
    la = laplace_torch(network, x, y, "last_layer", None)
    if la is not None:
        test, ood = from_probs(peer_probs(la, x_test)), from_probs(peer_probs(la, ood_x))
        anchors.append(
            ("laplace-torch last-layer KFAC (its marglik prior)", quality(test, y_test, ood))
        )
        times.append("—")
    return [(name, scores, t) for (name, scores), t in zip(anchors, times, strict=True)]


def last_layer(
    run: SeedRun, x: Tensor, y: Tensor, x_test: Tensor, y_test: Tensor, ood_x: Tensor
) -> None:
    """Last-layer KFAC: bnn against laplace-torch on the same MAP weights."""
    network, _ = run.map_network()
    ours, ours_fit, ours_fit_gb = timed(lambda: laplace_trained(run))
    _, ours_predict, _ = timed(lambda: ours.predict(x_test, bnn.RNG(1)))
    delta = ours.extras["prior_precision"]
    la, peer_fit, peer_fit_gb = timed(lambda: laplace_torch(network, x, y, "last_layer", None))
    if la is None:
        print("\nlaplace-torch is not installed: no peer rows.")
        return
    peer_test, peer_predict, _ = timed(lambda: peer_probs(la, x_test))
    print(f"\nlast-layer KFAC at one prior precision, {delta:.4f} (bnn's marglik optimum):")
    compare_last_layer(ours.posterior, network, x, y, x_test, delta, "the MAP LeNet")
    compare_last_layer(
        None, without_last_bias(network), x, y, x_test, delta, "its last bias removed"
    )
    own = float(la.prior_precision.reshape(-1)[0])
    print(f"  laplace-torch's own marglik prior precision: {own:.4f}\n")
    table("last-layer KFAC", "fit + marglik (s)", "predict 10,000 (s)", "peak GB")
    row("bnn", f"{ours_fit:.2f}", f"{ours_predict:.2f}", f"{ours_fit_gb:.2f}")
    row("laplace-torch 0.3", f"{peer_fit:.2f}", f"{peer_predict:.2f}", f"{peer_fit_gb:.2f}")

    print()
    table("method", "accuracy (%)", "NLL", "ECE (%)", "Brier", "AUROC")
    ood_probs = from_probs(peer_probs(la, ood_x))
    row(
        "laplace-torch last-layer KFAC",
        *formatted(quality(from_probs(peer_test), y_test, ood_probs)),
    )


def all_layers(run: SeedRun, x: Tensor, y: Tensor, x_test: Tensor, peer_images: int) -> None:
    """All-layer KFAC GLM probit prediction: bnn against laplace-torch on the same weights."""
    network, _ = run.map_network()
    peer, peer_fit, peer_fit_gb = timed(lambda: laplace_torch(network, x, y, "all", None))
    if peer is None:
        return
    few = x_test[:peer_images]
    _, peer_few, peer_gb = timed(lambda: peer_probs(peer, few, block=25))
    ours, ours_fit, ours_fit_gb = timed(lambda: laplace_all_trained(run))
    _, ours_few, _ = timed(lambda: ours.predict(few, bnn.RNG(1)))
    _, ours_all, ours_gb = timed(lambda: ours.predict(x_test, bnn.RNG(1)))
    print(f"\nall-layer KFAC, GLM probit predictive (ms per image on {len(few)} test images)\n")
    table("all-layer KFAC", "fit + marglik (s)", "ms per image", "10,000 images (s)", "peak GB")
    ms = 1e3 * ours_few / len(few)
    gb = max(ours_fit_gb, ours_gb)
    row("bnn", f"{ours_fit:.1f}", f"{ms:.2f}", f"{ours_all:.1f}", f"{gb:.2f}")
    ms = 1e3 * peer_few / len(few)
    gb = max(peer_fit_gb, peer_gb)
    row(
        "laplace-torch 0.3",
        f"{peer_fit:.1f}",
        f"{ms:.2f}",
        f"({ms * 10:.0f}, from ms)",
        f"{gb:.2f}",
    )


if __name__ == "__main__":
    main()
