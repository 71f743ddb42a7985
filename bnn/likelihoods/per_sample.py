"""One observation model per function sample: the predictive of members with their own noise.

Deep-ensemble members trained with a learnable likelihood (``Gaussian(learn_std=True)``) each
learn a noise scale; their predictive is the mixture ``(1/M) Σ_m N(f_m(x), σ_m²)``, which no
single likelihood describes. `PerSampleLikelihood` holds the members' likelihoods in order and
turns the ``M`` member outputs into that mixture.

Example:
    >>> combined = PerSampleLikelihood([bnn.Gaussian(0.1), bnn.Gaussian(0.3)])
    >>> combined.predict(torch.zeros(2, 5, 1)).std.shape
    torch.Size([5, 1])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
from torch import Tensor, nn

from bnn.likelihoods._base import Likelihood, Prediction
from bnn.likelihoods.regression_prediction import RegressionPrediction

__all__ = ["PerSampleLikelihood"]


class PerSampleLikelihood(Likelihood):
    """Likelihood ``m`` reads function sample ``m``; the prediction is their equal mixture.

    Args:
        likelihoods: one per function sample, in the order the samples come.

    It only aggregates predictions: training a network needs one likelihood per member.
    """

    def __init__(self, likelihoods: Sequence[Likelihood]) -> None:
        super().__init__()
        if not likelihoods or not all(isinstance(lk, Likelihood) for lk in likelihoods):
            raise ValueError("PerSampleLikelihood needs a non-empty list of bnn Likelihoods.")
        self.parts = nn.ModuleList(likelihoods)

    def check_targets(self, output: Tensor, y: Tensor) -> Tensor:  # noqa: ARG002
        raise TypeError(
            "a PerSampleLikelihood only turns function samples into a prediction; train each "
            "member with its own likelihood."
        )

    def log_density(self, output: Tensor, y: Tensor) -> Tensor:
        return self.check_targets(output, y)

    def predict(self, samples: Tensor) -> Prediction:
        """The mixture of each sample's own predictive; ``samples`` ``[M, N, ...]``."""
        parts = cast(list[Likelihood], list(self.parts))
        if samples.shape[0] != len(parts):
            raise ValueError(
                f"{samples.shape[0]} function samples for {len(parts)} per-sample likelihoods; "
                f"predict with num_samples >= {len(parts)} so that every member is used."
            )
        predictions = [lk.predict(samples[m : m + 1]) for m, lk in enumerate(parts)]
        if not all(isinstance(p, RegressionPrediction) for p in predictions):
            return parts[0].predict(samples)
        regression = cast(list[RegressionPrediction], predictions)
        weights = None
        if any(p.weights is not None for p in regression):
            weights = torch.cat([p.component_weights / len(regression) for p in regression])
        return RegressionPrediction(
            samples=samples,
            loc=torch.cat([p.loc for p in regression]),
            scale=torch.cat([p.scale.expand_as(p.loc) for p in regression]),
            weights=weights,
        )
