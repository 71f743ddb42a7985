"""Generalised Gauss-Newton curvature of a network's log-likelihood, in three structures.

For outputs ``f_n = f(x_n, θ)`` and per-datum Jacobians ``J_n = ∂f_n/∂θ`` ``[C, P]``, the GGN
is ``Σ_n J_nᵀ H_n J_n`` with ``H_n = -∂² log p(y_n | f_n)/∂f²``: ``I/σ²`` for a Gaussian,
``diag(p) − p pᵀ`` for a softmax (where it equals the Fisher). With a square root
``H_n = L_n L_nᵀ`` and ``V_n = L_nᵀ J_n``:

* ``"full"``: ``Σ_n V_nᵀ V_n`` ``[P, P]`` — exact, from ``torch.func`` Jacobians;
* ``"diag"``: ``Σ_n (V_n ∘ V_n)ᵀ 1`` ``[P]`` — the exact diagonal;
* ``"kron"``: per ``nn.Linear`` layer with inputs ``ã = [a, 1]`` and output Jacobians
  ``g_n = ∂f_n/∂s_n`` ``[C, out]``: ``A ⊗ G`` with ``A = Σ_n ã ãᵀ`` and
  ``G = Σ_n g_nᵀ H_n g_n / N`` (KFAC, Martens & Grosse 2015; Ritter et al. 2018) — exact for
  one datum and for a single linear layer under a Gaussian likelihood.

  An ``nn.Conv1d`` / ``nn.Conv2d`` layer (``groups=1``, ``padding_mode="zeros"``) is the
  linear map ``W`` ``[C_out, C_in·k]`` (``k`` kernel positions; ``weight.reshape(C_out, -1)``,
  the bias last) applied at each of its ``R`` output locations ``r`` to the input patch
  ``ã_{n,r} = [a_{n,r}, 1]`` (``torch.nn.functional.unfold``). KFAC-expand (Grosse & Martens
  2016; Eschenhagen et al. 2023) treats every location as a datum:
  ``A = Σ_n Σ_r ã_{n,r} ã_{n,r}ᵀ / R`` and ``G = Σ_n Σ_r g_{n,r}ᵀ H_n g_{n,r} / N`` with
  ``g_{n,r} = ∂f_n/∂s_{n,r}`` ``[C, C_out]``, so ``A ⊗ G`` is the average over the ``N·R``
  location-data of ``Σ_{n,r}`` outer products, as the ``nn.Linear`` case is over ``N``
  (``R = 1`` gives that case exactly). It drops the cross-location terms
  ``g_{n,r}ᵀ H_n g_{n,r'}`` (``r ≠ r'``) of the exact block and factorises the rest, so it is
  exact when those vanish and ``g_{n,r}ᵀ H_n g_{n,r}`` is the same for every datum and
  location: e.g. a convolution whose outputs are the network's outputs, under a Gaussian
  likelihood (``g_{n,r}`` then selects location ``r``'s outputs).

Gaussian curvature is computed at unit noise; the caller scales it by ``1/σ²``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, jacrev, vmap

from bnn.infer.laplace._selection import KronLayer
from bnn.likelihoods import Categorical, Likelihood
from bnn.posterior._evaluate import eval_mode
from bnn.posterior._linearise import jacobian_chunks

__all__ = ["CurvatureSums", "accumulate_curvature", "loss_root"]


@dataclass
class CurvatureSums:
    """Running sums over the data: curvature, data fit at the MAP and the count ``N``.

    Attributes:
        full: ``[P, P]`` (``"full"``).
        diagonal: ``[P]`` (``"diag"``).
        factors_a: per layer ``Σ_n ã ãᵀ`` (``"kron"``; a convolution's
            ``Σ_n Σ_r ã_{n,r} ã_{n,r}ᵀ / R``).
        factors_g: per layer ``Σ_n g_nᵀ H_n g_n`` (``"kron"``; a convolution's
            ``Σ_n Σ_r g_{n,r}ᵀ H_n g_{n,r}``; divided by ``N`` at the end).
        squared_error: ``Σ ‖y − f‖²`` (Gaussian) at the MAP.
        log_likelihood: ``Σ log p(y | f)`` (categorical) at the MAP.
        count: ``N``; outputs: ``C`` per datum.
    """

    full: Tensor | None = None
    diagonal: Tensor | None = None
    factors_a: list[Tensor] = field(default_factory=list)
    factors_g: list[Tensor] = field(default_factory=list)
    squared_error: float = 0.0
    log_likelihood: float = 0.0
    count: int = 0
    outputs: int = 0


def loss_root(likelihood: Likelihood, outputs: Tensor) -> Tensor | None:
    """``L_n`` ``[N, C, C]`` with ``L_n L_nᵀ = H_n`` (``None`` for a Gaussian at unit noise)."""
    if not isinstance(likelihood, Categorical):
        return None
    probs = outputs.softmax(-1)
    root = probs.sqrt()
    return torch.diag_embed(root) - probs.unsqueeze(-1) * root.unsqueeze(-2)


def _project(root: Tensor | None, jacobian: Tensor) -> Tensor:
    """``V_n = L_nᵀ J_n`` for ``jacobian`` ``[N, C, ...]``."""
    if root is None:
        return jacobian
    return torch.einsum("ncd,nc...->nd...", root, jacobian)


def accumulate_curvature(
    sums: CurvatureSums,
    hessian: str,
    model: nn.Module,
    names: Sequence[str],
    layers: Sequence[KronLayer],
    likelihood: Likelihood,
    batch: tuple[Tensor, Tensor],
    memory_budget: int,
) -> None:
    """Add one batch's curvature and data fit to ``sums`` (in place)."""
    x, y = batch
    if hessian == "kron":
        outputs, inputs, output_jacobian = layer_jacobians(model, layers, x, memory_budget)
        root = loss_root(likelihood, outputs)
        for i, (a, g) in enumerate(zip(inputs, output_jacobian, strict=True)):
            projected = _project(root, g)  # [N, C, out] (a convolution: [N, C, out, R])
            if a.dim() == 2:  # nn.Linear: a [N, in']
                factor_a = a.T @ a
                factor_g = torch.einsum("nco,ncp->op", projected, projected)
            else:  # a convolution, KFAC-expand: a [N, R, in'], one datum per location
                patches = a.reshape(-1, a.shape[-1])
                factor_a = patches.T @ patches / a.shape[1]
                factor_g = torch.einsum("ncor,ncpr->op", projected, projected)
            if len(sums.factors_a) <= i:
                sums.factors_a.append(factor_a)
                sums.factors_g.append(factor_g)
            else:
                sums.factors_a[i] = sums.factors_a[i] + factor_a
                sums.factors_g[i] = sums.factors_g[i] + factor_g
    elif hessian == "diag" and layers:  # whole nn.Linear layers: the diagonal from factors
        outputs, inputs, output_jacobian = layer_jacobians(model, layers, x, memory_budget)
        update = _linear_diagonal(
            names, layers, model, loss_root(likelihood, outputs), inputs, output_jacobian
        )
        sums.diagonal = update if sums.diagonal is None else sums.diagonal + update
    else:  # one chunk's [n, C, P] Jacobian at a time: all-layer Jacobians are large
        blocks = []
        for block_outputs, jacobian in jacobian_chunks(model, names, x, memory_budget):
            projected = _project(loss_root(likelihood, block_outputs), jacobian)
            if hessian == "full":
                update = torch.einsum("ncp,ncq->pq", projected, projected)
                sums.full = update if sums.full is None else sums.full + update
            else:
                update = (projected**2).sum((0, 1))
                sums.diagonal = update if sums.diagonal is None else sums.diagonal + update
            blocks.append(block_outputs)
        outputs = torch.cat(blocks)
    outputs = outputs.detach()
    targets = likelihood.check_targets(outputs, y)
    if isinstance(likelihood, Categorical):
        sums.log_likelihood += float(likelihood.log_density(outputs, targets).sum())
    else:
        sums.squared_error += float(((targets - outputs) ** 2).sum())
    sums.count += x.shape[0]
    sums.outputs = outputs[0].numel()


