"""Bridge to Pyro: the network's weights as Pyro sample sites, fitted by SVI with autoguides.

``pyro_model`` turns a network, a prior and a likelihood into a Pyro model: every weight
of the weight space (``bnn.nn.layers.weight_space``) becomes a ``pyro.sample`` site with its
prior, the network is evaluated with ``torch.func.functional_call`` on those weights (the
module itself is never modified, unlike a ``PyroModule`` conversion), and each datum's
log-likelihood enters as a ``pyro.factor`` inside ``pyro.plate("data", N, subsample=...)``, so
mini-batches are scaled by ``N / |B|``.

``svi`` fits ``AutoNormal``, ``AutoLowRankMultivariateNormal`` or
``AutoMultivariateNormal`` guides (or your own) and returns an ``SVIPosterior`` that draws
weights from the guide on demand. Pyro's global parameter store is left as it was: each fit
lives in its own saved scope.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.infer import SVI, Trace_ELBO
from pyro.infer.autoguide import (
    AutoLowRankMultivariateNormal,
    AutoMultivariateNormal,
    AutoNormal,
    init_to_value,
)
from pyro.params.param_store import StateDict
from torch import Tensor, nn

from bnn._progress import progress_bar
from bnn._threads import Threads, check_threads, training_threads
from bnn.infer._indexed_data import IndexedData, IndexedSource, indexed_data
from bnn.infer._log_joint import LogJoint, PriorSpec
from bnn.infer.checkpoint import UNSAVED_SEGMENT, Checkpoint
from bnn.infer.history import History
from bnn.infer.training._loop import NonFiniteLossError
from bnn.infer.variational._svi_state import BatchOrder, restore, schedule, snapshot
from bnn.likelihoods import Gaussian, Likelihood
from bnn.nn.layers import weight_space
from bnn.nn.priors import Laplace, Normal, Prior, ScaleMixture
from bnn.posterior._evaluate import evaluate_parameter_samples_chunked
from bnn.posterior.model import DEFAULT_DRAWS
from bnn.posterior.protocol import Draws, check_inputs, check_memory_budget
from bnn.posterior.samples import SampleSet
from bnn.random.default import RNGLike, resolve_rng
from bnn.random.rng import RNG

__all__ = ["SVIPosterior", "pyro_model", "svi"]

GUIDES = ("normal", "lowrank", "mvn")


def pyro_prior(prior: Prior, template: Tensor) -> Any:
    """A Pyro distribution with ``template``'s shape (all dims as event dims) for ``prior``."""
    if isinstance(prior, Normal):
        base = dist.Normal(
            torch.full_like(template, prior.loc), torch.full_like(template, prior.std)
        )
    elif isinstance(prior, Laplace):
        base = dist.Laplace(
            torch.full_like(template, prior.loc), torch.full_like(template, prior.scale)
        )
    elif isinstance(prior, ScaleMixture):
        probs = torch.tensor([prior.pi, 1 - prior.pi], dtype=template.dtype, device=template.device)
        stds = torch.tensor([prior.std1, prior.std2], dtype=template.dtype, device=template.device)
        base = dist.MixtureSameFamily(
            dist.Categorical(probs.expand(*template.shape, 2)),
            dist.Normal(torch.zeros_like(template).unsqueeze(-1), stds.expand(*template.shape, 2)),
        )
    else:
        raise TypeError(f"no Pyro translation for prior {type(prior).__name__}.")
    return base.to_event(template.dim())


