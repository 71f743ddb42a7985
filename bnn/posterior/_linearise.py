"""Per-input Jacobians of a network's outputs with respect to some of its parameters.

``output_jacobians`` is the one place where ``bnn`` differentiates network outputs with
respect to weights (``torch.func.vmap`` over inputs of ``torch.func.jacrev``), for the
generalised Gauss-Newton curvature of Laplace and the linearised (GLM) predictive.

Example:
    >>> outputs, jacobian = output_jacobians(net, ["2.weight", "2.bias"], x, 2**26)
    >>> jacobian.shape      # [N, C, P]: C = outputs per input, P = selected parameters
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch import Tensor, nn
from torch.func import functional_call, jacrev, vmap

from bnn.posterior._evaluate import eval_mode

__all__ = [
    "flatten_parameters",
    "jacobian_chunks",
    "output_jacobians",
    "unflatten_parameters",
]


def flatten_parameters(values: dict[str, Tensor], names: Sequence[str], leading: int) -> Tensor:
    """Concatenate ``values[name]`` ``[*lead, *shape]`` over ``names`` into ``[*lead, P]``."""
    return torch.cat([values[name].flatten(leading) for name in names], dim=-1)


def unflatten_parameters(
    flat: Tensor, names: Sequence[str], shapes: Sequence[torch.Size]
) -> dict[str, Tensor]:
    """Split ``[*lead, P]`` into ``{name: [*lead, *shape]}`` (the inverse of ``flatten``)."""
    sizes = [int(torch.Size(shape).numel()) for shape in shapes]
    parts = torch.split(flat, sizes, dim=-1)
    return {
        name: part.reshape(*flat.shape[:-1], *shape)
        for name, part, shape in zip(names, parts, shapes, strict=True)
    }


def output_jacobians(
    model: nn.Module,
    names: Sequence[str],
    x: Tensor,
    memory_budget: int,
    at: dict[str, Tensor] | None = None,
) -> tuple[Tensor, Tensor]:
    """Outputs and Jacobians ``∂f(x_n)/∂θ`` of every input, in chunks under a memory budget.

    The model runs in eval mode, one input at a time inside ``vmap`` (so it must treat
    examples independently, as any network without batch-coupling layers does in eval mode).

    Args:
        model: the network.
        names: the parameters ``θ`` to differentiate (``named_parameters`` names, flat order).
        x: inputs ``[N, ...]``.
        memory_budget: bytes the Jacobian of one chunk of inputs may use.
        at: values of the selected parameters to linearise at (default: the model's own).

    Returns:
        ``(outputs [N, *out], jacobian [N, C, P])`` with ``C = prod(out)`` and ``P`` the
        selected parameters' total size.
    """
    parts = list(jacobian_chunks(model, names, x, memory_budget, at))
    return torch.cat([o for o, _ in parts]), torch.cat([j for _, j in parts])


def jacobian_chunks(
    model: nn.Module,
    names: Sequence[str],
    x: Tensor,
    memory_budget: int,
    at: dict[str, Tensor] | None = None,
) -> Iterator[tuple[Tensor, Tensor]]:
    """``output_jacobians`` one chunk of inputs at a time: ``(outputs, jacobian [n, C, P])``.

    For sums over the data (the GGN), so that only one chunk's Jacobian is ever held.
    """
    all_parameters = dict(model.named_parameters())
    selected = {name: all_parameters[name].detach() for name in names}
    if at is not None:
        selected = {name: at[name].detach() for name in names}
    size = sum(p.numel() for p in selected.values())

    frozen = {n: p.detach() for n, p in all_parameters.items() if n not in selected}

    def one_input(params: dict[str, Tensor], xi: Tensor) -> tuple[Tensor, Tensor]:
        output = functional_call(model, {**frozen, **params}, (xi.unsqueeze(0),)).squeeze(0)
        return output.reshape(-1), output

    jacobian_fn = vmap(jacrev(one_input, has_aux=True), in_dims=(None, 0))
    with eval_mode(model), torch.no_grad():
        probe = functional_call(model, selected, (x[:1],))
    classes = max(1, probe[0].numel())
    per_input = classes * size * probe.element_size()
    chunk = max(1, min(x.shape[0], memory_budget // max(per_input, 1)))
    for block in torch.split(x, chunk):
        with eval_mode(model):
            jacobian, output = jacobian_fn(selected, block)
        yield output.detach(), flatten_parameters(jacobian, names, 2).detach()