def _linear_diagonal(
    names: Sequence[str],
    layers: Sequence[KronLayer],
    model: nn.Module,
    root: Tensor | None,
    inputs: Sequence[Tensor],
    output_jacobians: Sequence[Tensor],
) -> Tensor:
    """The exact GGN diagonal ``[P]`` of whole ``nn.Linear`` layers, in ``names`` order.

    A weight's per-datum Jacobian is ``g_{n,c,o} ã_{n,i}`` (output Jacobian times layer
    input), so its squared sum is ``Σ_n Σ_c V_{n,c,o}² ã_{n,i}²`` with ``V = Lᵀ g``: the cost
    of KFAC's factors, not of per-datum Jacobians of every weight.
    """
    owner = {id(module): name for name, module in model.named_modules()}
    pieces: dict[str, Tensor] = {}
    for layer, a, g in zip(layers, inputs, output_jacobians, strict=True):
        assert isinstance(layer, nn.Linear)  # convolutions take the per-datum Jacobian path
        diagonal = torch.einsum("nco,ni->oi", _project(root, g) ** 2, a**2)  # [out, in (+1)]
        prefix = f"{owner[id(layer)]}." if owner[id(layer)] else ""
        pieces[f"{prefix}weight"] = diagonal[:, : layer.in_features].reshape(-1)
        if layer.bias is not None:
            pieces[f"{prefix}bias"] = diagonal[:, layer.in_features]
    return torch.cat([pieces[name] for name in names])