def pyro_model(
    model: nn.Module, likelihood: Likelihood, prior: PriorSpec = None, *, dataset_size: int
) -> Callable[[Tensor, Tensor, Tensor], None]:
    """A Pyro model ``f(x_batch, y_batch, batch_index)`` over the network's weights.

    Args:
        model: the network (not modified).
        likelihood: observation model; a learnable one is registered with ``pyro.module``.
        prior: as in ``bnn.infer._log_joint.LogJoint``.
        dataset_size: ``N``, the size of the full data set (the plate size).
    """
    log_joint = LogJoint(model, likelihood, prior) if not _learns(likelihood) else None
    priors = log_joint.priors if log_joint else _priors_for_learned(model, likelihood, prior)
    templates = {name: slot for name, slot in _templates(model).items()}

    def model_fn(x: Tensor, y: Tensor, batch_index: Tensor) -> None:
        if _learns(likelihood):
            pyro.module("likelihood", likelihood)
        weights = {
            name: pyro.sample(name, pyro_prior(priors[name], template))
            for name, template in templates.items()
        }
        with pyro.plate("data", dataset_size, subsample=batch_index):
            output = torch.func.functional_call(model, weights, (x,))
            pyro.factor("log_likelihood", likelihood.log_prob(output, y))

    return model_fn


def _learns(likelihood: Likelihood) -> bool:
    return any(p.requires_grad for p in likelihood.parameters())


def _templates(model: nn.Module) -> dict[str, Tensor]:
    return {name: slot.value for name, slot in weight_space(model).items()}


def _priors_for_learned(
    model: nn.Module, likelihood: Likelihood, prior: PriorSpec
) -> dict[str, Prior]:
    fixed = Gaussian(1.0) if isinstance(likelihood, Gaussian) else likelihood
    return LogJoint(model, fixed, prior).priors


class SVIPosterior:
    """Weights drawn from a fitted Pyro guide on demand; a `bnn.posterior.ParameterPosterior`.

    Attributes:
        model: the network.
        guide: the fitted Pyro guide.
    """

    def __init__(
        self,
        model: nn.Module,
        guide: Any,
        param_state: StateDict,
        example: tuple[Tensor, Tensor, Tensor],
    ) -> None:
        self.model = model
        self.guide = guide
        self._param_state = param_state
        self._example = example
        self.names = list(_templates(model))

    @contextlib.contextmanager
    def _scope(self) -> Iterator[None]:
        with pyro.get_param_store().scope(self._param_state):
            yield

    def sample_weights(self, num_samples: int, *, rng: RNGLike = None) -> dict[str, Tensor]:
        """``num_samples`` weight draws from the guide: name -> ``[S, *shape]`` (vectorised)."""
        if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(f"num_samples must be a positive int, got {num_samples!r}.")
        with resolve_rng(rng).stream("predict"), self._scope(), torch.no_grad():
            with pyro.plate("bnn_samples", num_samples, dim=-1):
                trace = poutine.trace(self.guide).get_trace(*self._example)
        return {name: trace.nodes[name]["value"].detach() for name in self.names}

    def sample_functions(
        self,
        x: Tensor,
        num_samples: int,
        *,
        rng: RNGLike = None,
        memory_budget: int | None = None,
    ) -> Tensor:
        """Function values at ``x`` for ``num_samples`` fresh guide draws: ``[S, N, ...]``."""
        reference = next(iter(self._example))
        check_inputs(x, reference if x.is_floating_point() else None, num_samples)
        budget = check_memory_budget(memory_budget, x.device)
        weights = self.sample_weights(num_samples, rng=rng)
        return evaluate_parameter_samples_chunked(self.model, weights, x, budget)

    def sample_parameters(self, num_samples: int, *, rng: RNGLike = None) -> dict[str, Tensor]:
        """``num_samples`` guide draws as one chain: name -> ``[1, S, *shape]``."""
        return {k: v.unsqueeze(0) for k, v in self.sample_weights(num_samples, rng=rng).items()}

    def draws(
        self, num_samples: int | None = None, *, x: Tensor | None = None, rng: RNGLike = None
    ) -> Draws:
        """``num_samples`` (default 100) guide draws as one chain, with ``f`` at ``x``."""
        weights = self.sample_weights(
            DEFAULT_DRAWS if num_samples is None else num_samples, rng=rng
        )
        functions = None
        if x is not None:
            reference = next(iter(self._example))
            check_inputs(x, reference if x.is_floating_point() else None, 1)
            with torch.no_grad():
                functions = evaluate_parameter_samples_chunked(
                    self.model, weights, x, check_memory_budget(None, x.device)
                ).unsqueeze(0)
        return Draws(
            parameters={k: v.unsqueeze(0) for k, v in weights.items()},
            functions=functions,
            is_mcmc=False,
        )

    def to_sample_set(self, num_samples: int, *, rng: RNGLike = None) -> SampleSet:
        """``num_samples`` guide draws as a `SampleSet` (one chain, marked as not MCMC)."""
        weights = self.sample_weights(num_samples, rng=rng)
        return SampleSet(self.model, {k: v.unsqueeze(0) for k, v in weights.items()}, is_mcmc=False)


