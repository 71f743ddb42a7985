"""The NUTS trajectory pieces of the lock-step sampler, on ``[C]``/``[C, D]`` tensors.

A subtree is built leaf by leaf (NumPyro's iterative NUTS): `add_leaf` takes one leapfrog for
every chain and folds the new leaf into the subtree — progressive multinomial proposal, the
U-turn check of every block of ``2**l`` leaves that the recursive build (Hoffman & Gelman
2014; Stan) would merge, divergence. `pack`/`unpack` hold a subtree in two tensors, so that a
compiled `add_packed_leaf` call has few tensor arguments.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

__all__ = [
    "MAX_ENERGY_ERROR",
    "State",
    "Subtree",
    "add_leaf",
    "add_packed_leaf",
    "is_turning",
    "pack",
    "state_where",
    "unpack",
    "where_rows",
]

MAX_ENERGY_ERROR = 1000.0


@dataclass
class State:
    """A point of the trajectory for every chain."""

    z: Tensor  # [C, D]
    r: Tensor  # [C, D]
    grad: Tensor  # [C, D] gradient of log p
    logp: Tensor  # [C]


class Subtree(NamedTuple):
    """A subtree built leaf by leaf (NumPyro's iterative NUTS): its far end, its multinomial
    proposal and the per-level U-turn checkpoints; one row per chain."""

    z: Tensor  # [C, D] the last leaf (the far end)
    r: Tensor  # [C, D]
    grad: Tensor  # [C, D]
    logp: Tensor  # [C]
    proposal_z: Tensor  # [C, D]
    proposal_grad: Tensor  # [C, D]
    proposal_logp: Tensor  # [C]
    log_weight: Tensor  # [C] log of the summed leaf weights exp(-ΔH)
    r_sum: Tensor  # [C, D]
    block_first_r: Tensor  # [L, C, D] momentum of the first leaf of the open block of 2**l
    block_r_sum: Tensor  # [L, C, D] momentum summed over that block so far
    turning: Tensor  # [C] bool
    diverging: Tensor  # [C] bool
    accept_sum: Tensor  # [C]
    steps: Tensor  # [C] leapfrogs that count for each chain
    running: Tensor  # [C] bool: neither turned nor diverged yet (and active)


def add_leaf(
    gradient: Callable[[Tensor], tuple[Tensor, Tensor]],
    tree: Subtree,
    step: Tensor,
    inverse_mass: Tensor,
    h0: Tensor,
    uniform: Tensor,
    index: Tensor,
    depth: Tensor,
) -> Subtree:
    """One leapfrog from the far end and the subtree with that leaf added; one compiled call.

    Leaf ``index`` (0-based) is the proposal with probability ``w / W`` (its weight over the
    subtree's so far: multinomial sampling within the subtree, as the recursive build's
    pairwise merges). The blocks of ``2**l`` leaves (``1 ≤ l ≤ depth``) that the recursive
    build would merge are checked for a U-turn as they complete (``index + 1`` a multiple of
    ``2**l``). A chain that turned or diverged stops: later leaves change nothing of it.
    """
    s = step.unsqueeze(-1)
    r_half = tree.r + 0.5 * s * tree.grad
    z = tree.z + s * inverse_mass * r_half
    grad, logp = gradient(z)
    r = r_half + 0.5 * s * grad
    delta = -logp + 0.5 * (inverse_mass * r * r).sum(-1) - h0
    delta = torch.where(torch.isnan(delta), torch.full_like(delta, math.inf), delta)
    running = tree.running
    log_weight = torch.logaddexp(tree.log_weight, -delta)
    take = running & ((index == 0) | (torch.log(uniform) < -delta - log_weight))

    levels = torch.arange(tree.block_r_sum.shape[0], device=z.device)
    sizes = torch.ones_like(levels) << levels  # 2**l (an integer pow would not be fused)
    opens = (index % sizes == 0).view(-1, 1, 1)
    closes = ((index + 1) % sizes == 0) & (levels >= 1) & (levels <= depth)
    running_3d = running.view(1, -1, 1)
    block_first_r = torch.where(opens & running_3d, r, tree.block_first_r)
    block_r_sum = torch.where(opens, 0.0, tree.block_r_sum) + r
    block_r_sum = torch.where(running_3d, block_r_sum, tree.block_r_sum)
    weighted = inverse_mass * block_r_sum
    turned = ((weighted * block_first_r).sum(-1) <= 0) | ((weighted * r).sum(-1) <= 0)
    turning_now = (closes.unsqueeze(-1) & turned).any(0)
    diverging_now = delta > MAX_ENERGY_ERROR
    return Subtree(
        z=z,
        r=r,
        grad=grad,
        logp=logp,
        proposal_z=where_rows(take, z, tree.proposal_z),
        proposal_grad=where_rows(take, grad, tree.proposal_grad),
        proposal_logp=torch.where(take, logp, tree.proposal_logp),
        log_weight=torch.where(running, log_weight, tree.log_weight),
        r_sum=where_rows(running, tree.r_sum + r, tree.r_sum),
        block_first_r=block_first_r,
        block_r_sum=block_r_sum,
        turning=tree.turning | (running & turning_now),
        diverging=tree.diverging | (running & diverging_now),
        accept_sum=tree.accept_sum + torch.where(running, torch.exp(-delta.clamp_min(0.0)), 0.0),
        steps=tree.steps + running.to(delta.dtype),
        running=running & ~turning_now & ~diverging_now,
    )


COLUMNS = 6  # z, r, grad, proposal_z, proposal_grad, r_sum: [C, D] each
SCALARS = 8  # logp, proposal_logp, log_weight, accept_sum, steps, turning, diverging, running


def pack(tree: Subtree) -> tuple[Tensor, Tensor]:
    """The subtree as two tensors, ``[C, 6·D + 8]`` and ``[L, C, 2·D]`` (flags as 0/1): a
    compiled call's cost grows with its number of tensor arguments."""
    columns = [tree.z, tree.r, tree.grad, tree.proposal_z, tree.proposal_grad, tree.r_sum]
    scalars = [
        tree.logp,
        tree.proposal_logp,
        tree.log_weight,
        tree.accept_sum,
        tree.steps,
        tree.turning,
        tree.diverging,
        tree.running,
    ]
    dtype = tree.z.dtype
    packed = torch.cat([*columns, torch.stack([v.to(dtype) for v in scalars], -1)], -1)
    return packed, torch.cat([tree.block_first_r, tree.block_r_sum], -1)


def unpack(packed: Tensor, blocks: Tensor) -> Subtree:
    """Inverse of `pack` (views into ``packed`` and ``blocks``)."""
    d = blocks.shape[-1] // 2
    z, r, grad, proposal_z, proposal_grad, r_sum = (
        packed[:, : COLUMNS * d].reshape(-1, COLUMNS, d).unbind(-2)
    )
    logp, proposal_logp, log_weight, accept_sum, steps, turning, diverging, running = packed[
        :, COLUMNS * d :
    ].unbind(-1)
    block_first_r, block_r_sum = blocks.reshape(*blocks.shape[:-1], 2, d).unbind(-2)
    return Subtree(
        z=z,
        r=r,
        grad=grad,
        logp=logp,
        proposal_z=proposal_z,
        proposal_grad=proposal_grad,
        proposal_logp=proposal_logp,
        log_weight=log_weight,
        r_sum=r_sum,
        block_first_r=block_first_r,
        block_r_sum=block_r_sum,
        turning=turning > 0.5,
        diverging=diverging > 0.5,
        accept_sum=accept_sum,
        steps=steps,
        running=running > 0.5,
    )


def add_packed_leaf(
    gradient: Callable[[Tensor], tuple[Tensor, Tensor]],
    packed: Tensor,
    blocks: Tensor,
    fixed: Tensor,
    uniform: Tensor,
    counter: Tensor,
) -> tuple[Tensor, Tensor]:
    """`add_leaf` on packed tensors: ``fixed`` ``[C, D + 2]`` holds the inverse mass, the
    signed step size and the start energy; ``counter`` the leaf index and the depth."""
    d = blocks.shape[-1] // 2
    inverse_mass, step, h0 = fixed[:, :d], fixed[:, d], fixed[:, d + 1]
    tree = add_leaf(
        gradient, unpack(packed, blocks), step, inverse_mass, h0, uniform, counter[0], counter[1]
    )
    return pack(tree)


def where_rows(mask: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """Row ``c`` of ``a`` where ``mask[c]``, else of ``b`` (``[C]`` mask, ``[C, D]`` rows)."""
    return torch.where(mask.unsqueeze(-1), a, b)


def state_where(mask: Tensor, a: State, b: State) -> State:
    """Chain ``c``'s state from ``a`` where ``mask[c]``, else from ``b``."""
    return State(
        where_rows(mask, a.z, b.z),
        where_rows(mask, a.r, b.r),
        where_rows(mask, a.grad, b.grad),
        torch.where(mask, a.logp, b.logp),
    )


def is_turning(r_left: Tensor, r_right: Tensor, r_sum: Tensor, inverse_mass: Tensor) -> Tensor:
    """The generalised U-turn criterion (Betancourt 2017) of a trajectory per chain: ``[C]``."""
    return ((r_sum * inverse_mass * r_left).sum(-1) <= 0) | (
        (r_sum * inverse_mass * r_right).sum(-1) <= 0
    )
