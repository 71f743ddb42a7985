"""Variational inference against closed-form Bayesian linear regression, and training errors."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn

import bnn
from tests.oracles import linear_gaussian_posterior, linear_regression_data

NOISE, PRIOR_STD, N, D = 2.0, 1.0, 20, 4


def _batch_means_mcse(iterates: torch.Tensor, batches: int = 10) -> torch.Tensor:
    """Monte Carlo standard error of the mean of autocorrelated iterates (batch means)."""
    means = iterates.reshape(batches, -1, *iterates.shape[1:]).mean(1)
    return means.std(0) / batches**0.5


@pytest.mark.parametrize(
    "estimator",
    [
        "local_reparam",
        pytest.param("reparam", marks=pytest.mark.slow),
        pytest.param("flipout", marks=pytest.mark.slow),
    ],
)
def test_mean_field_vi_matches_closed_form_blr(estimator: str) -> None:
    """Mean-field VI optimum: exact posterior mean, stds 1/sqrt(diag(precision)) (Bishop §10.1).

    Few noisy data (N=20, noise 2) so the prior and the KL term matter: a KL scaled by the
    batch instead of N, or a wrong entropy, moves the stds by far more than the tolerance.
    After convergence, 400 further steps are averaged (Polyak); tolerance = 5 Monte Carlo
    standard errors of that average (batch means) plus 1% of the posterior std for the
    stationary bias of a constant-step optimiser.
    """
    x, y, _ = linear_regression_data(N, D, NOISE, seed=0)
    exact = linear_gaussian_posterior(x, y, NOISE, PRIOR_STD)
    with bnn.RNG(0).stream("init"):
        layer = bnn.BayesLinear(
            D,
            1,
            bias=False,
            estimator=estimator,
            prior=bnn.nn.Normal(0.0, PRIOR_STD),
            init_std=0.1,
        ).double()
    likelihood = bnn.Gaussian(NOISE)
    optimizer = torch.optim.Adam(layer.parameters(), lr=0.02)
    rng = bnn.RNG(1)
    options = dict(
        likelihood=likelihood,
        batch_size=N,
        optimizer=optimizer,
        num_samples=16,
        rng=rng,
        progress=False,
    )
    bnn.fit(layer, (x, y.unsqueeze(-1)), epochs=1500, **options)
    locs, stds = [], []
    posterior = layer.bayesian_parameters()["weight"]
    for _ in range(400):
        bnn.fit(layer, (x, y.unsqueeze(-1)), epochs=1, **options)
        locs.append(posterior.loc.detach().flatten().clone())
        stds.append(posterior.scale.detach().flatten().clone())
    loc_iterates, std_iterates = torch.stack(locs), torch.stack(stds)
    sd = exact.mean_field_std
    loc_tolerance = 5 * _batch_means_mcse(loc_iterates) + 0.01 * sd
    std_tolerance = 5 * _batch_means_mcse(std_iterates) + 0.01 * sd
    loc_error = (loc_iterates.mean(0) - exact.mean).abs()
    std_error = (std_iterates.mean(0) - sd).abs()
    assert (loc_error < loc_tolerance).all(), (loc_error / sd, loc_tolerance / sd)
    assert (std_error < std_tolerance).all(), (std_error / sd, std_tolerance / sd)
    # The tolerance must be tight enough to mean something: well under a tenth of a posterior sd.
    assert (loc_tolerance < 0.1 * sd).all() and (std_tolerance < 0.1 * sd).all()


def test_fit_is_reproducible_and_seed_dependent() -> None:
    x = torch.linspace(-1, 1, 64).unsqueeze(-1)
    y = torch.sin(3 * x)

    def train(seed: int) -> torch.Tensor:
        net = nn.Sequential(nn.Linear(1, 16), nn.Tanh(), nn.Linear(16, 1))
        bnn.bayesianize(net, init="random", rng=seed)
        bnn.fit(
            net,
            (x, y),
            likelihood=bnn.Gaussian(0.1),
            epochs=5,
            batch_size=16,
            rng=seed,
            progress=False,
        )
        return torch.cat([p.detach().flatten() for p in net.parameters()])

    assert torch.equal(train(0), train(0))
    assert not torch.equal(train(0), train(1))


def test_learned_noise_converges_to_the_true_noise() -> None:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2000, 1, generator=generator)
    y = 2 * x + 0.3 * torch.randn(2000, 1, generator=generator)
    net = nn.Linear(1, 1)
    likelihood = bnn.Gaussian(1.0, learn_std=True)
    bnn.fit(
        net,
        (x, y),
        likelihood=likelihood,
        epochs=60,
        batch_size=200,
        lr=0.05,
        rng=0,
        progress=False,
    )
    # MLE of sigma from 2000 points has relative sd 1/sqrt(2*2000) ~ 1.6%; 5 sd = 8%.
    assert abs(float(likelihood.std.detach()) - 0.3) < 0.08 * 0.3


def test_early_stopping_restores_best_weights() -> None:
    """The restored weights are bit for bit those after the best epoch, not the last ones.

    Validation draws from its own ``"predict"`` stream, so training ``k`` epochs without
    validation reproduces the weights after epoch ``k`` of the monitored run.
    """
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(40, 1, generator=generator)
    y = x + 0.5 * torch.randn(40, 1, generator=generator)
    x_val = torch.randn(40, 1, generator=generator)
    y_val = x_val + 0.5 * torch.randn(40, 1, generator=generator)

    def train(epochs: int, validation: bnn.infer.Validation | None) -> tuple[nn.Module, Any]:
        net = nn.Sequential(nn.Linear(1, 64), nn.ReLU(), nn.Linear(64, 1))
        with bnn.RNG(0).stream("init"):
            net.apply(lambda m: m.reset_parameters() if isinstance(m, nn.Linear) else None)
        bnn.bayesianize(net, init="random", rng=0)
        options = {"lr": 0.05, "batch_size": 8, "rng": 0, "progress": False}
        _, history = bnn.fit(
            net,
            (x, y),
            likelihood=bnn.Gaussian(0.5),
            epochs=epochs,
            validation=validation,
            **options,
        )
        return net, history

    monitored = bnn.infer.Validation(x_val, y_val, patience=5, num_samples=50)
    restored, history = train(200, monitored)
    assert history.stopped_early and history.best_epoch is not None
    ran = len(history.val_nll)
    assert ran == history.best_epoch + 1 + 5 < 200
    assert history.val_nll[history.best_epoch] == min(history.val_nll)
    best, _ = train(history.best_epoch + 1, None)
    last, _ = train(ran, None)
    for name, value in restored.state_dict().items():
        assert torch.equal(value, best.state_dict()[name]), name
    assert any(
        not torch.equal(value, last.state_dict()[name])
        for name, value in restored.state_dict().items()
    )


def test_kl_annealing_ramps_the_weight() -> None:
    x, y = torch.randn(32, 2), torch.randn(32, 1)
    layer = bnn.BayesLinear(2, 1)
    _, history = bnn.fit(
        layer,
        (x, y),
        likelihood=bnn.Gaussian(1.0),
        epochs=4,
        batch_size=8,
        kl=bnn.infer.KLSchedule(annealing_epochs=4),
        rng=0,
        progress=False,
    )
    assert history.kl_weight == pytest.approx([0.25, 0.5, 0.75, 1.0])


def test_non_finite_loss_names_the_step() -> None:
    x, y = torch.randn(16, 2), torch.randn(16, 1)
    layer = bnn.BayesLinear(2, 1)
    with torch.no_grad():
        layer.bayesian_parameters()["weight"].loc.fill_(1e38)
    with pytest.raises(bnn.infer.NonFiniteLossError, match=r"epoch 0, step 0 \(batch 0\)"):
        bnn.fit(layer, (x * 1e10, y), likelihood=bnn.Gaussian(1.0), epochs=1, rng=0, progress=False)


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"epochs": 0}, ValueError, "epochs"),
        ({"lr": -1.0}, ValueError, "lr"),
        ({"num_samples": 0}, ValueError, "num_samples"),
        ({"kl": 0.5}, TypeError, "KLSchedule"),
        ({"validation": (torch.randn(4, 2), torch.randn(4, 1))}, TypeError, "Validation"),
        ({"likelihood": "gaussian"}, TypeError, "Likelihood"),
    ],
)
def test_fit_rejects_bad_hyperparameters(kwargs: dict, error: type[Exception], match: str) -> None:
    options = {"likelihood": bnn.Gaussian(1.0), "progress": False, **kwargs}
    with pytest.raises(error, match=match):
        bnn.fit(bnn.BayesLinear(2, 1), (torch.randn(8, 2), torch.randn(8, 1)), **options)


@pytest.mark.parametrize(
    "data, match",
    [
        ((torch.randn(8, 2), torch.randn(7, 1)), "8 rows but y has 7"),
        ((torch.full((8, 2), float("nan")), torch.randn(8, 1)), "NaN"),
        ((torch.randn(0, 2), torch.randn(0, 1)), "empty"),
    ],
)
def test_fit_rejects_bad_data(data: tuple, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        bnn.fit(bnn.BayesLinear(2, 1), data, likelihood=bnn.Gaussian(1.0), progress=False)


def test_fit_rejects_mismatched_target_shape() -> None:
    with pytest.raises(ValueError, match="reshape y"):
        bnn.fit(
            bnn.BayesLinear(2, 3),
            (torch.randn(8, 2), torch.randn(8, 2)),
            likelihood=bnn.Gaussian(1.0),
            progress=False,
        )


@pytest.mark.parametrize(
    "build, match",
    [
        (lambda: bnn.infer.KLSchedule(weight=-1.0), "kl weight"),
        (lambda: bnn.infer.KLSchedule(annealing_epochs=-1), "annealing_epochs"),
        (lambda: bnn.infer.Validation(torch.randn(4, 2), torch.randn(3, 1)), "must match"),
        (
            lambda: bnn.infer.Validation(torch.randn(4, 2), torch.randn(4, 1), num_samples=0),
            "num_samples",
        ),
    ],
)
def test_option_objects_reject_bad_values(build: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        build()
