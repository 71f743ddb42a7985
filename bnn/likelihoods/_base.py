"""The two base types of an observation model: `Likelihood` and the `Prediction` it makes.

A likelihood does two things: ``log_prob(output, y)`` gives the per-datum log-likelihood used
in training (the ELBO or MAP loss), and ``predict(samples)`` turns ``S`` function samples
``[S, N, ...]`` into a `Prediction` (it owns how samples aggregate). Likelihoods are
``nn.Module``s, so a learned noise level trains with the network.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

__all__ = [
    "Likelihood",
    "Prediction",
    "align_targets",
    "check_finite_samples",
    "class_indices",
    "same_observation_model",
]


@dataclass(frozen=True)
class Prediction:
    """Base class: the raw function samples ``[S, N, ...]`` (model outputs)."""

    samples: Tensor

    @property
    def num_samples(self) -> int:
        """``S``, the number of function samples."""
        return int(self.samples.shape[0])

    def log_likelihood(self, y: Tensor) -> Tensor:
        """Log predictive density of targets ``y`` per datum ``[N]`` (implemented by subclasses)."""
        raise NotImplementedError(f"{type(self).__name__} defines no log predictive density.")


class Likelihood(nn.Module):
    """Base class for observation models."""

    def log_prob(self, output: Tensor, y: Tensor) -> Tensor:
        """Per-datum log-likelihood ``[N]`` of targets ``y`` given one model output ``[N, ...]``.

        Validates ``y`` (shape, dtype, finiteness, support) first; see ``log_density`` for
        the unchecked version used in inner loops.
        """
        return self.log_density(output, self.check_targets(output, y))

    def check_targets(self, output: Tensor, y: Tensor) -> Tensor:
        """Validate ``y`` against ``output``; return it reshaped to the expected shape."""
        raise NotImplementedError

    def log_density(self, output: Tensor, y: Tensor) -> Tensor:
        """Per-datum log-likelihood ``[N]``, unvalidated (``y`` from ``check_targets``)."""
        raise NotImplementedError

    def training_log_prob(self, output: Tensor, y: Tensor) -> Tensor:
        """The per-datum objective ``bnn.fit`` maximises (default: ``log_prob``).

        A likelihood may train with a modified objective (e.g. β-NLL) while every density it
        reports — to samplers, metrics and predictions — stays the model's own.
        """
        return self.log_prob(output, y)

    def training_log_density(self, output: Tensor, y: Tensor) -> Tensor:
        """``training_log_prob`` unvalidated (``y`` from ``check_targets``), for inner loops
        where a data-dependent check cannot run (a ``vmap`` over ensemble members). A
        likelihood that changes ``training_log_prob`` or ``log_prob`` overrides this too."""
        return self.log_density(output, y)

    def predict(self, samples: Tensor) -> Prediction:
        """Aggregate function samples ``[S, N, ...]`` into a predictive distribution."""
        raise NotImplementedError


def same_observation_model(first: Likelihood | None, second: Likelihood | None) -> bool:
    """Whether two likelihoods (or two ``None``: noise-free regression) make the same
    predictions: the same class with equal settings and equal parameters and buffers.

    Example:
        >>> same_observation_model(bnn.Gaussian(0.1), bnn.Gaussian(0.1))
        True
    """
    if first is None or second is None:
        return first is second
    if first is second:
        return True
    if type(first) is not type(second):
        return False
    state, other = first.state_dict(), second.state_dict()
    if state.keys() != other.keys() or not all(
        state[key].shape == other[key].shape
        and bool(torch.equal(state[key].cpu(), other[key].cpu()))  # a CUDA copy is the same
        for key in state
    ):
        return False
    return _settings(first) == _settings(second)


def _settings(likelihood: Likelihood) -> dict[str, object]:
    """A likelihood's plain settings (numbers, strings, flags): what its state does not hold."""
    plain = (bool, int, float, str, type(None))
    return {
        key: value
        for key, value in vars(likelihood).items()
        if not key.startswith("_") and key != "training" and isinstance(value, plain)
    }


