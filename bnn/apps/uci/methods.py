"""The UCI benchmark's methods trained from scratch, the registry of all methods, and the stack.

Each method has the signature ``(method, data, defaults, rng) -> Fitted`` on standardised
data (``bnn.apps.uci.common``): it trains on ``data.x, data.y`` (the validation split, when
there is one, only picks epochs and noise levels) and returns what predicts.

* ``mc_dropout`` / ``vi``: 50 ReLU units with dropout 0.05 after the hidden layer / a
  Bayes-by-backprop network; a learned noise, re-chosen on the validation split.
* ``ensemble``: 5 heteroscedastic members trained with β-NLL; the mixture of their predictives.
* ``sghmc``: SGHMC from a MAP start, with the noise the MAP fit learned.
* ``stack``: MC dropout, the ensemble and the GP — each trained from the split's RNG state
  as in its own row, hence the same models bit for bit — stacked by the validation log score
  (Yao et al. 2018).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from bnn.apps.uci.common import HIDDEN, Defaults, Fitted, Prepared, validated_noise
from bnn.apps.uci.common import network as mlp
from bnn.apps.uci.posthoc import gp_fitted, laplace_fitted, multiswag_fitted, swag_fitted
from bnn.infer.ensembles.ensemble import deep_ensemble
from bnn.infer.ensembles.stacking import stack
from bnn.infer.mcmc.sgmcmc import StepSchedule, sghmc
from bnn.infer.training.fit import fit
from bnn.likelihoods import Gaussian, HeteroscedasticGaussian
from bnn.nn.convert import bayesianize
from bnn.nn.dropout import MCDropout
from bnn.posterior.protocol import Posterior
from bnn.posterior.wrapper import PosteriorWrapper, WithLikelihood
from bnn.random.default import RNGLike
from bnn.random.rng import RNG

__all__ = ["FIT", "STACKED", "fit_method"]

STACKED = ("mc_dropout", "ensemble", "gp")
"""The members of the ``stack`` method."""


def ensemble_fitted(
    method: str,  # noqa: ARG001 - one signature for every method
    data: Prepared,
    defaults: Defaults,
    rng: RNG,
) -> Fitted:
    """Heteroscedastic members trained with β-NLL; the mixture of their predictives."""
    inputs = data.x.shape[1]
    ensemble, _ = deep_ensemble(
        lambda: mlp(inputs, 2),
        (data.x, data.y),
        likelihood=HeteroscedasticGaussian(beta=defaults.ensemble_beta),
        num_members=defaults.ensemble_members,
        lockstep=defaults.ensemble_lockstep,
        rng=rng,
        progress=False,
        **data.options,
    )
    return Fitted(ensemble, HeteroscedasticGaussian(), defaults.ensemble_members)


def homoscedastic_fitted(method: str, data: Prepared, defaults: Defaults, rng: RNG) -> Fitted:
    """MC dropout or VI with a learned noise, re-chosen on the validation split."""
    model = _homoscedastic_model(method, data.x.shape[1], defaults, rng)
    likelihood = Gaussian(0.5, learn_std=True)
    fit(model, (data.x, data.y), likelihood=likelihood, rng=rng, progress=False, **data.options)
    likelihood = validated_noise(model, likelihood, data.options.get("validation"), defaults, rng)
    return Fitted(model, likelihood, defaults.num_samples, rng)


def sghmc_fitted(
    method: str,  # noqa: ARG001 - one signature for every method
    data: Prepared,
    defaults: Defaults,
    rng: RNG,
) -> Fitted:
    """SGHMC from a MAP start, with the noise the MAP fit learned."""
    with rng.stream("init"):
        network = mlp(data.x.shape[1], 1)
    learned = Gaussian(0.5, learn_std=True)
    fit(network, (data.x, data.y), likelihood=learned, rng=rng, progress=False, **data.options)
    noise = Gaussian(float(learned.std.detach()))
    steps_per_epoch = math.ceil(data.x.shape[0] / defaults.batch_size)
    samples, _ = sghmc(
        network,
        (data.x, data.y),
        likelihood=noise,
        lr=1e-2 * noise.std.item() ** 2 / data.x.shape[0],
        schedule=StepSchedule(
            steps=200 * steps_per_epoch, burn_in=50 * steps_per_epoch, thin=steps_per_epoch
        ),
        batch_size=defaults.batch_size,
        rng=rng,
        progress=False,
    )
    return Fitted(samples, noise, samples.num_samples)


def _homoscedastic_model(method: str, inputs: int, defaults: Defaults, rng: RNG) -> nn.Module:
    """MC dropout (dropout after the hidden layer) or a Bayes-by-backprop network."""
    if method == "mc_dropout":
        with rng.stream("init"):
            network = nn.Sequential(
                nn.Linear(inputs, HIDDEN),
                nn.ReLU(),
                nn.Dropout(defaults.dropout),
                nn.Linear(HIDDEN, 1),
            )
        return MCDropout(network)
    with rng.stream("init"):
        network = mlp(inputs, 1)
    return bayesianize(network, init="random", init_std=1e-3, rng=rng)


class _InputsAs(PosteriorWrapper):
    """A posterior fitted in another dtype (the float64 GP) taking and giving the caller's."""

    def __init__(self, posterior: Posterior, dtype: torch.dtype) -> None:
        super().__init__(posterior)
        self.dtype = dtype

    def sample_functions(
        self,
        x: Tensor,
        num_samples: int,
        *,
        rng: RNGLike = None,
        memory_budget: int | None = None,
    ) -> Tensor:
        samples = self.posterior.sample_functions(
            x.to(self.dtype), num_samples, rng=rng, memory_budget=memory_budget
        )
        return samples.to(x.dtype)


