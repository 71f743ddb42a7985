"""Classification observation models and the prediction they make.

A classification prediction averages class probabilities over samples; its total entropy
``H[E_s p_s]`` splits into ``expected_entropy = E_s H[p_s]`` (aleatoric) and the mutual
information between the label and the weights (epistemic; Houlsby et al. 2011, "BALD").

=============== ============================ ===================================
likelihood      model output                 target ``y``
=============== ============================ ===================================
``Categorical`` logits ``[N, K]``            int64 class index ``[N]``
``Bernoulli``   logit ``[N]`` or ``[N, 1]``  0/1 float, same shape
=============== ============================ ===================================
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from bnn.likelihoods._base import (
    Likelihood,
    Prediction,
    _check_finite_targets,
    _per_datum,
    align_targets,
    check_finite_samples,
    class_indices,
)

__all__ = ["Bernoulli", "Categorical", "ClassificationPrediction"]


@dataclass(frozen=True)
class ClassificationPrediction(Prediction):
    """Averaged class probabilities over ``S`` function samples.

    Attributes:
        samples: raw model outputs (logits) ``[S, N, ...]``.
        class_probs: per-sample class probabilities ``[S, N, K]``.
        binary: ``True`` for a Bernoulli likelihood; then ``probs`` is ``p(y = 1)`` ``[N]``.
    """

    class_probs: Tensor
    binary: bool = False

    @property
    def probs(self) -> Tensor:
        """Predictive class probabilities ``[N, K]`` (``[N]`` = ``p(y=1)`` when binary)."""
        mean = self.class_probs.mean(0)
        return mean[..., 1] if self.binary else mean

    @property
    def mean(self) -> Tensor:
        """Same as ``probs``."""
        return self.probs

    @property
    def entropy(self) -> Tensor:
        """Entropy of the predictive ``H[E_s p_s]`` ``[N]`` (total uncertainty, nats)."""
        return _entropy(self.class_probs.mean(0))

    @property
    def expected_entropy(self) -> Tensor:
        """``E_s H[p_s]`` ``[N]`` (aleatoric)."""
        return _entropy(self.class_probs).mean(0)

    @property
    def mutual_information(self) -> Tensor:
        """``H[E_s p_s] - E_s H[p_s]`` ``[N]`` (epistemic; ≥ 0)."""
        return (self.entropy - self.expected_entropy).clamp_min(0.0)

    @property
    def epistemic(self) -> Tensor:
        """Mutual information ``[N]``."""
        return self.mutual_information

    @property
    def aleatoric(self) -> Tensor:
        """Expected entropy ``[N]``."""
        return self.expected_entropy

    def log_likelihood(self, y: Tensor) -> Tensor:
        """``log E_s p_s(y)`` per datum ``[N]``; ``y`` holds class indices (0/1 when binary)."""
        mean = self.class_probs.mean(0)
        index = class_indices(y, mean.shape[0], mean.shape[-1]).unsqueeze(-1)
        return torch.log(mean.gather(-1, index).squeeze(-1).clamp_min(1e-45))


def _entropy(probs: Tensor) -> Tensor:
    return -(probs * torch.log(probs.clamp_min(1e-45))).sum(-1)


class Categorical(Likelihood):
    """Softmax over logits ``[N, K]``; targets are class indices ``[N]``."""

    def check_targets(self, output: Tensor, y: Tensor) -> Tensor:
        if output.dim() != 2:
            raise ValueError(
                f"Categorical needs logits of shape [N, K], got {tuple(output.shape)}."
            )
        if not isinstance(y, Tensor) or y.dtype not in (
            torch.int64,
            torch.int32,
            torch.int16,
            torch.uint8,
        ):
            raise TypeError("Categorical targets must be an integer tensor of class indices.")
        if y.shape != output.shape[:1]:
            raise ValueError(
                f"targets have shape {tuple(y.shape)}, expected [N] = {tuple(output.shape[:1])}."
            )
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= output.shape[-1]):
            raise ValueError(f"class indices must lie in [0, {output.shape[-1] - 1}].")
        return y.long()

    def log_density(self, output: Tensor, y: Tensor) -> Tensor:
        return -F.cross_entropy(output, y, reduction="none")

    def predict(self, samples: Tensor) -> ClassificationPrediction:
        check_finite_samples(samples)
        return ClassificationPrediction(samples=samples, class_probs=samples.softmax(-1))


class Bernoulli(Likelihood):
    """Sigmoid of one logit per datum; targets are 0/1 floats of the same shape."""

    def check_targets(self, output: Tensor, y: Tensor) -> Tensor:
        y = align_targets(y, output.shape, "model output")
        _check_finite_targets(y)
        if not bool(((y == 0) | (y == 1)).all()):
            raise ValueError("Bernoulli targets must be 0 or 1.")
        return y.to(output)

    def log_density(self, output: Tensor, y: Tensor) -> Tensor:
        log_density = -F.binary_cross_entropy_with_logits(output, y, reduction="none")
        return _per_datum(log_density)

    def predict(self, samples: Tensor) -> ClassificationPrediction:
        check_finite_samples(samples)
        logits = samples.squeeze(-1) if samples.dim() > 2 and samples.shape[-1] == 1 else samples
        positive = torch.sigmoid(logits)
        class_probs = torch.stack([1.0 - positive, positive], dim=-1)
        return ClassificationPrediction(samples=samples, class_probs=class_probs, binary=True)
