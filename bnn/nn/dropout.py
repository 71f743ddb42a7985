"""MC dropout: dropout kept on at prediction time as approximate Bayesian inference.

Gal & Ghahramani (2016) show that a network trained with dropout and evaluated with dropout
still on draws from an approximate posterior over functions. ``MCDropout`` wraps a model:

* in training mode it is the model itself (dropout on, BatchNorm updating);
* in eval mode only the dropout layers stay stochastic, everything else (BatchNorm running
  statistics, etc.) is in eval mode.

``add_dropout=p`` adds dropout of rate ``p`` in front of every ``nn.Linear`` of a model that has
none (as in the UCI experiments of Gal & Ghahramani).

For prediction, ``bnn.posterior`` draws every dropout mask up front and evaluates all
samples in one ``vmap``-ed call (``mask_context``), so the vectorised predictive equals a loop
over the same masks sample for sample.

Example:
    >>> net = nn.Sequential(nn.Linear(1, 50), nn.ReLU(), nn.Dropout(0.1), nn.Linear(50, 1))
    >>> mc = bnn.MCDropout(net).eval()
    >>> prediction = bnn.predict_with_uncertainty(mc, torch.randn(8, 1), num_samples=50)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from bnn.random.draws import bernoulli_mask

__all__ = ["MCDropout", "dropout_layers"]

SUPPORTED = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d)
UNSUPPORTED = (nn.AlphaDropout, nn.FeatureAlphaDropout)


def dropout_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The dropout layers of ``model`` (``nn.Dropout`` and channel-wise ``nn.DropoutNd``)."""
    found: list[tuple[str, nn.Module]] = []
    for name, module in model.named_modules():
        if isinstance(module, UNSUPPORTED):
            raise TypeError(
                f"{name} is {type(module).__name__}; MCDropout supports nn.Dropout and "
                "nn.Dropout1d/2d/3d. Replace it with nn.Dropout."
            )
        if isinstance(module, SUPPORTED):
            found.append((name, module))
    return found