def stack_fitted(
    method: str,  # noqa: ARG001 - one signature for every method
    data: Prepared,
    defaults: Defaults,
    rng: RNG,
) -> Fitted:
    """MC dropout, the ensemble and the GP, stacked by their validation log score."""
    validation = data.options.get("validation")
    if validation is None:
        raise ValueError(
            "the stack method weighs its members on the validation split; use a "
            "validation fraction above 0."
        )
    start = rng.state_dict()  # each member starts where its own row starts
    members: list[Posterior] = []
    for name in STACKED:
        member = FIT[name](name, data, defaults, RNG.from_state_dict(start))
        posterior: Posterior = (
            member.posterior
            if member.likelihood is None
            else WithLikelihood(member.posterior, member.likelihood)
        )
        if member.dtype is not None:
            posterior = _InputsAs(posterior, member.dtype)
        members.append(posterior)
    stacked, history = stack(
        members,
        validation.x,
        validation.y,
        num_samples=defaults.num_samples,
        rng=rng.spawn("stack"),
        progress=False,
    )
    return Fitted(
        stacked,
        num_samples=defaults.num_samples,
        rng=rng.spawn("stack predict"),
        extras={"stack_weights": history.extras["weights"]},
    )


FIT: dict[str, Callable[[str, Prepared, Defaults, RNG], Fitted]] = {
    "ensemble": ensemble_fitted,
    "mc_dropout": homoscedastic_fitted,
    "vi": homoscedastic_fitted,
    "sghmc": sghmc_fitted,
    "laplace": laplace_fitted,
    "swag": swag_fitted,
    "multiswag": multiswag_fitted,
    "gp": gp_fitted,
    "stack": stack_fitted,
}
"""Every method of the benchmark by name."""


def fit_method(method: str, data: Prepared, defaults: Defaults, rng: RNG) -> Fitted:
    """Train ``method`` on the prepared split."""
    if method not in FIT:
        raise ValueError(f"method must be one of {tuple(FIT)}, got {method!r}.")
    return FIT[method](method, data, defaults, rng)