def svi(
    model: nn.Module,
    data: IndexedSource,
    *,
    likelihood: Likelihood,
    prior: PriorSpec = None,
    guide: str | Callable[[Callable[..., None]], Any] = "normal",
    steps: int | None = None,
    epochs: int | None = None,
    batch_size: int | None = None,
    lr: float = 1e-2,
    optimizer: Any = None,
    num_particles: int = 1,
    init_scale: float = 0.05,
    rng: RNGLike = None,
    checkpoint: str | Path | None = None,
    threads: Threads = "auto",
    progress: bool = True,
) -> tuple[SVIPosterior, History]:
    """Stochastic variational inference with a Pyro autoguide over the network's weights.

    Args:
        model: the network (any ``nn.Module``; Bayesian layers contribute weights and priors).
        data: ``(x, y)``: inputs ``[N, ...]`` and targets ``[N, ...]``; or a map-style
            ``Dataset`` of ``(x, y)`` pairs, or a ``DataLoader`` over one (its dataset, batch
            size and ``collate_fn`` are used; the batch order is drawn from ``rng``, so a
            checkpoint resumes bit for bit).
        likelihood: observation model; a learnable noise is fitted as a point estimate.
        prior: as in ``bnn.infer.nuts``.
        guide: ``"normal"`` (``AutoNormal``, mean field), ``"lowrank"``
            (``AutoLowRankMultivariateNormal``), ``"mvn"`` (``AutoMultivariateNormal``), or
            ``guide(pyro_model) -> guide``.
        steps: training length in optimiser steps (give ``steps`` or ``epochs``).
        epochs: training length in passes over the data (default: 100 epochs).
        batch_size: mini-batch size (default: a ``DataLoader``'s, else the full batch); the
            likelihood is scaled by N/|B|.
        lr: learning rate of the default ``pyro.optim.ClippedAdam``.
        optimizer: a ``pyro.optim`` optimiser instead.
        num_particles: ELBO particles per step.
        init_scale: initial guide std; guide means start at the model's current weights.
        rng: randomness: shuffling (generator ``"data"``), ELBO noise (stream ``"svi"``).
        checkpoint: a file to resume from and to save the guide's parameters, the optimiser
            state, the RNG and the history to after every epoch (``bnn.infer.checkpoint``);
            run again with the same path (and more ``epochs``/``steps``) to continue; the
            result equals an uninterrupted run bit for bit.
        threads: torch intra-op threads while training: ``"auto"`` (one thread for small
            models, see `bnn.fit`), an int, or ``None`` (torch's setting).
        progress: show a tqdm bar.

    Returns:
        ``(SVIPosterior, History)``; the history has per step ``loss`` (negative ELBO / N) and
        ``epoch``.

    Example:
        >>> posterior, history = bnn.infer.svi(net, (x, y), likelihood=bnn.Gaussian(0.1),
        ...                                    guide="lowrank", epochs=200, rng=0)
    """
    check_threads(threads)
    source = indexed_data(model, data)
    n = len(source)
    total_steps, batch = schedule(
        steps, epochs, source.loader_batch_size if batch_size is None else batch_size, n
    )
    generator = resolve_rng(rng)
    model_fn = pyro_model(model, likelihood, prior, dataset_size=n)
    templates = _templates(model)
    guide_fn = _make_guide(guide, model_fn, templates, init_scale)
    optim = optimizer if optimizer is not None else pyro.optim.ClippedAdam({"lr": lr})
    elbo = Trace_ELBO(num_particles=num_particles)
    history = History("svi", metrics={"loss": [], "epoch": []})
    order = BatchOrder(n, batch, generator)
    run = None
    if checkpoint is not None:
        settings = _checkpoint_settings(
            generator, batch, n, lr, optimizer, guide, num_particles, init_scale, prior
        )
        run = Checkpoint(checkpoint, method="svi", settings=settings)
    per_epoch = -(-n // batch)
    first = torch.zeros(1, dtype=torch.long)
    example = (*source.batch(first), first)
    threads_context = training_threads(threads, model, batch * num_particles)
    with pyro.get_param_store().scope() as state, threads_context:
        engine = SVI(model_fn, guide_fn, optim, loss=elbo)
        saved = run.load() if run is not None else None
        step = 0 if saved is None else restore(saved, guide_fn, example, optim, generator, order)
        if saved is not None:
            history.metrics.update({k: list(v) for k, v in saved["metrics"].items()})
        bar = progress_bar(range(step, total_steps), desc="svi", disable=not progress)
        # a checkpoint is written after every epoch; without one, fewer (costly) stream switches
        segment = per_epoch if run is not None else max(per_epoch, UNSAVED_SEGMENT)
        while step < total_steps:
            stop = min(step + segment - step % segment, total_steps)
            with generator.stream("svi"):
                _run_steps(engine, order, source, range(step, stop), history, bar)
            bar.update(stop - step)
            step = stop
            if run is not None:
                run.save(snapshot(step, optim, generator, order, history))
        bar.close()
    return SVIPosterior(model, guide_fn, state, example), history


def _checkpoint_settings(
    generator: RNG,
    batch: int,
    n: int,
    lr: float,
    optimizer: Any,
    guide: str | Callable[[Callable[..., None]], Any],
    num_particles: int,
    init_scale: float,
    prior: PriorSpec,
) -> dict[str, Any]:
    """What a resumed ``svi`` must share with the run that wrote the checkpoint."""
    return {
        "seed": generator.seed,
        "rng_path": repr(generator),
        "batch_size": batch,
        "dataset_size": n,
        "lr": float(lr) if optimizer is None else type(optimizer).__name__,
        "guide": guide if isinstance(guide, str) else getattr(guide, "__name__", "callable"),
        "num_particles": num_particles,
        "init_scale": float(init_scale),
        "prior": repr(prior),
    }


def _run_steps(
    engine: SVI,
    order: BatchOrder,
    data: IndexedData,
    steps: range,
    history: History,
    bar: Any,
) -> None:
    """ELBO steps ``steps`` on the batches ``order`` gives; the loss per data point recorded."""
    n = len(data)
    for k in steps:
        epoch, index = order.next()
        loss = engine.step(*data.batch(index), index) / n
        if not torch.isfinite(torch.tensor(loss)):
            raise NonFiniteLossError(
                f"non-finite ELBO at step {k} (epoch {epoch}); lower lr or init_scale."
            )
        history.record(loss=loss, epoch=epoch)
        if k % 50 == 0:
            bar.set_postfix(loss=f"{loss:.4f}")


def _make_guide(
    guide: str | Callable[[Callable[..., None]], Any],
    model_fn: Callable[..., None],
    templates: dict[str, Tensor],
    init_scale: float,
) -> Any:
    init = init_to_value(values={k: v.clone() for k, v in templates.items()})
    if callable(guide):
        return guide(model_fn)
    if guide == "normal":
        return AutoNormal(model_fn, init_loc_fn=init, init_scale=init_scale)
    if guide == "lowrank":
        return AutoLowRankMultivariateNormal(model_fn, init_loc_fn=init, init_scale=init_scale)
    if guide == "mvn":
        return AutoMultivariateNormal(model_fn, init_loc_fn=init, init_scale=init_scale)
    raise ValueError(f"guide must be one of {GUIDES} or a callable, got {guide!r}.")
