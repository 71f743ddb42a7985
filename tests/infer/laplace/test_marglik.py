"""Online marginal-likelihood training against the closed form of Bayesian linear regression."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import bnn
from bnn.infer import marglik_training


def _linear_problem() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(200, 3, dtype=torch.float64, generator=generator)
    weights = torch.randn(3, 1, dtype=torch.float64, generator=generator) / 2.0
    y = x @ weights + 0.3 * torch.randn(200, 1, dtype=torch.float64, generator=generator)
    return x, y


def _evidence_maximum(x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """``argmax_{δ,σ} log N(y | 0, σ² I + X Xᵀ / δ)``: type-II maximum likelihood, exactly."""
    log_delta = torch.zeros((), dtype=torch.float64, requires_grad=True)
    log_sigma = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS(
        [log_delta, log_sigma], max_iter=500, tolerance_grad=1e-12, line_search_fn="strong_wolfe"
    )
    n = x.shape[0]

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        covariance = torch.exp(2 * log_sigma) * torch.eye(n, dtype=torch.float64)
        covariance = covariance + x @ x.T / torch.exp(log_delta)
        evidence = torch.distributions.MultivariateNormal(torch.zeros(n, dtype=x.dtype), covariance)
        loss = -evidence.log_prob(y.squeeze(-1))
        loss.backward()  # type: ignore[no-untyped-call]
        return loss

    optimizer.step(closure)  # type: ignore[no-untyped-call]
    return math.exp(log_delta.item()), math.exp(log_sigma.item())


def test_a_linear_model_reaches_the_exact_evidence_maximum_and_posterior() -> None:
    """For a linear-Gaussian model the Laplace evidence is exact, so the alternation of MAP and
    evidence steps has the type-II maximum-likelihood (δ, σ) as its fixed point, and the
    returned posterior is the exact Gaussian posterior there. The remaining error is the
    optimisers' (no randomness: full batch), well under the stated 1e-3."""
    x, y = _linear_problem()
    net = nn.Linear(3, 1, bias=False).double()
    posterior, history = marglik_training(
        net,
        (x, y),
        likelihood=bnn.Gaussian(1.0),
        hessian="full",
        epochs=600,
        lr=0.05,
        every=20,
        burn_in=50,
        rng=0,
        progress=False,
    )
    delta, sigma = _evidence_maximum(x, y)
    assert float(posterior.prior_precision) == pytest.approx(delta, rel=1e-3)
    assert posterior.noise_std == pytest.approx(sigma, rel=1e-3)
    # the exact posterior at the returned (δ, σ): precision XᵀX/σ² + δI, mean Λ⁻¹ Xᵀy / σ²
    returned_delta, returned_sigma = float(posterior.prior_precision), posterior.noise_std
    assert returned_sigma is not None
    precision = x.T @ x / returned_sigma**2 + returned_delta * torch.eye(3, dtype=x.dtype)
    mean = torch.linalg.solve(precision, x.T @ y / returned_sigma**2).squeeze(-1)
    torch.testing.assert_close(posterior.mean, mean, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(posterior.posterior_precision, precision, rtol=1e-8, atol=1e-8)
    updates = len(range(50, 600, 20)) + 1  # every 20 epochs from epoch 50, and the final fit
    assert len(history.extras["prior_precision"]) == updates
    assert history.extras["log_marglik"][-1] == pytest.approx(
        float(posterior.log_marginal_likelihood()), rel=1e-12
    )
    assert len(history.loss) == 600


def _classification_problem() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(120, 2, generator=generator)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long() + (x[:, 1] > 1).long()
    return x, y


def _classifier(seed: int) -> nn.Module:
    with bnn.RNG(seed).stream("init"):
        return nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 3))


@pytest.mark.parametrize("hessian", ["kron", "diag"])
def test_per_layer_classification_is_reproducible_and_predicts(hessian: str) -> None:
    x, y = _classification_problem()

    def run(seed: int) -> tuple[bnn.infer.LaplacePosterior, bnn.infer.History]:
        return marglik_training(
            _classifier(0),
            (x, y),
            likelihood=bnn.Categorical(),
            hessian=hessian,  # type: ignore[arg-type]
            epochs=60,
            batch_size=32,
            every=20,
            burn_in=20,
            per_layer=True,
            rng=seed,
            progress=False,
        )

    first, history = run(0)
    again, _ = run(0)
    other, _ = run(1)
    assert torch.equal(first.mean, again.mean)
    assert not torch.equal(first.mean, other.mean)  # another mini-batch order
    assert first.prior_precision.shape == (2,)  # one δ per layer
    assert first.noise_std is None and history.extras["noise_std"] == [None] * 3
    prediction = bnn.predict_with_uncertainty(first, x, num_samples=10, rng=0)
    assert prediction.probs.shape == (120, 3)
    assert float(bnn.evaluate.metrics.accuracy(prediction, y)) > 0.8


def test_dropout_draws_follow_rng_not_the_global_seed() -> None:
    x, y = _classification_problem()

    def run(global_seed: int, rng: int) -> torch.Tensor:
        torch.manual_seed(global_seed)
        with bnn.RNG(0).stream("init"):
            model = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Dropout(0.3), nn.Linear(8, 3))
        posterior, _ = marglik_training(
            model,
            (x, y),
            likelihood=bnn.Categorical(),
            hessian="diag",
            epochs=6,
            every=2,
            burn_in=2,
            hyper_steps=5,
            rng=rng,
            progress=False,
        )
        return posterior.mean

    first = run(1, rng=0)
    assert torch.equal(first, run(2, rng=0))
    assert not torch.equal(first, run(1, rng=1))  # full batch: only the dropout masks differ


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"likelihood": bnn.Bernoulli()}, "Gaussian .* or bnn.Categorical"),
        ({"burn_in": 10}, "burn_in .* must be below epochs"),
        ({"every": 0}, "every"),
        ({"lr": -1.0}, "lr"),
        ({"prior_precision": 0.0}, "prior_precision"),
        ({"batch_size": 0}, "batch_size"),
    ],
)
def test_bad_arguments_are_refused_before_training(change: dict[str, object], match: str) -> None:
    x, y = _linear_problem()
    options: dict[str, object] = {
        "likelihood": bnn.Gaussian(1.0),
        "epochs": 10,
        "burn_in": 2,
        "progress": False,
    }
    options.update(change)
    net = nn.Linear(3, 1).double()
    before = [p.detach().clone() for p in net.parameters()]
    with pytest.raises(ValueError, match=match):
        marglik_training(net, (x, y), **options)  # type: ignore[arg-type]
    assert all(torch.equal(a, b) for a, b in zip(before, net.parameters(), strict=True))