def layer_jacobians(
    model: nn.Module,
    layers: Sequence[KronLayer],
    x: Tensor,
    memory_budget: int,
    at: dict[str, Tensor] | None = None,
) -> tuple[Tensor, list[Tensor], list[Tensor]]:
    """Outputs ``[N, C]``, each layer's inputs and the Jacobians of the outputs w.r.t. its output.

    An ``nn.Linear`` layer gives inputs ``ã`` ``[N, in']`` and Jacobians ``[N, C, out]``; a
    convolution its input patches ``ã_{n,r}`` ``[N, R, in']`` (``in' = C_in·k (+ 1)``, see
    `_patches`) and Jacobians ``[N, C, C_out, R]`` (``R`` output locations, row-major).

    The Jacobian with respect to a layer's output ``s`` is taken as the Jacobian with respect
    to a zero perturbation added to ``s`` (a forward hook), per input in ``vmap(jacrev)``;
    ``at`` gives values of some parameters to evaluate at (default: the model's own).
    """
    perturbations: dict[int, Tensor] = {}
    captured: dict[int, Tensor] = {}
    shapes: dict[int, tuple[torch.Size, torch.Size]] = {}  # per input: (layer input, output)

    def hook_for(i: int, layer: KronLayer) -> object:
        def hook(_module: nn.Module, args: tuple[Tensor, ...], output: Tensor) -> Tensor:
            _check_layer_input(i, layer, args[0])
            captured[i] = args[0]
            if i not in perturbations:  # the probe: record the shapes
                if i in shapes:
                    raise ValueError(
                        f"layer {i} ({type(layer).__name__}) is called more than once per "
                        "forward pass (shared weights); its per-layer curvature ('kron', "
                        "'diag') would hold only the last call. Use hessian='full'."
                    )
                shapes[i] = (args[0].shape[1:], output.shape[1:])
                return output
            return output + perturbations[i]

        return hook

    def one_input(deltas: dict[int, Tensor], xi: Tensor) -> tuple[Tensor, tuple[Tensor, ...]]:
        perturbations.update(deltas)
        output = functional_call(model, frozen, (xi.unsqueeze(0),)).reshape(-1)
        inputs = tuple(captured[i].reshape(-1) for i in range(len(layers)))
        return output, (output, *inputs)

    frozen = {name: p.detach() for name, p in model.named_parameters()}
    frozen.update({name: value.detach() for name, value in (at or {}).items()})
    handles = [
        layer.register_forward_hook(hook_for(i, layer))  # type: ignore[arg-type]
        for i, layer in enumerate(layers)
    ]
    try:
        with eval_mode(model):
            with torch.no_grad():
                classes = model(x[:1]).numel()
            _check_all_called(layers, shapes)
            zeros = {
                i: torch.zeros(shapes[i][1], dtype=x.dtype, device=x.device)
                for i in range(len(layers))
            }
            perturbations.update(zeros)
            width = sum(shapes[i][0].numel() + shapes[i][1].numel() for i in range(len(layers)))
            chunk = max(1, min(x.shape[0], memory_budget // (classes * width * x.element_size())))
            jacobian_fn = vmap(jacrev(one_input, has_aux=True), in_dims=(None, 0))
            parts = [jacobian_fn(zeros, block) for block in torch.split(x, chunk)]
    finally:
        for handle in handles:
            handle.remove()
    return _joined(parts, layers, shapes)


def _joined(
    parts: list[Any], layers: Sequence[KronLayer], shapes: dict[int, tuple[torch.Size, torch.Size]]
) -> tuple[Tensor, list[Tensor], list[Tensor]]:
    """The chunks of ``layer_jacobians`` joined: outputs, and each layer's inputs and
    Jacobians in the layout of its Kronecker factors."""
    outputs = torch.cat([aux[0] for _, aux in parts]).detach()
    inputs, jacobians = [], []
    for i, layer in enumerate(layers):
        a = torch.cat([aux[1 + i] for _, aux in parts]).detach()
        jacobian = torch.cat([jac[i] for jac, _ in parts]).detach()
        a, jacobian = _layer_factors_input(i, layer, a, jacobian, shapes[i][0])
        inputs.append(a)
        jacobians.append(jacobian)
    return outputs, inputs, jacobians


def _check_all_called(layers: Sequence[KronLayer], shapes: dict[int, Any]) -> None:
    missing = [i for i in range(len(layers)) if i not in shapes]
    if missing:
        raise ValueError(
            f"hessian='kron': layer {missing[0]} ({type(layers[missing[0]]).__name__}) "
            "is not called by the model's forward pass; select the layers it uses."
        )


def _check_layer_input(i: int, layer: KronLayer, inputs: Tensor) -> None:
    """Refuse inputs whose per-layer Kronecker factors would not be the KFAC ones."""
    if isinstance(layer, nn.Linear) and inputs.dim() != 2:
        raise ValueError(
            f"hessian='kron' needs linear layers applied to one feature vector per "
            f"input; layer {i} received {tuple(inputs.shape[1:])} per input. Use "
            "hessian='diag' or 'full'."
        )
    expected = 3 if isinstance(layer, nn.Conv1d) else 4
    if not isinstance(layer, nn.Linear) and inputs.dim() != expected:
        raise ValueError(
            f"hessian='kron' needs convolutions applied to batched inputs (of "
            f"{expected} dimensions); layer {i} received {tuple(inputs.shape)}. Use "
            "hessian='diag' or 'full'."
        )


def _layer_factors_input(
    i: int, layer: KronLayer, a: Tensor, jacobian: Tensor, input_shape: torch.Size
) -> tuple[Tensor, Tensor]:
    """A layer's captured inputs as ``ã`` (patches for a convolution, a 1 appended for the
    bias) and its Jacobians with the output locations flattened."""
    if not isinstance(layer, nn.Linear):
        a = _patches(layer, a.reshape(-1, *input_shape))  # [N, R, C_in·k]
        jacobian = jacobian.flatten(3)  # [N, C, C_out, R]
        if a.shape[1] != jacobian.shape[-1]:
            raise ValueError(
                f"hessian='kron': layer {i} has {jacobian.shape[-1]} output locations but "
                f"{a.shape[1]} input patches; use hessian='diag' or 'full'."
            )
    if layer.bias is not None:
        a = torch.cat([a, torch.ones_like(a[..., :1])], dim=-1)
    return a, jacobian


def _patches(layer: nn.Conv1d | nn.Conv2d, inputs: Tensor) -> Tensor:
    """The patch ``a_{n,r}`` ``[N, R, C_in·k]`` under each of a convolution's ``R`` outputs.

    ``inputs`` ``[N, C_in, *spatial]``; the patch entries are in ``(C_in, k_h, k_w)`` order
    (that of ``weight.reshape(C_out, -1)``) and the locations row-major, as ``unfold`` gives
    them, so ``s_{n,:,r} = W a_{n,r} + b``. ``padding="same"`` pads the extra zero of an odd
    total at the end, as ``torch.nn.functional.conv2d`` does.
    """
    kernel, stride, dilation = layer.kernel_size, layer.stride, layer.dilation
    if isinstance(layer.padding, str):  # "valid" or "same" (stride 1)
        same = layer.padding == "same"
        totals = [d * (k - 1) if same else 0 for d, k in zip(dilation, kernel, strict=True)]
        pads = [(total // 2, total - total // 2) for total in totals]
    else:
        pads = [(p, p) for p in layer.padding]
    widths = [width for pad in reversed(pads) for width in pad]  # F.pad: last dim first
    if any(widths):
        inputs = F.pad(inputs, widths)
    if isinstance(layer, nn.Conv1d):  # as a 2-D convolution of height 1
        inputs = inputs.unsqueeze(-2)
        kernel, stride, dilation = (1, *kernel), (1, *stride), (1, *dilation)
    columns = F.unfold(inputs, kernel, dilation=dilation, stride=stride)  # [N, C_in·k, R]
    return columns.transpose(1, 2)
