"""Argument checks of `bnn.infer.gp`: data, likelihood, options and the exact GP's memory."""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import Tensor, nn

from bnn._checks import check_int, check_positive
from bnn.likelihoods import Bernoulli, Categorical, Gaussian, Likelihood, class_indices

__all__ = [
    "KERNELS",
    "MEANS",
    "METHODS",
    "check_arguments",
    "check_components",
    "check_exact",
    "check_input_shape",
    "check_learned_noise",
    "check_options",
]

KERNELS = ("rbf", "matern12", "matern32", "matern52")
MEANS = ("constant", "zero")
METHODS = ("exact", "svgp")
_EXACT_COPIES = 4  # K, its Cholesky factor, a gradient and a workspace: N×N matrices in flight


def check_arguments(
    model: object,
    data: object,
    likelihood: object,
    method: str,
    kernel: object,
    mean: object,
    num_classes: int | None,
) -> tuple[Tensor, Tensor, int | None]:
    """``(x, y, K)``: ``y`` as float ``[N]``, or as int64 class indices with ``K`` classes."""
    if model is not None and not isinstance(model, nn.Module):
        raise TypeError(f"model must be None or a feature nn.Module, got {type(model).__name__}.")
    if not isinstance(likelihood, Gaussian | Bernoulli | Categorical):
        raise TypeError(
            "likelihood must be bnn.Gaussian (regression), bnn.Bernoulli (binary "
            f"classification) or bnn.Categorical (K classes), got {type(likelihood).__name__}."
        )
    if num_classes is not None and not isinstance(likelihood, Categorical):
        raise ValueError(
            "num_classes is for likelihood=bnn.Categorical() (multi-class classification); "
            f"drop it for {type(likelihood).__name__}."
        )
    for name, value, allowed in (
        ("method", method, METHODS),
        ("kernel", kernel, KERNELS),
        ("mean", mean, MEANS),
    ):
        if isinstance(value, str) and value not in allowed:
            raise ValueError(f"{name} must be one of {allowed}, got {value!r}.")
    if not (
        isinstance(data, tuple) and len(data) == 2 and all(isinstance(t, Tensor) for t in data)
    ):
        raise TypeError("data must be a pair (x, y) of tensors.")
    x, y = data
    if not x.is_floating_point():
        raise TypeError(f"x must be floating point, got {x.dtype}.")
    if x.dim() == 0 or x.shape[0] == 0 or y.shape[:1] != x.shape[:1]:
        raise ValueError(
            f"x has shape {tuple(x.shape)} and y {tuple(y.shape)}; they need the same number "
            "of rows (at least one)."
        )
    if model is None and x.dim() != 2:
        raise ValueError(
            f"a GP on raw inputs needs x of shape [N, D], got {tuple(x.shape)}; flatten x or "
            "pass a feature network as model (deep kernel learning)."
        )
    if isinstance(likelihood, Categorical):
        if not bool(torch.isfinite(x).all()):
            raise ValueError("x contains NaN or inf; clean or impute the data first.")
        labels, classes = _class_labels(y, x.shape[0], num_classes)
        return x, labels, classes
    if y.dim() == 2 and y.shape[1] == 1:
        y = y.squeeze(-1)
    if y.dim() != 1:
        raise ValueError(
            f"y must be [N] or [N, 1] here, got {tuple(y.shape)}; for D independent outputs "
            "pass y [N, D] as tensors or a Dataset (one GP per column), not a DataLoader."
        )
    if not (bool(torch.isfinite(x).all()) and bool(torch.isfinite(y.to(x)).all())):
        raise ValueError("x or y contains NaN or inf; clean or impute the data first.")
    if isinstance(likelihood, Bernoulli) and not bool(((y == 0) | (y == 1)).all()):
        raise ValueError("Bernoulli targets must be 0 or 1.")
    return x, y.to(x.dtype), None


def _class_labels(y: Tensor, n: int, num_classes: int | None) -> tuple[Tensor, int]:
    """Class indices ``[N]`` (int64) and ``K``: ``num_classes``, or the largest label + 1."""
    if num_classes is not None and (
        isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2
    ):
        raise ValueError(
            f"num_classes must be an int >= 2, got {num_classes!r}; for K classes pass "
            "num_classes=K (or None to use the largest label + 1)."
        )
    if y.dim() == 2 and y.shape[1] > 1:
        class_indices(y, n, y.shape[1])  # one-hot or probabilities: refused, naming the fix
    values = y[torch.isfinite(y)] if y.is_floating_point() else y
    largest = int(values.max()) if values.numel() else 0
    # labels up to `largest` pass here; NaN, fractions, negatives and shapes are refused
    labels = class_indices(y, n, max(largest + 1, 2, num_classes or 0))
    if num_classes is not None and largest >= num_classes:
        raise ValueError(
            f"class labels must lie in [0, {num_classes - 1}] for num_classes = {num_classes}, "
            f"got labels up to {largest}; raise num_classes (or pass None: the largest label + "
            "1), or relabel the classes 0 … K−1."
        )
    if num_classes is None and largest < 1:
        raise ValueError(
            "the targets hold a single class (0); a classifier needs at least 2: pass "
            "num_classes=K if classes are missing from the training data."
        )
    return labels, largest + 1 if num_classes is None else num_classes


