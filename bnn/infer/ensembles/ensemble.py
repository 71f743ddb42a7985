"""Deep ensembles (Lakshminarayanan et al. 2017): M networks from M seeds, one `Posterior`.

Member ``i`` is initialised in ``rng.spawn(i).stream("init")`` and trained with
``rng.spawn(i)`` (its own shuffling and, with ``bagging=True``, its own bootstrap resample), so
a member does not depend on how many members there are, on their order, or on whether they
train one after another or in parallel worker processes. Members may be heteroscedastic (a
``HeteroscedasticGaussian`` likelihood): the ensemble predictive is then the Gaussian mixture
of the members' predictives.

Prediction evaluates all members in one ``vmap`` over their stacked parameters
(``torch.func.stack_module_state`` + ``functional_call``).

Example:
    >>> factory = lambda: nn.Sequential(nn.Linear(8, 50), nn.ReLU(), nn.Linear(50, 2))
    >>> ensemble, history = bnn.infer.deep_ensemble(
    ...     factory, (x, y), likelihood=bnn.HeteroscedasticGaussian(), num_members=5,
    ...     epochs=40, rng=0)
    >>> bnn.predict_with_uncertainty(ensemble, x_test, likelihood=bnn.HeteroscedasticGaussian())
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from concurrent.futures import Executor
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call, stack_module_state, vmap

from bnn._checks import check_int
from bnn._io import load_versioned, save_atomically
from bnn.infer.ensembles._ensemble_training import train_members
from bnn.infer.ensembles._lockstep_training import check_lockstep, train_members_in_lockstep
from bnn.infer.history import History
from bnn.infer.training._loop import TrainData, build_in_init_stream
from bnn.likelihoods import Likelihood, PerSampleLikelihood
from bnn.posterior._evaluate import (
    PROBE_INPUTS,
    activation_bytes,
    eval_mode,
    evaluate_in_chunks,
    plan_chunks,
)
from bnn.posterior.protocol import check_inputs, check_memory_budget
from bnn.random.default import RNGLike, resolve_rng

__all__ = ["DeepEnsemble", "deep_ensemble"]

FORMAT = "bnn.DeepEnsemble"
FORMAT_VERSION = 1


class DeepEnsemble(nn.Module):
    """An ensemble of independently initialised (and optionally bootstrapped) networks.

    The posterior ``deep_ensemble`` returns (build and train it there); constructed
    directly it holds freshly initialised members (as ``load`` does before reading the
    trained weights). It carries its members' likelihoods when they learned parameters
    (``predictive_likelihood``).

    Args:
        factory: builds one member (a fresh ``nn.Module``); called once per member inside the
            member's ``"init"`` stream. It must be picklable for parallel training.
        num_members: number of members ``M`` (≥ 1).
        rng: parent randomness; member ``i`` uses ``rng.spawn(i)``.

    Shapes: ``sample_functions(x, S)`` returns ``[min(S, M), N, ...]``.
    """

    def __init__(
        self, factory: Callable[[], nn.Module], num_members: int, *, rng: RNGLike = None
    ) -> None:
        super().__init__()
        check_int("num_members", num_members)
        if not callable(factory):
            raise TypeError("factory must be a callable returning an nn.Module.")
        self.factory = factory
        self.parent_rng = resolve_rng(rng)
        self.members = nn.ModuleList(
            [build_in_init_stream(factory, self.parent_rng.spawn(i)) for i in range(num_members)]
        )
        self.likelihoods: list[Likelihood] = []

    def __len__(self) -> int:
        return len(self.members)

    def forward(self, x: Tensor) -> Tensor:
        """Outputs of every member, stacked: ``[M, N, ...]``."""
        return self._stacked(x)

    # ------------------------------------------------------------------ observation model
    @property
    def predictive_likelihood(self) -> Likelihood | None:
        """The members' own likelihoods, when they learned parameters (e.g. a noise scale each).

        Then the predictive is the mixture ``(1/M) Σ_m N(f_m(x), σ_m²)`` and
        ``bnn.predict_with_uncertainty(ensemble, x)`` uses it without a ``likelihood``;
        ``None`` when members share a fixed likelihood (pass it to the prediction).
        """
        learned = any(p.numel() > 0 for lk in self.likelihoods for p in lk.parameters())
        if not learned:
            return None
        return PerSampleLikelihood(self.likelihoods)

    # ------------------------------------------------------------------ Posterior protocol
    def sample_functions(
        self,
        x: Tensor,
        num_samples: int,
        *,
        rng: RNGLike = None,
        memory_budget: int | None = None,
    ) -> Tensor:
        """Member outputs at ``x``: ``[min(num_samples, M), N, ...]`` (a random subset if fewer).

        Members are evaluated in one ``vmap`` per chunk of at most ``memory_budget`` bytes
        (their parameters plus activations); the subset comes from the ``"predict"`` generator
        of ``rng``.
        """
        reference = next(self.members[0].parameters(), None)
        check_inputs(x, reference, num_samples)
        budget = check_memory_budget(memory_budget, x.device)
        chosen = list(range(len(self.members)))
        if num_samples < len(self.members):
            generator = resolve_rng(rng).torch_generator("predict")
            chosen = sorted(torch.randperm(len(self.members), generator=generator)[:num_samples])
        parameters, buffers = stack_module_state([self.members[int(i)] for i in chosen])
        base = copy.deepcopy(self.members[0]).to("meta")
        probe = x[:PROBE_INPUTS]
        plan = plan_chunks(
            len(chosen),
            x.shape[0],
            bytes_per_input=-(-activation_bytes(self.members[0], probe) // probe.shape[0]),
            bytes_per_sample=sum(p[0].numel() * p.element_size() for p in parameters.values()),
            budget=budget,
        )

        def draw(start: int, stop: int) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
            return (
                {k: v[start:stop] for k, v in parameters.items()},
                {k: v[start:stop] for k, v in buffers.items()},
            )

        def evaluate(state: tuple[dict[str, Tensor], dict[str, Tensor]], block: Tensor) -> Tensor:
            def member(params: dict[str, Tensor], buffs: dict[str, Tensor]) -> Tensor:
                return functional_call(base, (params, buffs), (block,))  # type: ignore[no-any-return]

            output: Tensor = vmap(member, randomness="different")(*state)
            return output

        with eval_mode(base):
            return evaluate_in_chunks(x, len(chosen), plan, draw, evaluate)

    def _stacked(self, x: Tensor) -> Tensor:
        parameters, buffers = stack_module_state(list(self.members))
        base = copy.deepcopy(self.members[0]).to("meta")

        def member(params: dict[str, Tensor], buffs: dict[str, Tensor]) -> Tensor:
            return functional_call(base, (params, buffs), (x,))  # type: ignore[no-any-return]

        with eval_mode(base):
            stacked: Tensor = vmap(member, randomness="different")(parameters, buffers)
        return stacked

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> None:
        """Tensors only: member and likelihood state dicts with a format version (atomic write)."""
        save_atomically(
            {
                "format": FORMAT,
                "format_version": FORMAT_VERSION,
                "members": [{k: v.cpu() for k, v in m.state_dict().items()} for m in self.members],
                "likelihoods": [
                    {k: v.cpu() for k, v in lk.state_dict().items()} for lk in self.likelihoods
                ],
                # files of earlier versions lack it: read as False
                "likelihoods_learned": self.predictive_likelihood is not None,
            },
            path,
        )

    @classmethod
    def load(
        cls,
        path: str | Path,
        factory: Callable[[], nn.Module],
        likelihood: Likelihood | None = None,
    ) -> DeepEnsemble:
        """Rebuild an ensemble saved by ``save`` (no pickled code is executed).

        Args:
            path: the file.
            factory: builds one member, as for training.
            likelihood: a likelihood of the kind the members were trained with; each member's
                saved state (e.g. its learned noise) is loaded into a copy of it. Required when
                the file holds likelihood parameters.

        Raises:
            ValueError: the file holds the members' learned likelihood parameters but no
                ``likelihood`` was given (they would be lost, and predictions noise-free);
                the file holds no members, or another number of likelihoods than members.
        """
        state = load_versioned(
            path, "DeepEnsemble", FORMAT_VERSION, required=("members", "likelihoods")
        )
        if likelihood is None and bool(state.get("likelihoods_learned", False)):
            raise ValueError(
                f"{path} holds the members' learned likelihood parameters (e.g. a noise scale "
                "each); pass likelihood= of the kind they were trained with, e.g. "
                "bnn.Gaussian(1.0, learn_std=True)."
            )
        members, likelihoods = len(state["members"]), len(state["likelihoods"])
        if likelihoods not in (0, members):
            raise ValueError(
                f"{path} is a damaged DeepEnsemble file: it holds {members} members but "
                f"{likelihoods} likelihoods (one per member, or none). Save the ensemble again."
            )
        if members == 0:
            raise ValueError(f"{path} is a damaged DeepEnsemble file: it holds no members.")
        ensemble = cls(factory, members, rng=0)
        try:
            for member, member_state in zip(ensemble.members, state["members"], strict=True):
                member.load_state_dict(member_state)
        except RuntimeError as error:
            raise ValueError(
                f"{path} holds members of another architecture than factory() builds: {error}"
            ) from error
        if likelihood is not None:
            for likelihood_state in state["likelihoods"]:
                restored = copy.deepcopy(likelihood)
                try:
                    restored.load_state_dict(likelihood_state)
                except RuntimeError as error:
                    raise ValueError(
                        f"{path} holds likelihoods of another kind than "
                        f"{type(likelihood).__name__}: {error} Pass likelihood= of the kind "
                        "the members were trained with."
                    ) from error
                ensemble.likelihoods.append(restored)
        return ensemble


def deep_ensemble(
    factory: Callable[[], nn.Module],
    data: TrainData,
    *,
    likelihood: Likelihood,
    num_members: int = 5,
    bagging: bool = False,
    workers: int = 0,
    threads_per_member: int | None = None,
    distributed: bool = False,
    executor: Executor | None = None,
    lockstep: bool = False,
    rng: RNGLike = None,
    progress: bool = True,
    **fit_options: Any,
) -> tuple[DeepEnsemble, History]:
    """Train ``num_members`` networks from their own seeds; the ensemble is the posterior.

    Each member trains with ``bnn.fit`` (MAP/ML for plain members; KL = 0 unless they have
    Bayesian layers). The one place where the inference contract's ``model`` is a factory: an
    ensemble builds its ``M`` members itself, each in its own ``"init"`` stream.

    Args:
        factory: builds one member (a fresh ``nn.Module``), called in the member's ``"init"``
            stream; it must be picklable for ``workers > 0``.
        data: ``(x, y)`` tensors, a ``Dataset`` of ``(x, y)`` pairs (each member shuffles it
            with its own generator), or an unshuffled ``DataLoader`` (every member reads it as
            is; not with ``bagging``; a shuffling one is refused: its one generator would
            make each member depend on the ones trained before it).
        likelihood: observation model; each member gets its own copy (a learned noise is
            learned per member, and the ensemble then carries the members' likelihoods).
        num_members: ``M`` (≥ 1).
        bagging: train member ``i`` on a bootstrap resample drawn from ``rng.spawn(i)`` (of
            the rows of tensors, or as a ``Subset`` of a ``Dataset``).
        workers: ``0`` trains members one after another; ``k > 0`` uses ``k`` worker processes
            (results identical to sequential training with the same ``threads_per_member``).
        threads_per_member: torch intra-op threads while training a member (``None``: the
            current setting when sequential, 1 in workers). Floating-point sums depend on the
            thread count, so set it equal in both modes for bit-identical members.
        executor: train the members on any ``concurrent.futures.Executor`` (a process pool, a
            Dask client's ``get_executor()``; ``bnn.parallel.executors``), identical to
            sequential training with the same ``threads_per_member`` (1 by default there).
        distributed: spread members over the ranks of the initialised ``torch.distributed``
            process group (member ``i`` trains on rank ``i mod R``), then gather them so every
            rank holds the whole ensemble, identical to one trained in one process.
        lockstep: train all members at once, one ``vmap``-ed step over their stacked
            parameters for every mini-batch (``bnn.infer.ensembles._lockstep_training``): on
            small networks, where a step's fixed costs dominate, about ``M`` times fewer of
            them. Each member keeps its initialisation, batch order, bootstrap resample,
            loss, Adam state, learned likelihood, validation and early stopping; the batched
            arithmetic gives other last bits than one-at-a-time training (same seed, same bits
            within the mode), and dropout masks come from ``rng``'s ``"fit"`` stream. For
            plain networks without buffers on ``(x, y)`` tensors, with the ``fit`` options
            ``epochs``, ``batch_size``, ``lr``, ``validation`` and ``threads``.
        rng: parent randomness; member ``i`` is initialised and trained with ``rng.spawn(i)``.
        progress: show each member's progress bar (one bar for all with ``lockstep``).
        **fit_options: passed to ``bnn.fit`` (``epochs``, ``lr``, ``batch_size``, ...); a
            ``checkpoint=path`` gives member ``i`` its own file ``<path>.member<i>``, so an
            interrupted ensemble resumes each member where it stopped.

    Returns:
        ``(DeepEnsemble, History)``; ``history.chains[i]`` is member ``i``'s fit history.
    """
    ensemble = DeepEnsemble(factory, num_members, rng=rng)
    if lockstep:
        check_lockstep(workers, executor, distributed, threads_per_member)
        ensemble.likelihoods, histories = train_members_in_lockstep(
            ensemble.members,
            ensemble.parent_rng,
            data,
            likelihood=likelihood,
            bagging=bagging,
            progress=progress,
            fit_options=fit_options,
        )
        return ensemble, History("deep_ensemble", chains=histories)
    ensemble.likelihoods, histories = train_members(
        ensemble.members,
        ensemble.parent_rng,
        data,
        likelihood=likelihood,
        bagging=bagging,
        workers=workers,
        threads_per_member=threads_per_member,
        distributed=distributed,
        progress=progress,
        fit_options=fit_options,
        executor=executor,
    )
    return ensemble, History("deep_ensemble", chains=histories)
