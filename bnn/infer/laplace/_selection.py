"""What a Laplace fit selects: parameters, layers, prior precisions."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TypeAlias

import torch
from torch import Tensor, nn

__all__ = [
    "KronLayer",
    "check_precision",
    "kron_layers",
    "layer_groups",
    "select_parameters",
    "whole_linear_layers",
]


def check_precision(value: object, groups: int, reference: Tensor) -> Tensor:
    """``δ`` as a positive finite 0-dim tensor or ``[groups]`` tensor."""
    if isinstance(value, bool) or not isinstance(value, int | float | Sequence | Tensor):
        raise TypeError(f"prior_precision must be a number or one per layer, got {value!r}.")
    tensor = torch.as_tensor(value, dtype=reference.dtype, device=reference.device)
    if tensor.dim() > 1 or (tensor.dim() == 1 and tensor.shape[0] != groups):
        raise ValueError(
            f"prior_precision must be a scalar or have one value per layer ({groups}), got "
            f"shape {tuple(tensor.shape)}."
        )
    if not bool(torch.isfinite(tensor).all()) or not bool((tensor > 0).all()):
        raise ValueError(f"prior_precision must be positive and finite, got {value!r}.")
    return tensor


def select_parameters(model: nn.Module, subset: object) -> list[str]:
    """Selected parameter names in ``named_parameters`` order."""
    parameters = [n for n, p in model.named_parameters() if p.requires_grad]
    if subset == "all":
        chosen = set(parameters)
    elif subset == "last_layer":
        owners = [n for n, m in model.named_modules() if any(True for _ in m.parameters(False))]
        if not owners:
            raise ValueError("the model has no parameters; subset='last_layer' found no layer.")
        last = owners[-1]
        chosen = {
            f"{last}.{n}" if last else n
            for n, _ in dict(model.named_modules())[last].named_parameters(recurse=False)
        }
    elif isinstance(subset, Iterable) and not isinstance(subset, str):
        modules = {id(m): n for n, m in model.named_modules()}
        chosen = set()
        for item in subset:
            if isinstance(item, nn.Module) and id(item) in modules:
                prefix = modules[id(item)]
                chosen |= {f"{prefix}.{n}" if prefix else n for n, _ in item.named_parameters()}
            elif isinstance(item, str):
                chosen |= {n for n in parameters if n == item or n.startswith(f"{item}.")}
    else:
        raise ValueError(
            f"subset must be 'last_layer', 'all' or parameter/module names or modules, got "
            f"{subset!r}."
        )
    names = [n for n in parameters if n in chosen]
    if not names:
        raise ValueError(
            f"no parameter of the model matches subset={subset!r}; name modules as in "
            f"model.named_modules() (e.g. {[n for n, _ in model.named_modules() if n][:3]})."
        )
    return names


def layer_groups(names: Sequence[str], shapes: Sequence[torch.Size]) -> tuple[list[str], Tensor]:
    """Layers (owning module names, in order) and the layer of every flat parameter ``[P]``."""
    owners = [name.rsplit(".", 1)[0] if "." in name else "" for name in names]
    groups = list(dict.fromkeys(owners))
    index = torch.cat(
        [
            torch.full((shape.numel(),), groups.index(owner), dtype=torch.long)
            for owner, shape in zip(owners, shapes, strict=True)
        ]
    )
    return groups, index


def whole_linear_layers(
    model: nn.Module, names: Sequence[str], groups: list[str]
) -> list[nn.Linear] | None:
    """The ``nn.Linear`` layer of every group if each is one, selected whole; else ``None``."""
    modules = dict(model.named_modules())
    layers = []
    for group in groups:
        module = modules[group]
        own = {f"{group}.{n}" if group else n for n, _ in module.named_parameters(recurse=False)}
        if not isinstance(module, nn.Linear) or not own <= set(names):
            return None
        layers.append(module)
    return layers


KronLayer: TypeAlias = nn.Linear | nn.Conv1d | nn.Conv2d
"""A layer ``hessian="kron"`` factors: a linear map, or a convolution (KFAC-expand)."""


def kron_layers(model: nn.Module, names: Sequence[str], groups: list[str]) -> list[KronLayer]:
    """The ``nn.Linear`` / ``nn.Conv1d`` / ``nn.Conv2d`` layer of every group, each selected
    whole (else a ValueError; also for a convolution ``"kron"`` cannot factor)."""
    modules = dict(model.named_modules())
    layers: list[KronLayer] = []
    for group in groups:
        module = modules[group]
        own = {f"{group}.{n}" if group else n for n, _ in module.named_parameters(recurse=False)}
        if not isinstance(module, nn.Linear | nn.Conv1d | nn.Conv2d) or not own <= set(names):
            raise ValueError(
                f"hessian='kron' needs whole nn.Linear, nn.Conv1d or nn.Conv2d layers; "
                f"{group or 'the model'!r} is a {type(module).__name__} (or only part of it is "
                "selected). Use hessian='diag' (any layer) or 'full' (small selections), or "
                "select such layers."
            )
        if isinstance(module, nn.Conv1d | nn.Conv2d) and (
            module.groups != 1 or module.padding_mode != "zeros"
        ):
            raise ValueError(
                f"hessian='kron' factors convolutions with groups=1 and padding_mode='zeros' "
                f"only; {group or 'the model'!r} has groups={module.groups} and "
                f"padding_mode={module.padding_mode!r}. Use hessian='diag' (any layer) or "
                "'full' (small selections)."
            )
        layers.append(module)
    return layers