def check_finite_samples(samples: Tensor) -> None:
    """Refuse function samples ``[S, N, ...]`` holding NaN or inf before they become a
    predictive (a distribution built on them would fail with the whole tensor printed, or
    score as NaN).

    Raises:
        ValueError: how many values are not finite, and where to look.
    """
    finite = torch.isfinite(samples)
    if bool(finite.all()):
        return
    bad = int((~finite).sum())
    inputs = int((~finite).reshape(finite.shape[0], finite.shape[1], -1).any(-1).any(0).sum())
    raise ValueError(
        f"the function samples hold {bad} NaN or inf values (of {samples.numel()}, at "
        f"{inputs} of {samples.shape[1]} inputs): the posterior's model gives non-finite "
        "outputs. Check its weights (a training that diverged) and the inputs."
    )


def align_targets(y: object, shape: torch.Size, what: str = "prediction") -> Tensor:
    """The one target rule of every likelihood, prediction and metric.

    ``y`` must have the shape of one sample's output (``[N, ...]``); ``[N]`` is also accepted
    where the output is ``[N, 1]``. Anything else (``[N, 2]`` against ``[N, 1]``, ``[N, 1]``
    against ``[N]``) is refused: broadcasting would silently score the wrong pairs.

    Args:
        y: targets.
        shape: the per-sample output shape, ``[N, ...]``.
        what: what ``shape`` belongs to, for the message.

    Returns:
        ``y`` viewed with exactly ``shape``.
    """
    if not isinstance(y, Tensor):
        raise TypeError(f"targets must be a torch.Tensor, got {type(y).__name__}.")
    if y.shape == shape:
        return y
    if len(shape) >= 1 and shape[-1] == 1 and y.shape == shape[:-1]:
        return y.unsqueeze(-1)
    raise ValueError(
        f"targets have shape {tuple(y.shape)} but the {what} has shape {tuple(shape)}; "
        "reshape y to match (broadcasting here would be silently wrong)."
    )


def class_indices(y: object, num_inputs: int, num_classes: int) -> Tensor:
    """Class-index targets ``[N]`` (``int64``) for ``num_inputs`` predictions of ``num_classes``.

    Accepts integer tensors ``[N]`` (or ``[N, 1]``) and floats holding whole numbers (0/1 labels
    of a binary classifier). One-hot or probability targets ``[N, K]`` are refused with the fix.
    """
    if not isinstance(y, Tensor):
        raise TypeError(f"targets must be a torch.Tensor of class indices, got {type(y).__name__}.")
    if y.dim() == 2 and y.shape == (num_inputs, num_classes) and num_classes > 1:
        raise ValueError(
            f"targets have shape {tuple(y.shape)}, which looks one-hot; pass class indices of "
            "shape [N], e.g. y.argmax(-1)."
        )
    labels = align_targets(y, torch.Size([num_inputs, 1]), "prediction's labels").squeeze(-1)
    if labels.is_floating_point():
        _check_finite_targets(labels)
        if not bool((labels == labels.round()).all()):
            raise ValueError("class labels must be whole numbers (class indices, 0/1 if binary).")
    elif labels.dtype == torch.bool or labels.is_complex():
        labels = labels.to(torch.int64)
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise ValueError(
            f"class labels must lie in [0, {num_classes - 1}], got values in "
            f"[{int(labels.min())}, {int(labels.max())}]."
        )
    return labels.long()


def _check_finite_targets(y: Tensor) -> None:
    if y.is_floating_point() and not bool(torch.isfinite(y).all()):
        raise ValueError("targets contain NaN or inf; remove or impute those rows first.")


def _per_datum(values: Tensor) -> Tensor:
    return values.reshape(values.shape[0], -1).sum(-1) if values.dim() > 1 else values
