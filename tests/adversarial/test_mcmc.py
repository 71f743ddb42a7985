"""MCMC faults: NaN regions, absurd step sizes, chains that disagree or never move, and
settings that cannot work. Samplers count divergences instead of crashing, refuse a start they
cannot leave, and ``summary`` warns about what makes draws untrustworthy."""

from __future__ import annotations

import sys
from typing import Any

import pytest
import torch
from torch import Tensor, nn

import bnn
from bnn.evaluate import ConvergenceWarning
from bnn.infer import NonFiniteLossError, StepSchedule
from tests.adversarial._tiny import NOISE, NUTS, SG, data, mlp

X, Y = data()


class SquareRoot(nn.Module):
    """``f(x) = sqrt(w)``: NaN for ``w < 0``, and the data (zeros) pull ``w`` towards 0."""

    def __init__(self, w: float = 0.5) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor([w]))

    def forward(self, x: Tensor) -> Tensor:
        return torch.sqrt(self.w) * torch.ones_like(x[:, :1])


ZEROS = (torch.zeros(20, 1), torch.zeros(20, 1))
SHARP = bnn.Gaussian(0.1)

SAMPLERS: dict[str, Any] = {
    "nuts": lambda m, **o: bnn.infer.nuts(m, ZEROS, likelihood=SHARP, **(NUTS | o)),
    "nuts-pyro": lambda m, **o: bnn.infer.nuts(
        m, ZEROS, likelihood=SHARP, backend="pyro", **(NUTS | o)
    ),
    "hmc": lambda m, **o: bnn.infer.hmc(
        m, ZEROS, likelihood=SHARP, num_chains=1, trajectory_length=0.3, progress=False, **o
    ),
}


@pytest.mark.parametrize("method", sorted(SAMPLERS))
def test_a_chain_starting_in_a_nan_region_is_refused(method: str) -> None:
    with pytest.raises(ValueError, match=r"chain\(s\) \[0\] start at weights .* \[nan\].*init="):
        SAMPLERS[method](SquareRoot(-1.0), init="current", warmup=2, draws=2, rng=0)


@pytest.mark.parametrize(
    "method, chains", [("nuts", r"\[0, 1, 3\]"), ("nuts-pyro", r"\[0\]")]
)  # lock-step chains are checked together; Pyro's chain by chain
def test_a_prior_draw_in_a_nan_region_is_refused_naming_the_chains(
    method: str, chains: str
) -> None:
    # w ~ Normal(0, 1) per chain: with seed 0, chains 0, 1 and 3 start at w < 0 (sqrt is NaN)
    with pytest.raises(ValueError, match=rf"chain\(s\) {chains} start at weights"):
        SAMPLERS[method](SquareRoot(), init="prior", num_chains=4, warmup=1, draws=1, rng=0)


@pytest.mark.parametrize("method", sorted(SAMPLERS))
def test_a_nan_region_next_to_the_posterior_counts_divergences(method: str) -> None:
    options = {"warmup": 4, "draws": 4} if method == "hmc" else {"warmup": 10, "draws": 10}
    samples, history = SAMPLERS[method](SquareRoot(), init="current", rng=0, **options)
    assert sum(history.per_chain("divergences")) > 0
    w = samples.samples["w"]
    assert bool(torch.isfinite(w).all()) and bool((w >= 0).all())  # never kept a NaN point


def test_absurd_hmc_step_without_warmup_is_flagged_by_summary() -> None:
    samples, history = bnn.infer.hmc(
        nn.Linear(2, 1), (X, Y), likelihood=NOISE, num_chains=2, warmup=0, draws=10,
        step_size=1e3, trajectory_length=1e3, progress=False, rng=0,
    )  # fmt: skip
    assert float(samples.sample_stats["acceptance_rate"].max()) == 0.0
    with pytest.warns(ConvergenceWarning, match="never moved"):
        report = bnn.summary(samples)
    assert not report.converged


def test_chains_that_disagree_are_flagged_by_summary() -> None:
    generator = torch.Generator().manual_seed(0)
    draws = torch.randn(2, 200, 1, 1, generator=generator)
    draws[1] += 10.0  # chain 1 sits somewhere else entirely
    samples = bnn.SampleSet(
        nn.Linear(1, 1),
        {"weight": draws, "bias": torch.randn(2, 200, 1, generator=generator)},
        is_mcmc=True,
    )
    with pytest.warns(ConvergenceWarning, match="R-hat"):
        report = bnn.summary(samples)
    assert not report.converged


def test_constant_draws_are_flagged_by_summary() -> None:
    samples = bnn.SampleSet(
        nn.Linear(1, 1),
        {"weight": torch.zeros(2, 50, 1, 1), "bias": torch.zeros(2, 50, 1)},
        is_mcmc=True,
    )
    with pytest.warns(ConvergenceWarning, match="never moved"):
        assert not bnn.summary(samples).converged


