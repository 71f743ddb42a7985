"""A NUTS that advances several chains in lock-step, one compiled call per leapfrog.

Plain Pyro NUTS spends most of its time outside the gradient: per-site Python bookkeeping and
model tracing at every leapfrog step. Here the chains' flat weight vectors ``[C, D]`` move
together: each leapfrog evaluates ``∇ log p`` for all chains in one ``torch.func.vmap`` call,
and all trajectory logic (multinomial NUTS with the generalised U-turn criterion, Betancourt
2017; dual-averaging step size and windowed diagonal mass adaptation, Hoffman & Gelman 2014 /
Stan) is written on ``[C]``/``[C, D]`` tensors. Subtrees are built leaf by leaf, as NumPyro's
iterative NUTS: one function (``add_leaf``) takes a leapfrog and folds the new leaf into the
subtree — multinomial proposal, U-turn checks of the blocks the recursive build would merge,
divergence — so ``jit_compile`` compiles one leapfrog with all its bookkeeping into one call.
A chain that has stopped is masked, so chains need not agree on tree depth. Randomness of
chain ``c`` comes from its own generator ``rng.spawn(c).torch_generator("nuts")``, so a
chain's draws do not depend on the other chains (up to floating-point rounding of batched
kernels).
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
from torch import Tensor
from torch.func import grad_and_value, vmap

from bnn._progress import progress_bar
from bnn.infer._log_joint import LogJoint, check_start
from bnn.infer.mcmc._compiled_call import CompiledCall
from bnn.infer.mcmc._nuts_adaptation import DualAveraging, adaptation_windows, regularised_variance
from bnn.infer.mcmc._nuts_tree import (
    State,
    Subtree,
    add_leaf,
    add_packed_leaf,
    is_turning,
    pack,
    state_where,
    unpack,
    where_rows,
)
from bnn.random.rng import RNG

__all__ = ["run_vectorised_nuts"]


class _Sampler:
    def __init__(
        self,
        log_joint: LogJoint,
        x: Tensor,
        y: Tensor,
        generators: list[torch.Generator],
        max_depth: int,
        compile_leaf: bool,
    ) -> None:
        y = log_joint.prepare(x, y)

        def log_density(vector: Tensor) -> Tensor:
            return log_joint.log_density_flat(vector, x, y)

        self._gradient = vmap(grad_and_value(log_density))
        self._compiled_leaf = (
            CompiledCall(functools.partial(add_packed_leaf, self._gradient))
            if compile_leaf
            else None
        )
        self.max_depth = max_depth
        self.generators = generators
        self.seeds = [int(g.initial_seed()) for g in generators]
        self.gradient_evaluations = 0

    def gradient(self, z: Tensor) -> tuple[Tensor, Tensor]:
        self.gradient_evaluations += 1
        grads, values = self._gradient(z)
        return grads.detach(), values.detach()

    # ---------------------------------------------------------------- per-chain randomness
    def reseed(self, iteration: int, stream: int = 0) -> None:
        """Restart each chain's generator from ``(chain seed, iteration[, stream])``.

        Chains in lock-step draw a few unused numbers after they stop doubling; reseeding per
        iteration keeps a chain's numbers independent of how long the other chains run.
        ``stream = 1`` is the step-size search (`reasonable_step_size`), which also runs a
        chain-dependent number of rounds.
        """
        for seed, generator in zip(self.seeds, self.generators, strict=True):
            entropy = [seed, iteration] if stream == 0 else [seed, iteration, stream]
            state = np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0]
            generator.manual_seed(int(state >> 1))

    def normal(self, like: Tensor) -> Tensor:
        return torch.stack(
            [torch.randn(like.shape[1:], generator=g, dtype=like.dtype) for g in self.generators]
        ).to(like.device)

    def uniform(self, like: Tensor) -> Tensor:
        return torch.stack(
            [torch.rand((), generator=g, dtype=like.dtype) for g in self.generators]
        ).to(like.device)

    def uniforms(self, count: int, like: Tensor) -> Tensor:
        """``count`` uniforms per chain, ``[count, C]``, each chain from its generator."""
        return torch.stack(
            [torch.rand(count, generator=g, dtype=like.dtype) for g in self.generators], 1
        ).to(like.device)

    # ---------------------------------------------------------------- dynamics
    def leapfrog(self, state: State, step: Tensor, inverse_mass: Tensor) -> State:
        step = step.unsqueeze(-1)
        r = state.r + 0.5 * step * state.grad
        z = state.z + step * inverse_mass * r
        grad, logp = self.gradient(z)
        return State(z, r + 0.5 * step * grad, grad, logp)

    @staticmethod
    def energy(state: State, inverse_mass: Tensor) -> Tensor:
        return -state.logp + 0.5 * (inverse_mass * state.r * state.r).sum(-1)

    def reasonable_step_size(
        self, z: Tensor, grad: Tensor, logp: Tensor, step_size: Tensor, inverse_mass: Tensor
    ) -> Tensor:
        """Per chain, double or halve ``step_size`` until one leapfrog's acceptance
        ``exp(-ΔH)`` crosses 0.8 (Hoffman & Gelman 2014, Algorithm 4; Stan's
        ``init_stepsize``, NumPyro's ``find_reasonable_step_size``): the first step size on
        the other side of 0.8 is returned. Each round is one batched gradient; a chain that
        has crossed keeps its step size while the others go on.
        """
        tiny, huge = torch.finfo(z.dtype).tiny, torch.finfo(z.dtype).max
        step = step_size.clone()
        last = torch.zeros_like(step)  # direction of the previous round (0: none yet)
        running = torch.ones_like(step, dtype=torch.bool)
        for _ in range(300):  # a float32 step size reaches tiny/huge in < 260 rounds
            r = self.normal(z) / inverse_mass.sqrt()
            start = State(z, r, grad, logp)
            new = self.leapfrog(start, step, inverse_mass)
            delta = self.energy(new, inverse_mass) - self.energy(start, inverse_mass)
            # NaN (an overflowing step) compares False: the step shrinks, as in NumPyro.
            direction = torch.where(-delta > math.log(0.8), 1.0, -1.0).to(step.dtype)
            crossed = (last != 0) & (direction != last)
            extreme = ((direction < 0) & (step <= tiny)) | ((direction > 0) & (step >= huge))
            running = running & ~crossed & ~extreme
            if not bool(running.any()):
                break
            step = torch.where(running, step * 2.0**direction, step)
            last = torch.where(running, direction, last)
        return step

    def build(
        self,
        start: State,
        step: Tensor,
        depth: int,
        h0: Tensor,
        inverse_mass: Tensor,
        active: Tensor,
    ) -> Subtree:
        """A subtree of ``2**depth`` leapfrogs from ``start``, one compiled call per leaf.

        As the recursive build of Stan and Hoffman & Gelman: a chain whose subtree turned (any
        block the recursion would merge) or diverged stops there, its later leapfrogs not
        counted in its statistics (acceptance, steps, divergence). Once no ``active`` chain
        runs, the remaining leaves are not computed.
        """
        leaves = 2**depth
        uniforms = self.uniforms(leaves, h0)
        counters = torch.stack([torch.arange(leaves), torch.full((leaves,), depth)], -1).to(
            h0.device
        )
        levels = (max(self.max_depth, 1), *start.z.shape)
        tree = Subtree(
            z=start.z,
            r=start.r,
            grad=start.grad,
            logp=start.logp,
            proposal_z=start.z,
            proposal_grad=start.grad,
            proposal_logp=start.logp,
            log_weight=torch.full_like(h0, -math.inf),
            r_sum=torch.zeros_like(start.r),
            block_first_r=start.r.new_zeros(levels),
            block_r_sum=start.r.new_zeros(levels),
            turning=torch.zeros_like(active),
            diverging=torch.zeros_like(active),
            accept_sum=torch.zeros_like(h0),
            steps=torch.zeros_like(h0),
            running=active,
        )
        if self._compiled_leaf is not None:
            return self._build_compiled(tree, step, inverse_mass, h0, uniforms, counters)
        for leaf in range(leaves):
            index, depth_tensor = counters[leaf]
            tree = add_leaf(
                self._gradient, tree, step, inverse_mass, h0, uniforms[leaf], index, depth_tensor
            )
            self.gradient_evaluations += 1
            if not bool(tree.running.any()):
                break
        return tree

    def _build_compiled(
        self,
        tree: Subtree,
        step: Tensor,
        inverse_mass: Tensor,
        h0: Tensor,
        uniforms: Tensor,
        counters: Tensor,
    ) -> Subtree:
        """`build`'s leaves as compiled calls on the packed subtree (few tensor arguments)."""
        assert self._compiled_leaf is not None
        packed, blocks = pack(tree)
        fixed = torch.cat([inverse_mass, step.unsqueeze(-1), h0.unsqueeze(-1)], -1)
        for leaf in range(counters.shape[0]):
            packed, blocks = self._compiled_leaf(
                packed, blocks, fixed, uniforms[leaf], counters[leaf]
            )
            self.gradient_evaluations += 1
            if not bool(packed[:, -1].any()):  # the running flags
                break
        return unpack(packed, blocks)

    def transition(
        self,
        z: Tensor,
        grad: Tensor,
        logp: Tensor,
        step_size: Tensor,
        inverse_mass: Tensor,
        max_depth: int,
    ) -> tuple[Tensor, Tensor, Tensor, dict[str, Tensor]]:
        r = self.normal(z) / inverse_mass.sqrt()
        start = State(z, r, grad, logp)
        h0 = self.energy(start, inverse_mass)
        left, right = start, start
        proposal_z, proposal_grad, proposal_logp = z, grad, logp
        log_weight = torch.zeros_like(logp)
        r_sum = r
        active = torch.ones_like(logp, dtype=torch.bool)
        diverging = torch.zeros_like(active)
        accept_sum = torch.zeros_like(logp)
        n_steps = torch.zeros_like(logp)
        depth_reached = torch.zeros_like(logp)
        for depth in range(max_depth):
            forward = self.uniform(logp) < 0.5
            begin = state_where(forward, right, left)
            direction = torch.where(forward, 1.0, -1.0).to(z.dtype)
            tree = self.build(begin, direction * step_size, depth, h0, inverse_mass, active)
            accept_sum = accept_sum + torch.where(active, tree.accept_sum, 0.0)
            n_steps = n_steps + torch.where(active, tree.steps, 0.0)
            depth_reached = torch.where(active, float(depth + 1), depth_reached)
            diverging = diverging | (active & tree.diverging)
            valid = active & ~tree.turning & ~tree.diverging
            take = valid & (torch.log(self.uniform(logp)) < tree.log_weight - log_weight)
            proposal_z = where_rows(take, tree.proposal_z, proposal_z)
            proposal_grad = where_rows(take, tree.proposal_grad, proposal_grad)
            proposal_logp = torch.where(take, tree.proposal_logp, proposal_logp)
            log_weight = torch.where(
                valid, torch.logaddexp(log_weight, tree.log_weight), log_weight
            )
            far = State(tree.z, tree.r, tree.grad, tree.logp)
            right = state_where(valid & forward, far, right)
            left = state_where(valid & ~forward, far, left)
            r_sum = where_rows(valid, r_sum + tree.r_sum, r_sum)
            active = valid & ~is_turning(left.r, right.r, r_sum, inverse_mass)
            if not bool(active.any()):
                break
        stats = {
            "acceptance_rate": accept_sum / n_steps.clamp_min(1.0),
            "n_steps": n_steps,
            "tree_depth": depth_reached,
            "diverging": diverging,
        }
        return proposal_z, proposal_grad, proposal_logp, stats


def _watched(
    info: dict[str, Tensor], step_size: Tensor, kept: dict[str, list[Tensor]], warming: bool
) -> dict[str, str]:
    """What the progress bar shows: phase, divergences kept so far, step size, acceptance."""
    divergences = sum(int(d.sum()) for d in kept.get("diverging", []))
    return {
        "phase": "warmup" if warming else "sampling",
        "divergences": str(divergences),
        "step": f"{float(step_size.mean()):.3g}",
        "accept": f"{float(info['acceptance_rate'].mean()):.2f}",
    }


def run_vectorised_nuts(
    log_joint: LogJoint,
    x: Tensor,
    y: Tensor,
    initial: Tensor,
    rngs: list[RNG],
    *,
    warmup: int,
    draws: int,
    target_accept: float,
    max_tree_depth: int,
    compile_gradient: bool = False,
    progress: bool = False,
) -> tuple[Tensor, dict[str, Tensor], int]:
    """Run ``C = len(rngs)`` chains from ``initial`` ``[C, D]`` (a tqdm bar if ``progress``).

    Returns:
        Draws ``[C, S, D]``, per-draw statistics ``[C, S]`` and the number of batched gradients.
    """
    generators = [rng.torch_generator("nuts") for rng in rngs]
    sampler = _Sampler(log_joint, x, y, generators, max_tree_depth, compile_gradient)
    z = initial.detach()
    grad, logp = sampler.gradient(z)
    check_start(logp, grad)
    inverse_mass = torch.ones_like(z)
    # As Stan and NumPyro: from 1, the step size where one leapfrog's acceptance crosses 0.8
    # (also without warm-up, when it is the sampling step size).
    sampler.reseed(0, stream=1)
    step_size = sampler.reasonable_step_size(z, grad, logp, torch.ones_like(logp), inverse_mass)
    adaptation = DualAveraging(step_size, target_accept)
    windows = adaptation_windows(warmup)
    window_draws: list[Tensor] = []
    kept: list[Tensor] = []
    stats: dict[str, list[Tensor]] = {}
    bar = progress_bar(range(warmup + draws), desc="nuts", disable=not progress)
    for iteration in bar:
        sampler.reseed(iteration)
        z, grad, logp, info = sampler.transition(
            z, grad, logp, step_size, inverse_mass, max_tree_depth
        )
        if progress and (iteration % 10 == 0 or iteration == warmup + draws - 1):
            bar.set_postfix(_watched(info, step_size, stats, warming=iteration < warmup))
        if iteration < warmup:
            step_size = adaptation.update(info["acceptance_rate"])
            window = next((w for w in windows if w[0] <= iteration < w[1]), None)
            if window is not None:
                window_draws.append(z)
                if iteration == window[1] - 1:
                    inverse_mass = regularised_variance(torch.stack(window_draws))
                    window_draws = []
                    # A new metric needs a new scale of step size: search from the current
                    # one, then restart dual averaging there (Stan, NumPyro).
                    sampler.reseed(iteration + 1, stream=1)
                    step_size = sampler.reasonable_step_size(z, grad, logp, step_size, inverse_mass)
                    adaptation = DualAveraging(step_size, target_accept)
            if iteration == warmup - 1:
                step_size = adaptation.final()
            continue
        kept.append(z)
        info["step_size"] = step_size
        for name, value in info.items():
            stats.setdefault(name, []).append(value)
    return torch.stack(kept, dim=1), _stacked(stats), sampler.gradient_evaluations


def _stacked(stats: dict[str, list[Tensor]]) -> dict[str, Tensor]:
    """Per-draw statistics ``[C, S]``, counts as integers."""
    stacked = {name: torch.stack(values, dim=1) for name, values in stats.items()}
    stacked["n_steps"] = stacked["n_steps"].long()
    stacked["tree_depth"] = stacked["tree_depth"].long()
    return stacked
