"""Stacking: weights on constructed cases with known answers, PSIS-LOO against ArviZ."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

import bnn
from bnn.evaluate.diagnostics import arviz_module
from bnn.infer.ensembles._psis import psis_loo
from bnn.infer.ensembles.stacking import StackedPosterior, stack, stacking_weights

NOISE = 0.3


class Fixed:
    """A deterministic posterior: fixed function samples ``fn(x)`` ``[S, N, ...]``."""

    def __init__(self, fn) -> None:  # type: ignore[no-untyped-def]
        self.fn = fn

    def sample_functions(self, x, num_samples, *, rng=None, memory_budget=None):  # type: ignore[no-untyped-def]  # noqa: ARG002
        return self.fn(x)[:num_samples]


def _data(n: int, seed: int) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, dtype=torch.float64, generator=g) * 2 - 1
    return x, torch.sin(3 * x) + NOISE * torch.randn(n, 1, dtype=torch.float64, generator=g)


TRUE = Fixed(lambda x: torch.sin(3 * x).unsqueeze(0))
WRONG = Fixed(lambda x: (0.6 * torch.sin(3 * x) + 0.2).unsqueeze(0))


def _normal_log_density(y: Tensor, mean: Tensor) -> Tensor:
    return (-0.5 * ((y - mean) / NOISE) ** 2 - math.log(NOISE) - 0.5 * math.log(2 * math.pi)).sum(
        -1
    )


def test_the_true_predictive_takes_the_weight_as_data_grow() -> None:
    # At w_true = 1 the derivative of E log(w p + (1 − w) q) is 1 − ∫q = 0, so the fitted
    # 1 − w_true is max(0, −Z)/sqrt(N·I) with Z ~ N(0, 1) and I = E_p[(1 − q/p)²] (the χ²
    # divergence of q from p, estimated on the data): bounded by 4.5/sqrt(N·I).
    likelihood = bnn.Gaussian(NOISE)
    std = float(likelihood.std)
    for n in (200, 2000, 20000):
        x, y = _data(n, n)
        _, history = stack([TRUE, WRONG], x, y, likelihood=likelihood, num_samples=1, rng=0)
        ratio = torch.exp(
            (-0.5 * ((y - 0.6 * torch.sin(3 * x) - 0.2) / std) ** 2)
            - (-0.5 * ((y - torch.sin(3 * x)) / std) ** 2)
        )
        information = float(((1 - ratio) ** 2).mean())
        w_true = history.weights[0]
        print(f"N={n}: w_true={w_true:.5f}, bound {4.5 / math.sqrt(n * information):.5f}")
        assert 1 - w_true <= 4.5 / math.sqrt(n * information)
        assert history.stacked_log_score >= max(history.member_log_scores)


def _complementary() -> tuple[Fixed, Fixed]:
    left = Fixed(lambda x: torch.where(x < 0, torch.sin(3 * x), 0.0 * x).unsqueeze(0))
    right = Fixed(lambda x: torch.where(x >= 0, torch.sin(3 * x), 0.0 * x).unsqueeze(0))
    return left, right


def test_complementary_members_get_the_interior_optimum_of_a_brute_force_grid() -> None:
    x, y = _data(500, 1)
    left, right = _complementary()
    likelihood = bnn.Gaussian(NOISE)
    stacked, history = stack([left, right], x, y, likelihood=likelihood, num_samples=1)
    log_left = _normal_log_density(y, left.fn(x)[0])
    log_right = _normal_log_density(y, right.fn(x)[0])
    # the test's own densities use NOISE; the likelihood's float32-stored std differs by 1e-8
    # relatively, which moves the optimum far less than the grid step.
    grid = torch.linspace(0, 1, 100_001, dtype=torch.float64)  # step 1e-5
    scores = torch.logsumexp(
        torch.stack([log_left + grid[:, None].log(), log_right + (1 - grid[:, None]).log()]),
        0,
    ).mean(-1)
    best = float(grid[scores.argmax()])
    assert 0.05 < best < 0.95  # interior
    assert abs(history.weights[0] - best) <= 2e-5
    assert torch.allclose(stacked.weights.sum(), torch.tensor(1.0, dtype=torch.float64))
    assert history.stacked_log_score >= float(scores.max()) - 1e-7
    assert all(history.stacked_log_score >= s for s in history.member_log_scores)


def test_stacking_weights_satisfy_the_optimality_conditions_for_three_members() -> None:
    g = torch.Generator().manual_seed(3)
    log_densities = torch.randn(3, 400, dtype=torch.float64, generator=g)
    log_densities[2] -= 0.8  # a worse member
    weights, gap, _ = stacking_weights(log_densities)
    assert gap <= 1e-10
    p = log_densities.exp()
    gradient = (p / (weights @ p)).mean(1)
    # KKT: gradient = 1 where the weight is positive, ≤ 1 where it is zero
    positive = weights > 1e-6
    assert torch.allclose(gradient[positive], torch.ones_like(gradient[positive]), atol=1e-8)
    assert bool((gradient <= 1 + 1e-8).all())


def test_the_stacked_posterior_draws_members_in_proportion_and_is_seeded() -> None:
    zero = Fixed(lambda x: torch.zeros(7, x.shape[0], 1))  # an "ensemble" of 7 members
    one = Fixed(lambda x: torch.ones(1000, x.shape[0], 1))
    stacked = StackedPosterior([zero, one], torch.tensor([0.3, 0.7]))
    assert isinstance(stacked, bnn.Posterior)
    x = torch.zeros(5, 1)
    for s in (1, 10, 33, 100):
        samples = stacked.sample_functions(x, s, rng=4)
        assert samples.shape == (s, 5, 1)
        assert abs(float(samples[:, 0, 0].sum()) - 0.7 * s) < 1  # systematic: within one draw
    torch.testing.assert_close(
        stacked.sample_functions(x, 50, rng=1), stacked.sample_functions(x, 50, rng=1)
    )
    prediction = bnn.predict_with_uncertainty(stacked, x, num_samples=100, rng=0)
    assert float(prediction.mean[0, 0]) == pytest.approx(0.7, abs=0.01)


def test_the_stacked_posterior_is_reproducible_with_random_members() -> None:
    class Noisy:
        def sample_functions(self, x, num_samples, *, rng=None, memory_budget=None):  # type: ignore[no-untyped-def]  # noqa: ARG002
            g = bnn.random.resolve_rng(rng).torch_generator("predict")
            return torch.randn(num_samples, x.shape[0], 1, generator=g)

    stacked = StackedPosterior([Noisy(), Noisy()], torch.tensor([0.5, 0.5]))
    x = torch.zeros(4, 1)
    a = stacked.sample_functions(x, 20, rng=bnn.RNG(3))
    b = stacked.sample_functions(x, 20, rng=bnn.RNG(3))
    c = stacked.sample_functions(x, 20, rng=bnn.RNG(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert not torch.equal(a[:10], a[10:])  # the members draw from different children


class Carrying(Fixed):
    """A deterministic posterior that brings its own, wider, noise model."""

    @property
    def predictive_likelihood(self) -> bnn.Gaussian:
        return bnn.Gaussian(0.6)


def test_members_with_their_own_likelihood_are_mixed_by_their_own_predictives() -> None:
    x, y = _data(400, 7)
    wide = Carrying(lambda x: (0.5 * torch.sin(3 * x)).unsqueeze(0))
    stacked, history = stack([TRUE, wide], x, y, likelihood=bnn.Gaussian(NOISE), rng=0)
    # the carried likelihood scored the wide member: its log score is the N(0.5 sin, 0.6²) one
    std = float(bnn.Gaussian(0.6).std)
    wide_score = (
        -0.5 * ((y - 0.5 * torch.sin(3 * x)) / std) ** 2
        - math.log(std)
        - 0.5 * math.log(2 * math.pi)
    ).mean()
    assert history.member_log_scores[1] == pytest.approx(float(wide_score), rel=1e-6)
    x_test, y_test = _data(50, 8)
    prediction = bnn.predict_with_uncertainty(stacked, x_test, num_samples=1000, rng=0)
    shares = stacked.counts(1000, 0).double() / 1000  # the shares the prediction used
    assert bool(((shares - stacked.weights).abs() <= 1e-3).all())
    p_true = torch.exp(_normal_log_density(y_test, torch.sin(3 * x_test)))
    p_wide = torch.exp(
        -0.5 * ((y_test - 0.5 * torch.sin(3 * x_test)) / std) ** 2
        - math.log(std)
        - 0.5 * math.log(2 * math.pi)
    ).squeeze(-1)
    expected = torch.log(shares[0] * p_true + shares[1] * p_wide)
    torch.testing.assert_close(prediction.log_likelihood(y_test), expected, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="different shapes"):
        two = Carrying(lambda x: torch.cat([x, x], -1).unsqueeze(0))
        StackedPosterior([TRUE, two], torch.tensor([0.5, 0.5])).sample_functions(
            torch.zeros(3, 1), 10
        )


# ------------------------------------------------------------------ LOO
def test_psis_loo_matches_arviz() -> None:
    az = arviz_module()
    g = torch.Generator().manual_seed(0)
    for s in (100, 1000):
        mu = 0.3 * torch.randn(s, 1, dtype=torch.float64, generator=g)
        y = 1.5 * torch.randn(40, dtype=torch.float64, generator=g)
        y[0] = 5.0  # an influential point: a heavy tail of importance ratios
        log_lik = -0.5 * (y - mu) ** 2 - 0.5 * math.log(2 * math.pi)
        data = az.from_dict(
            posterior={"mu": mu.T.numpy()}, log_likelihood={"y": log_lik.numpy()[None]}
        )
        with pytest.warns(UserWarning) if s == 100 else _nothing():
            reference = az.loo(data, pointwise=True)
        elpd, k_hat = psis_loo(log_lik)
        torch.testing.assert_close(
            elpd, torch.as_tensor(reference.loo_i.values), rtol=0, atol=1e-12
        )
        torch.testing.assert_close(
            k_hat, torch.as_tensor(reference.pareto_k.values), rtol=0, atol=1e-12
        )


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *args: object) -> None:
        return None


def test_loo_stacking_uses_the_psis_loo_densities() -> None:
    g = torch.Generator().manual_seed(5)
    x, y = _data(60, 6)
    draws_true = torch.sin(3 * x).unsqueeze(0) + 0.05 * torch.randn(
        400, 60, 1, generator=g, dtype=torch.float64
    )
    draws_wrong = 0.5 * torch.sin(3 * x).unsqueeze(0) + 0.05 * torch.randn(
        400, 60, 1, generator=g, dtype=torch.float64
    )
    members = [Fixed(lambda x: draws_true), Fixed(lambda x: draws_wrong)]
    likelihood = bnn.Gaussian(NOISE)
    _, history = stack(members, x, y, likelihood=likelihood, method="loo", num_samples=400)
    std = float(likelihood.std)
    expected = []
    for draws in (draws_true, draws_wrong):
        log_lik = (
            -0.5 * ((y - draws) / std) ** 2 - math.log(std) - 0.5 * math.log(2 * math.pi)
        ).squeeze(-1)
        expected.append(psis_loo(log_lik)[0])
    weights, _, _ = stacking_weights(torch.stack(expected))
    torch.testing.assert_close(
        torch.tensor(history.weights, dtype=torch.float64), weights, rtol=0, atol=1e-9
    )
    assert history.weights[0] > 0.5
    assert len(history.max_pareto_k) == 2


# ------------------------------------------------------------------ bad input
def test_bad_input_is_refused() -> None:
    x, y = _data(30, 0)
    likelihood = bnn.Gaussian(NOISE)
    two_outputs = Fixed(lambda x: torch.cat([x, x], -1).unsqueeze(0))
    with pytest.raises(ValueError, match="different shapes"):
        stack([TRUE, two_outputs], x, y, likelihood=likelihood)
    with pytest.raises(ValueError, match="rows"):
        stack([TRUE, WRONG], x, y[:10], likelihood=likelihood)
    with pytest.raises(ValueError, match="method must be"):
        stack([TRUE, WRONG], x, y, likelihood=likelihood, method="bma")
    with pytest.raises(TypeError, match="likelihood"):
        stack([TRUE, WRONG], x, y)
    with pytest.raises(TypeError, match="not a bnn Posterior"):
        stack([TRUE, "model"], x, y, likelihood=likelihood)  # type: ignore[list-item]
    with pytest.raises(ValueError, match="sum to 1"):
        StackedPosterior([TRUE, WRONG], torch.tensor([0.5, 0.6]))