def test_sgld_with_an_exploding_step_stops_with_the_step_and_the_fix() -> None:
    with pytest.raises(NonFiniteLossError, match="non-finite potential at step .*lower lr"):
        bnn.infer.sgld(
            mlp(), (X, 1e3 * Y), likelihood=bnn.Gaussian(1e-3), lr=1e3,
            schedule=StepSchedule(steps=50, burn_in=1, thin=1), progress=False, rng=0,
        )  # fmt: skip


@pytest.mark.parametrize(
    "call, error, fragment",
    [
        (lambda: bnn.infer.nuts(mlp(), (X, Y), likelihood=NOISE, num_chains=0), ValueError,
         "num_chains must be a positive int"),
        (lambda: bnn.infer.nuts(mlp(), (X, Y), likelihood=NOISE, warmup=-1), ValueError,
         "warmup must be an int >= 0"),
        (lambda: bnn.infer.nuts(mlp(), (X, Y), likelihood=NOISE, draws=0), ValueError,
         "draws must be a positive int"),
        (lambda: bnn.infer.nuts(mlp(), (X, Y), likelihood=NOISE, backend="jax"), ValueError,
         "backend must be 'bnn' or 'pyro'"),
        (lambda: bnn.infer.nuts(mlp(), (X, Y), likelihood=NOISE, init="zeros", **NUTS),
         ValueError, "init must be 'prior' or 'current'"),
        (lambda: bnn.infer.nuts(mlp(), (X, Y), likelihood=NOISE,
                                adaptation=bnn.infer.Adaptation(full_mass=True)),
         ValueError, "full_mass needs backend='pyro'"),
        (lambda: bnn.infer.Adaptation(target_accept=1.0), ValueError, r"target_accept must be in"),
        (lambda: bnn.infer.nuts(mlp(), (X, Y), likelihood=bnn.Gaussian(1.0, learn_std=True)),
         ValueError, "samplers need a fixed observation noise"),
        (lambda: bnn.infer.nuts(mlp(), (X, Y), likelihood="gaussian"), TypeError,
         "likelihood must be a bnn Likelihood"),
        (lambda: bnn.infer.hmc(mlp(), (X, Y), likelihood=NOISE, step_size=0.0), ValueError,
         "step_size must be a positive number"),
        (lambda: bnn.infer.hmc(mlp(), (X, Y), likelihood=NOISE, trajectory_length=float("inf")),
         ValueError, "trajectory_length must be a positive number"),
        (lambda: StepSchedule(steps=5, burn_in=5), ValueError, "burn_in .* must be smaller"),
        (lambda: StepSchedule(kind="warm"), ValueError, "schedule kind must be"),
        (lambda: bnn.infer.sghmc(mlp(), (X, Y), likelihood=NOISE, friction=0.0, **SG), ValueError,
         r"friction must be in \(0, 1\]"),
        (lambda: bnn.infer.sgld(mlp(), (X, Y), likelihood=NOISE, temperature=-1.0), ValueError,
         "temperature must be a positive number"),
        (lambda: bnn.infer.sgld(mlp(), (X, Y), likelihood=NOISE, num_chains=0, **SG), ValueError,
         "num_chains must be a positive int"),
    ],
    ids=[
        "no-chains", "negative-warmup", "no-draws", "unknown-backend", "unknown-init",
        "dense-mass-on-bnn-backend", "target-accept-1", "learned-noise", "likelihood-string",
        "zero-step", "infinite-trajectory", "burn-in-eats-steps", "unknown-schedule",
        "zero-friction", "negative-temperature", "sgld-no-chains",
    ],
)  # fmt: skip
def test_sampler_settings_that_cannot_work_are_refused(
    call: Any, error: type[Exception], fragment: str
) -> None:
    with pytest.raises(error, match=fragment):
        call()


def test_hmc_caps_the_leapfrog_steps_when_adaptation_collapses_the_step(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Next to the NaN region the adapted step shrinks towards 0; uncapped, each draw would take
    # trajectory_length / step_size leapfrog steps (the run never ended).
    monkeypatch.setattr(sys.modules["bnn.infer.mcmc.hmc"], "MAX_LEAPFROG_STEPS", 16)
    samples, _ = SAMPLERS["hmc"](SquareRoot(), init="current", warmup=10, draws=3, rng=0)
    step = float(samples.sample_stats["step_size"].min())
    assert 0.3 / step > 16  # the uncapped trajectory would be longer than the cap
    assert int(samples.sample_stats["n_steps"].max()) <= 16