class MCDropout(nn.Module):
    """Keep dropout stochastic in eval mode; optionally add dropout before every ``nn.Linear``.

    Args:
        model: the network.
        add_dropout: if given, a dropout rate ``p`` in [0, 1) inserted in front of each
            ``nn.Linear`` (the model's state-dict keys do not change).

    Raises:
        ValueError: if the model has no dropout layer and ``add_dropout`` is not given, or if a
            dropout rate is invalid.

    Shapes: as ``model``.
    """

    def __init__(self, model: nn.Module, *, add_dropout: float | None = None) -> None:
        super().__init__()
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}.")
        self.model = model
        self.added = nn.ModuleList()
        self._handles: list[RemovableHandle] = []
        if add_dropout is not None:
            self._add_dropout(add_dropout)
        self._layers = [module for _, module in dropout_layers(self)]
        if not self._layers:
            raise ValueError(
                "MCDropout: the model has no dropout layer, so predictions would not be random. "
                "Add nn.Dropout to the model or pass add_dropout=p (e.g. 0.1)."
            )
        for module in self._layers:
            rate = float(module.p)  # type: ignore[arg-type]
            if not 0.0 <= rate < 1.0:
                raise ValueError(f"dropout rate must be in [0, 1), got {rate}.")
        self._fixed_masks = False

    @property
    def rates(self) -> list[float]:
        """The current dropout rate of every dropout layer, in model order."""
        return [float(layer.p) for layer in self._layers]  # type: ignore[arg-type]

    def _add_dropout(self, rate: float) -> None:
        if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0.0 < rate < 1.0:
            raise ValueError(f"add_dropout must be a rate in (0, 1), got {rate!r}.")
        linears = [m for m in self.model.modules() if isinstance(m, nn.Linear)]
        if not linears:
            raise ValueError("add_dropout needs nn.Linear layers to put dropout in front of.")
        for linear in linears:
            dropout = nn.Dropout(float(rate))
            self.added.append(dropout)
            self._handles.append(linear.register_forward_pre_hook(_call_before(dropout)))

    def forward(self, x: Tensor) -> Tensor:
        if self.training:
            return self.model(x)  # type: ignore[no-any-return]
        with self._dropout_only():
            return self.model(x)  # type: ignore[no-any-return]

    @contextlib.contextmanager
    def _dropout_only(self) -> Iterator[None]:
        modes = [(m, m.training) for m in self.model.modules()]
        self.model.eval()
        for layer in self._layers:
            layer.train(not self._fixed_masks)  # with fixed masks the layer is an identity
        try:
            yield
        finally:
            for module, mode in modes:
                module.training = mode

    def mask_shapes(self, x: Tensor) -> list[tuple[int, ...]]:
        """Shape of each dropout layer's mask for input ``x`` (one probe forward, no grad)."""
        shapes: dict[int, list[tuple[int, ...]]] = {i: [] for i in range(len(self._layers))}

        def recorder(index: int) -> Any:
            def record(module: nn.Module, inputs: tuple[Any, ...], _: Any) -> None:
                shapes[index].append(_mask_shape(module, inputs[0]))

            return record

        handles = [layer.register_forward_hook(recorder(i)) for i, layer in enumerate(self._layers)]
        try:
            with torch.no_grad(), self.identity_dropout():
                self.model(x)
        except RuntimeError as error:
            raise ValueError(
                f"the model failed on x of shape {tuple(x.shape)}: {error}. Check that x has "
                "the feature dimensions the model expects."
            ) from error
        finally:
            for handle in handles:
                handle.remove()
        if any(len(found) != 1 for found in shapes.values()):
            raise RuntimeError(
                "a dropout layer ran more than once or not at all in one forward pass; "
                "vectorised MC dropout needs each dropout layer used exactly once per forward."
            )
        return [shapes[i][0] for i in range(len(self._layers))]

    def sample_masks(
        self, x: Tensor, num_samples: int, shapes: list[tuple[int, ...]] | None = None
    ) -> list[Tensor]:
        """Scaled Bernoulli masks ``[S, *mask_shape]`` per layer (global generator).

        ``shapes`` (from ``mask_shapes``) saves the probe forward when already known.
        """
        masks = []
        shapes = self.mask_shapes(x) if shapes is None else shapes
        for layer, shape in zip(self._layers, shapes, strict=True):
            keep = 1.0 - float(layer.p)  # type: ignore[arg-type]
            mask = bernoulli_mask((num_samples, *shape), keep, dtype=x.dtype, device=x.device)
            masks.append(mask)
        return masks

    @contextlib.contextmanager
    def identity_dropout(self) -> Iterator[None]:
        """Inside the block, the wrapper is the model in eval mode with dropout switched off."""
        self._fixed_masks = True
        try:
            with self._dropout_only():
                yield
        finally:
            self._fixed_masks = False

    @contextlib.contextmanager
    def mask_context(self, masks: list[Tensor], *, overwrite: bool = False) -> Iterator[None]:
        """Inside the block, dropout layers multiply by the given masks instead of sampling.

        ``overwrite=True`` lets each layer write its output into its mask where the two have
        the same shape and dtype and no gradient is recorded (no new buffer of the mask's
        size); the masks must then be used for one forward pass only.
        """
        handles = [
            layer.register_forward_hook(_multiply_by(mask, overwrite))
            for layer, mask in zip(self._layers, masks, strict=True)
        ]
        try:
            with self.identity_dropout():
                yield
        finally:
            for handle in handles:
                handle.remove()


def _mask_shape(module: nn.Module, activation: Tensor) -> tuple[int, ...]:
    if isinstance(module, nn.Dropout):
        return tuple(activation.shape)
    # Dropout1d/2d/3d zero whole channels: one mask value per (example, channel).
    spatial: int = {nn.Dropout1d: 1, nn.Dropout2d: 2, nn.Dropout3d: 3}[type(module)]  # type: ignore[index]
    keep = activation.dim() - spatial
    return (*activation.shape[:keep], *([1] * spatial))


def _call_before(dropout: nn.Module) -> Any:
    def hook(_module: nn.Module, inputs: tuple[Any, ...]) -> tuple[Any, ...]:
        return (dropout(inputs[0]), *inputs[1:])

    return hook


def _multiply_by(mask: Tensor, overwrite: bool) -> Any:
    def hook(_module: nn.Module, _inputs: tuple[Any, ...], output: Tensor) -> Tensor:
        if (
            overwrite
            and not (torch.is_grad_enabled() and output.requires_grad)
            and output.shape == mask.shape
            and output.dtype == mask.dtype
        ):
            return mask.mul_(output)  # the same values as output * mask
        return output * mask

    return hook
