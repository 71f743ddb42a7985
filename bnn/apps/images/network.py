"""The benchmark's network and settings: the LeNet-5-style CNN of Laplace Redux.

``conv 5×5 (6) → ReLU → max-pool 2 → conv 5×5 (16) → ReLU → max-pool 2 → linear 120 → ReLU →
linear 84 → ReLU → linear K`` (44,426 parameters for 28×28 grey images and K = 10), the LeNet
of Daxberger et al. (2021), "Laplace Redux", for their MNIST experiments. MC dropout puts a
dropout layer in front of each hidden linear layer and the output layer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

__all__ = ["METHODS", "Settings", "lenet"]

METHODS = (
    "map",
    "temperature",
    "mc_dropout",
    "ensemble",
    "vi",
    "laplace",
    "laplace_all",
    "swag",
    "multiswag",
    "sghmc",
)
"""Every method of the image benchmark, in the order they run."""


@dataclass(frozen=True)
class Settings:
    """The benchmark's defaults (the same for every data set).

    Attributes:
        epochs: training epochs of every network trained from scratch (Adam, ``lr``).
        batch_size, lr: mini-batch size and Adam's learning rate.
        dropout: MC dropout's rate.
        ensemble_members: members of ``ensemble``.
        multiswag_runs: ensemble members MultiSWAG continues with SWAG, the first ones
            (``None``: every member, so that MultiSWAG and the ensemble mix as many modes).
        vi_estimator: gradient estimator of the Bayesian conv/linear layers.
        num_samples: function samples of every sampled prediction.
        swag_epochs, swag_lr: SGD epochs (one model collected per epoch) and step of SWAG.
        sghmc_epochs, sghmc_cycles: length and cycles of the cyclical SGHMC chain.
        sghmc_lr: SGHMC's peak step ``ε`` times the training-set size (``ε·N``: the step on
            the mean loss).
        validation: training images held out for temperature scaling and model choice.
        temperature_on_top: also report every method with a temperature fitted on its
            predictive (rows ``"<method>+T"``): the temperatures are fitted on the first half of
            the validation split and every method is chosen on the second half (``temperature``
            too: it is ``map+T``).
        pooled_temperature: with ``temperature_on_top``, temper each method's averaged
            predictive (pool, then calibrate: `bnn.evaluate.pooled_temperature_scale`) instead
            of each function sample's logits (`bnn.evaluate.temperature_scale`).
        train_images: train on the first this many of the remaining images (``None``: all).
        shift_images: test images rotated at every angle (the first ones of the test set).
        angles: rotation angles in degrees.
    """

    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    dropout: float = 0.1
    ensemble_members: int = 5
    multiswag_runs: int | None = None
    vi_estimator: str = "flipout"
    num_samples: int = 32
    swag_epochs: int = 10
    swag_lr: float = 1e-2
    sghmc_epochs: int = 8
    sghmc_lr: float = 1e-2
    sghmc_cycles: int = 4
    validation: int = 5000
    temperature_on_top: bool = False
    pooled_temperature: bool = False
    train_images: int | None = None
    shift_images: int = 2000
    angles: tuple[int, ...] = tuple(range(0, 181, 15))

    def __post_init__(self) -> None:
        runs = self.multiswag_runs
        if runs is not None and not 1 <= runs <= self.ensemble_members:
            raise ValueError(
                f"multiswag_runs must be in [1, ensemble_members = {self.ensemble_members}] "
                f"(MultiSWAG continues ensemble members) or None for all, got {runs}."
            )


def lenet(
    num_classes: int = 10,
    *,
    image_size: int = 28,
    dropout: float | None = None,
    device: torch.device | str | None = None,
) -> nn.Sequential:
    """The LeNet-5-style CNN for ``[N, 1, image_size, image_size]`` images.

    Args:
        num_classes: outputs ``K`` (logits).
        image_size: height = width of the input images (≥ 16).
        dropout: a dropout rate put in front of each linear layer (MC dropout), or ``None``.
        device: where the parameters live (``None``: the CPU).
    """
    side = ((image_size - 4) // 2 - 4) // 2  # two valid 5×5 convolutions, two 2×2 pools
    if side < 1:
        raise ValueError(f"image_size must be at least 16 for LeNet, got {image_size}.")

    def linear(inputs: int, outputs: int) -> list[nn.Module]:
        layer: list[nn.Module] = [nn.Linear(inputs, outputs)]
        return layer if dropout is None else [nn.Dropout(dropout), *layer]

    network = nn.Sequential(
        nn.Conv2d(1, 6, 5),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        *linear(16 * side * side, 120),
        nn.ReLU(),
        *linear(120, 84),
        nn.ReLU(),
        *linear(84, num_classes),
    )
    return network if device is None else network.to(device)