def check_components(
    gpytorch: Any,
    kernel: object,
    mean: object,
    num_classes: int | None,
    initial: dict[str, float | None],
) -> None:
    """Refuse a kernel or mean that is neither a name nor a GPyTorch module, initial values
    for a kernel object, and a kernel object without one batch entry per class."""
    for name, value, kind in (
        ("kernel", kernel, gpytorch.kernels.Kernel),
        ("mean", mean, gpytorch.means.Mean),
    ):
        if not isinstance(value, str | kind):
            raise TypeError(
                f"{name} must be a name ({KERNELS if name == 'kernel' else MEANS}) or a "
                f"gpytorch.{name}s.{kind.__name__}, got {type(value).__name__}."
            )
    if not isinstance(kernel, str):
        given = [name for name, value in initial.items() if value is not None]
        if given:
            raise ValueError(
                f"{', '.join(given)} initialise the named kernels; set them on your kernel "
                "object instead (e.g. kernel.base_kernel.lengthscale = 0.5)."
            )
    components: tuple[tuple[str, Any], ...] = (("kernel", kernel), ("mean", mean))
    for name, value in components:
        if isinstance(value, str) or num_classes is None:
            continue
        if tuple(value.batch_shape) != (num_classes,):
            raise ValueError(
                f"a {name} object for {num_classes} classes needs one independent copy per "
                f"class: build it with batch_shape=torch.Size([{num_classes}]) (it has "
                f"{tuple(value.batch_shape)})."
            )


def check_options(
    epochs: int,
    num_inducing: int,
    lr: float,
    ngd_lr: float | None,
    jitter: float | None,
    batch_size: int | None,
) -> None:
    """Refuse non-positive training options of ``gp`` (``epochs`` may be 0)."""
    for name, value in (("epochs", epochs), ("num_inducing", num_inducing)):
        check_int(name, value, minimum=0 if name == "epochs" else 1)
    check_positive("lr", lr)
    if ngd_lr is not None:
        check_positive("ngd_lr", ngd_lr)
    if jitter is not None:
        check_positive("jitter", jitter)
    if batch_size is not None:
        check_int("batch_size", batch_size)


def check_exact(x: Tensor, likelihood: Likelihood, max_exact_bytes: int) -> None:
    """An exact GP fits in ``max_exact_bytes`` and has a Gaussian likelihood."""
    n = x.shape[0]
    needed = _EXACT_COPIES * n * n * x.element_size()
    if needed > max_exact_bytes:
        raise ValueError(
            f"an exact GP on N = {n} points needs about {needed / 2**30:.1f} GiB "
            f"({_EXACT_COPIES} dense N×N matrices of {x.dtype}), more than max_exact_bytes "
            f"= {max_exact_bytes / 2**30:.1f} GiB; use method='svgp' (inducing points, "
            "mini-batches) or raise max_exact_bytes."
        )
    if isinstance(likelihood, Bernoulli | Categorical):
        raise ValueError("classification needs method='svgp' (the exact GP is Gaussian).")


def check_input_shape(x: Tensor, input_shape: tuple[int, ...] | None) -> None:
    """Refuse inputs whose shape per row differs from the training inputs'."""
    if input_shape is not None and tuple(x.shape[1:]) != input_shape:
        raise ValueError(
            f"x has shape {tuple(x.shape)}, but the GP was fitted on inputs of shape "
            f"[N, {', '.join(map(str, input_shape))}]; pass inputs with the training data's "
            "features, in the same order."
        )


def check_learned_noise(noise_std: float, y: Tensor, min_noise: float) -> None:
    """Warn when a learned noise sits at its floor or far below the targets' spread."""
    spread = float(y.double().std()) if y.numel() > 1 else 0.0
    at_floor = noise_std**2 <= 1.5 * min_noise
    tiny = spread > 0 and noise_std < 0.01 * spread
    if at_floor or tiny:
        warnings.warn(
            f"the GP learned a noise std of {noise_std:.3g} ({noise_std / spread:.2%} of the "
            f"targets' std {spread:.3g}{', at its floor min_noise' if at_floor else ''}): it "
            "interpolates its training data, and its predictive density spikes at training "
            "inputs (duplicated inputs and rounded targets cause this). Its test "
            "log-likelihood is not to be trusted: fix the noise (bnn.Gaussian(std) without "
            "learn_std) or raise min_noise.",
            RuntimeWarning,
            stacklevel=3,
        )
