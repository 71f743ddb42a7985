"""Distribution shift: how a classifier's accuracy and calibration degrade as inputs rotate.

`rotate` turns images by an angle (bilinear, zero fill, no torchvision); `shift_curve`
predicts a test set at each angle and records accuracy, NLL, ECE, Brier and mean entropy —
the rotated-MNIST protocol of Ovadia et al. (2019), "Can you trust your model's uncertainty?".

Example:
    >>> curve = shift_curve(posterior, x_test, y_test, angles=range(0, 181, 15))  # doctest: +SKIP
    >>> curve.accuracy[-1], curve.ece[-1]  # doctest: +SKIP
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

import torch
from torch import Tensor

from bnn._progress import progress_bar
from bnn.evaluate.metrics import accuracy, brier_score, expected_calibration_error, nll
from bnn.likelihoods import ClassificationPrediction, Likelihood
from bnn.predict import predict_with_uncertainty
from bnn.random.default import RNGLike, resolve_rng

__all__ = ["ShiftCurve", "rotate", "shift_curve"]


def rotate(images: Tensor, degrees: float) -> Tensor:
    """Rotate images counter-clockwise by ``degrees`` about their centre.

    Bilinear interpolation; pixels that come from outside the image are 0 (the background of
    MNIST-style data). ``rotate(x, 90)`` equals ``torch.rot90(x, 1, dims=(-2, -1))`` for square
    images.

    Args:
        images: ``[N, C, H, W]`` floating-point images.
        degrees: the angle; any real number.

    Returns:
        ``[N, C, H, W]``, same dtype and device.
    """
    if not isinstance(images, Tensor) or images.ndim != 4 or not images.is_floating_point():
        raise ValueError(
            "images must be a floating-point tensor [N, C, H, W], got "
            f"{getattr(images, 'dtype', type(images).__name__)} "
            f"{tuple(getattr(images, 'shape', ()))}."
        )
    if isinstance(degrees, bool) or not isinstance(degrees, float | int):
        raise TypeError(f"degrees must be a number, got {degrees!r}.")
    if not math.isfinite(degrees):
        raise ValueError(f"degrees must be finite, got {degrees!r}.")
    if degrees % 360 == 0:
        return images.clone()
    radians = math.radians(degrees)
    cos, sin = math.cos(radians), math.sin(radians)
    height, width = images.shape[-2:]
    # The grid maps each output pixel to the input position it reads (normalised coordinates,
    # x to the right, y downwards): the inverse rotation, with the aspect ratio undone.
    theta = torch.tensor(
        [[cos, -sin * height / width, 0.0], [sin * width / height, cos, 0.0]],
        dtype=images.dtype,
        device=images.device,
    )
    grid = torch.nn.functional.affine_grid(
        theta.expand(images.shape[0], 2, 3), list(images.shape), align_corners=False
    )
    return torch.nn.functional.grid_sample(
        images, grid, mode="bilinear", padding_mode="zeros", align_corners=False
    )


@dataclass(frozen=True)
class ShiftCurve:
    """Metrics of one posterior's predictions at each shift intensity (angle).

    Attributes:
        angles: the rotation angles (degrees).
        accuracy, nll, ece, brier, entropy: one value per angle (``ece`` with 15 bins;
            ``entropy`` is the mean predictive entropy in nats).
    """

    angles: list[float]
    accuracy: list[float] = field(default_factory=list)
    nll: list[float] = field(default_factory=list)
    ece: list[float] = field(default_factory=list)
    brier: list[float] = field(default_factory=list)
    entropy: list[float] = field(default_factory=list)

    def as_dict(self) -> dict[str, list[float]]:
        return dict(self.__dict__)


def shift_curve(
    posterior: object,
    x: Tensor,
    y: Tensor,
    *,
    angles: Iterable[float] = range(0, 181, 15),
    likelihood: Likelihood | None = None,
    num_samples: int = 32,
    rng: RNGLike = None,
    memory_budget: int | None = None,
    progress: bool = True,
) -> ShiftCurve:
    """Predict ``x`` rotated by each angle; accuracy, NLL, ECE, Brier and entropy per angle.

    Args:
        posterior: anything `bnn.predict_with_uncertainty` accepts (classification).
        x: test images ``[N, C, H, W]``.
        y: labels ``[N]``.
        angles: rotation angles in degrees (default 0, 15, ..., 180).
        likelihood: passed to `predict_with_uncertainty` (a `Categorical` for a classifier).
        num_samples: function samples per prediction.
        memory_budget: passed to `predict_with_uncertainty`.
        progress: show a tqdm bar over the angles.
        rng: randomness of the predictions; each angle draws from its own child
            (``rng.spawn(f"angle {i}")``), so adding angles leaves the others unchanged.

    Returns:
        A `ShiftCurve`.
    """
    angles = [float(angle) for angle in angles]
    if not angles:
        raise ValueError("angles is empty: give at least one rotation angle.")
    base = resolve_rng(rng)
    curve = ShiftCurve(angles=angles)
    for index, angle in progress_bar(list(enumerate(angles)), desc="angles", disable=not progress):
        prediction = predict_with_uncertainty(
            posterior,
            rotate(x, angle),
            num_samples=num_samples,
            likelihood=likelihood,
            rng=base.spawn(f"angle {index}"),
            memory_budget=memory_budget,
        )
        if not isinstance(prediction, ClassificationPrediction):
            raise TypeError(
                "shift_curve needs a classification predictive; pass a Categorical likelihood."
            )
        curve.accuracy.append(accuracy(prediction, y))
        curve.nll.append(nll(prediction, y))
        curve.ece.append(expected_calibration_error(prediction, y))
        curve.brier.append(brier_score(prediction, y))
        curve.entropy.append(float(prediction.entropy.mean()))
    return curve
