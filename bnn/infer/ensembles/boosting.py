"""Gradient boosting with neural-network weak learners (Friedman 2001; Badirli et al. 2020).

Stage ``m`` fits a fresh network ``h_m`` (from ``factory``) to the **pseudo-residuals**
``r_i = −N ∂L/∂F(x_i)`` of the ensemble so far (by mean squared error), finds the step
``ρ_m = argmin_ρ L(F_{m−1} + ρ h_m)`` by a line search on the whole training set, and adds it
with **shrinkage** ``ν``: ``F_m = F_{m−1} + ν ρ_m h_m`` (Friedman 2001, Algorithm 1). ``L`` is
the mean squared error for regression and the likelihood's negative log-likelihood of the
logits for classification (``bnn.Categorical``, ``bnn.Bernoulli``). Both are convex in ``ρ``,
so ``L(F_m) ≤ (1 − ν) L(F_{m−1}) + ν L(F_{m−1} + ρ_m h_m) ≤ L(F_{m−1})``: **no stage
increases the training loss** (a stage whose line search finds no decrease gets ``ρ = 0``).
``subsample < 1`` trains each learner on a random fraction of the data (Friedman 2002,
stochastic gradient boosting), drawn from ``rng.spawn(m)``; the line search always uses all.

**Uncertainty.** Regression with ``bnn.HeteroscedasticGaussian`` ends with a probabilistic
final stage: a network ``g`` fitted, the boosted mean held fixed, by the Gaussian NLL of the
final residuals (``σ(x) = softplus(g(x)) + min_std``); the posterior's output is
``[mean, g(x)]``, which that likelihood reads. With ``bnn.Gaussian(learn_std=True)`` the std is
the residuals' RMS (its maximum-likelihood value); with a fixed ``bnn.Gaussian(std)`` it is
kept. Classification's predictive is the categorical of the boosted logits. We chose this over
NGBoost's natural-gradient boosting of ``(μ, log σ)`` (Duan et al. 2020) because it keeps the
two properties above exact — the mean is Friedman's least-squares boosting (with a linear
learner it converges to ordinary least squares, whereas NGBoost's fixed point is a σ-weighted
fit) and every stage is monotone — while the final stage is an ordinary heteroscedastic
regression. The uncertainty is aleatoric only: one boosted model is one function (``S = 1``);
for epistemic uncertainty stack or average several seeds (`bnn.infer.stack`).

Example:
    >>> factory = lambda: nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 1))
    >>> boosted, history = bnn.infer.boost(factory, (x, y),
    ...     likelihood=bnn.HeteroscedasticGaussian(), num_stages=30, shrinkage=0.3, rng=0)
    >>> bnn.predict_with_uncertainty(boosted, x_test).std
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from torch import Tensor, nn

from bnn._progress import progress_bar
from bnn.infer._indexed_data import WholeData, whole_data
from bnn.infer.ensembles._boosting_stages import (
    LEARNER_CHUNK,
    check_arguments,
    final_stage,
    fit_learner,
    line_search,
    objective,
    subsample_rows,
)
from bnn.infer.history import History
from bnn.infer.training._loop import build_in_init_stream
from bnn.likelihoods import (
    Likelihood,
)
from bnn.posterior._evaluate import eval_mode
from bnn.posterior.protocol import check_inputs
from bnn.random.default import RNGLike, resolve_rng

__all__ = ["BoostedPosterior", "boost"]


class BoostedPosterior(nn.Module):
    """A boosted additive model ``F(x) = F_0 + Σ_m step_m h_m(x)`` (made by `boost`).

    A point estimate (one function sample) that carries its observation model, so
    ``bnn.predict_with_uncertainty(boosted, x)`` needs no likelihood.

    Attributes:
        initial: ``F_0``, the best constant, ``[D]`` (or ``[K]`` logits).
        learners: the weak learners ``h_m``.
        steps: ``ν ρ_m`` per stage.
        noise: the final stage's network ``g`` (heteroscedastic regression) or ``None``.
    """

    def __init__(
        self,
        initial: Tensor,
        likelihood: Likelihood,
        learners: list[nn.Module],
        steps: list[float],
        noise: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.register_buffer("initial", initial.detach().clone())
        self.learners = nn.ModuleList(learners)
        self.steps = list(steps)
        self.noise = noise
        self.likelihood = likelihood

    @property
    def initial_output(self) -> Tensor:
        """``F_0`` ``[D]``."""
        initial = self.initial
        assert isinstance(initial, Tensor)
        return initial

    def mean_function(self, x: Tensor) -> Tensor:
        """The boosted output ``F(x)`` ``[N, D]`` (regression mean or logits)."""
        output = self.initial_output.expand(x.shape[0], -1)
        for learner, step in zip(self.learners, self.steps, strict=True):
            output = output + step * learner(x)
        return output

    def forward(self, x: Tensor) -> Tensor:
        """What the likelihood reads: ``F(x)``, then ``g(x)`` when there is a noise head."""
        output = self.mean_function(x)
        if self.noise is not None:
            output = torch.cat([output, self.noise(x)], -1)
        return output

    @property
    def predictive_likelihood(self) -> Likelihood:
        """The observation model of the outputs (the training likelihood, a learned std set)."""
        return self.likelihood

    def sample_functions(
        self,
        x: Tensor,
        num_samples: int,
        *,
        rng: RNGLike = None,  # noqa: ARG002 - a point estimate draws nothing
        memory_budget: int | None = None,  # noqa: ARG002 - one pass
    ) -> Tensor:
        """The one function sample ``[1, N, ...]`` at ``x``."""
        check_inputs(x, self.initial_output, num_samples)
        with torch.no_grad(), eval_mode(self):
            output: Tensor = self(x)
        return output.unsqueeze(0)


def boost(
    factory: Callable[[], nn.Module],
    data: WholeData,
    *,
    likelihood: Likelihood,
    num_stages: int = 50,
    shrinkage: float = 0.1,
    subsample: float = 1.0,
    epochs: int = 100,
    lr: float = 1e-2,
    optimizer: str = "adam",
    noise_epochs: int = 300,
    rng: RNGLike = None,
    progress: bool = True,
) -> tuple[BoostedPosterior, History]:
    """Gradient boosting of networks built by ``factory`` (see the module docstring).

    Args:
        factory: builds one weak learner, inputs ``[N, ...]`` → ``[N, D]`` (``D`` = targets
            per input for regression, classes ``K`` for ``Categorical``, 1 for ``Bernoulli``);
            called in stream ``"init"`` of ``rng.spawn(m)`` for stage ``m`` (and
            ``rng.spawn("noise")`` for the noise head).
        data: ``(x, y)``: inputs ``[N, ...]``, targets ``[N, D]`` (``[N]`` accepted when
            ``D = 1``) or class indices ``[N]``; a ``Dataset`` or ``DataLoader`` is read
            whole once (every stage's line search uses all rows).
        likelihood: ``Gaussian`` (fixed or learned std), ``HeteroscedasticGaussian`` (adds
            the noise head), ``Categorical`` or ``Bernoulli``.
        num_stages: number of weak learners ``M`` (≥ 1).
        shrinkage: ``ν`` in ``(0, 1]``.
        subsample: fraction of the data each learner trains on, in ``(0, 1]``.
        epochs: full-batch optimiser steps per learner (on its fraction of the data).
        lr: learning rate for learners and the noise head.
        optimizer: how learners fit their pseudo-residuals: ``"adam"`` (any network) or
            ``"lbfgs"`` (full-batch L-BFGS with a strong-Wolfe line search, ``epochs``
            iterations: precise fits of small, smooth learners; ``lr`` is then its initial
            step, 1 is usual). The noise head always uses Adam.
        noise_epochs: Adam steps of the noise head.
        rng: randomness: stage ``m`` uses ``rng.spawn(m)`` (initialisation in stream
            ``"init"``, training in stream ``"boost"``, subsample from generator
            ``"subsample"``), so a run is bit-reproducible per seed.
        progress: show a tqdm bar over stages.

    Returns:
        ``(BoostedPosterior, History)``; ``history.loss`` is the training loss ``L(F_m)``
        for ``m = 0..M`` (non-increasing), ``history.steps`` the steps ``ν ρ_m``,
        ``history.noise_nll`` the noise head's final NLL (heteroscedastic regression).

    Raises:
        TypeError / ValueError: invalid factory, data, likelihood or hyper-parameters.
        NonFiniteLossError: a learner's training loss became NaN or infinite.
    """
    start = time.perf_counter()
    counts = {"num_stages": num_stages, "epochs": epochs, "noise_epochs": noise_epochs}
    x, y, likelihood = check_arguments(
        factory, whole_data(data), likelihood, shrinkage, subsample, lr, counts, optimizer
    )
    generator = resolve_rng(rng)
    loss_fn, targets, initial = objective(likelihood, x, y)
    history = History("boost", metrics={"loss": []})
    output = initial.expand(x.shape[0], -1).clone()
    history.record(loss=float(loss_fn(output)))
    learners: list[nn.Module] = []
    steps: list[float] = []
    for stage in progress_bar(range(num_stages), desc="boost", disable=not progress):
        child = generator.spawn(stage)
        current = output.detach().requires_grad_(True)
        (gradient,) = torch.autograd.grad(loss_fn(current), current)
        residual = -gradient * x.shape[0]  # per-datum negative gradient
        index = subsample_rows(x.shape[0], subsample, child)
        learner = build_in_init_stream(factory, child)
        fit_learner(
            learner,
            x[index],
            residual[index],
            epochs=epochs,
            lr=lr,
            optimizer=optimizer,
            rng=child,
            stage=stage,
        )
        with torch.no_grad(), eval_mode(learner):
            direction = torch.cat([learner(rows) for rows in torch.split(x, LEARNER_CHUNK)])
        rho = line_search(loss_fn, output, direction)
        step = shrinkage * rho
        candidate = output + step * direction
        if float(loss_fn(candidate)) > float(loss_fn(output)):  # rounding at the optimum
            step, candidate = 0.0, output
        output = candidate
        learners.append(learner.eval())
        steps.append(step)
        history.record(loss=float(loss_fn(output)))
    noise, likelihood = final_stage(
        factory, likelihood, x, targets, output, noise_epochs, lr, generator, history
    )
    boosted = BoostedPosterior(initial, likelihood, learners, steps, noise)
    history.extras.update(steps=steps, seconds=time.perf_counter() - start)
    return boosted, history
