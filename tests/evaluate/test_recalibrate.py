"""Recalibration: temperature and std scaling against closed forms, conformal coverage.

Coverage tolerances. For continuous scores split conformal coverage of one test point,
given the calibration set, is ``p ~ Beta(k, n + 1 − k)`` with ``k = ⌈(n + 1)(1 − α)⌉``
(Vovk et al. 2005; Angelopoulos & Bates 2021, §3.2), so ``E[p] = k/(n + 1)`` exactly, which lies
in ``[1 − α, 1 − α + 1/(n + 1)]``. The coverage of ``m`` test points in one repetition has
variance ``Var(p) + E[p(1 − p)]/m``; the mean over ``R`` independent repetitions has that over
``R``. Tests allow ``K_SD = 4.5`` of those standard deviations (two-sided false alarm ≈ 7e-6).
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

import bnn
from bnn.evaluate import metrics
from bnn.evaluate.recalibrate import (
    ConformalClassificationPrediction,
    ConformalRegressionPrediction,
    StdScaled,
    TemperatureScaled,
    conformalize,
    std_scale,
    temperature_scale,
)

K_SD = 4.5


class Fixed:
    """A deterministic posterior: fixed function samples ``fn(x)`` ``[S, N, ...]``."""

    def __init__(self, fn) -> None:  # type: ignore[no-untyped-def]
        self.fn = fn

    def sample_functions(self, x, num_samples, *, rng=None, memory_budget=None):  # type: ignore[no-untyped-def]  # noqa: ARG002
        out = self.fn(x)
        return out[:num_samples]


def _coverage_sd(n: int, level: float, m: int, repetitions: int) -> tuple[float, float]:
    """Exact mean and Monte Carlo sd of the mean coverage over repetitions (module docstring)."""
    k = math.ceil(round((n + 1) * level, 9))
    a, b = k, n + 1 - k
    mean = a / (a + b)
    var_p = a * b / ((a + b) ** 2 * (a + b + 1))
    e_p1p = mean - (var_p + mean**2)
    return mean, math.sqrt((var_p + e_p1p / m) / repetitions)


# ------------------------------------------------------------------ temperature scaling
W = torch.tensor([[2.0, -1.0, 0.0], [0.5, 1.5, -2.0]], dtype=torch.float64)


def _classification_data(n: int, seed: int) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 2, generator=g, dtype=torch.float64)
    y = torch.multinomial((x @ W).softmax(-1), 1, generator=g).squeeze(-1)
    return x, y


def test_temperature_recovers_the_overconfidence_factor_within_its_standard_error() -> None:
    # The model's logits are 3× the true ones, so the NLL-optimal temperature tends to 3.
    c, n = 3.0, 4000
    x, y = _classification_data(n, 0)
    model = Fixed(lambda x: (c * x @ W).unsqueeze(0))
    scaled = temperature_scale(model, x, y, likelihood=bnn.Categorical(), rng=0)
    assert isinstance(scaled, TemperatureScaled) and isinstance(scaled, bnn.Posterior)
    # standard error of log T̂ from the observed information of the mean NLL at the optimum
    t = torch.tensor(math.log(scaled.temperature), dtype=torch.float64, requires_grad=True)

    def nll(t: Tensor) -> Tensor:
        return F.cross_entropy(c * x @ W * torch.exp(-t), y)

    (grad,) = torch.autograd.grad(nll(t), t, create_graph=True)
    (curvature,) = torch.autograd.grad(grad, t)
    assert abs(float(grad.detach())) < 1e-7  # the fit is at the optimum
    se = 1.0 / math.sqrt(n * float(curvature))
    assert abs(math.log(scaled.temperature) - math.log(c)) < K_SD * se
    assert scaled.nll_after < scaled.nll_before


def test_temperature_scaling_reduces_ece_and_keeps_accuracy() -> None:
    x_cal, y_cal = _classification_data(2000, 1)
    x_test, y_test = _classification_data(4000, 2)
    model = Fixed(lambda x: (4.0 * x @ W).unsqueeze(0))
    scaled = temperature_scale(model, x_cal, y_cal, rng=0)
    before = bnn.predict_with_uncertainty(model, x_test, likelihood=bnn.Categorical())
    after = bnn.predict_with_uncertainty(scaled, x_test, likelihood=bnn.Categorical())
    ece_before = metrics.expected_calibration_error(before, y_test)
    ece_after = metrics.expected_calibration_error(after, y_test)
    print(f"T = {scaled.temperature:.3f}, ECE {ece_before:.4f} -> {ece_after:.4f}")
    # a calibrated classifier's ECE on 4000 points is sampling noise, ~0.01-0.02
    assert ece_after < 0.3 * ece_before
    assert torch.equal(before.probs.argmax(-1), after.probs.argmax(-1))
    assert metrics.accuracy(before, y_test) == metrics.accuracy(after, y_test)


def test_temperature_of_a_sample_mixture_minimises_the_mixture_nll_on_a_grid() -> None:
    # S = 8 logit samples per input; T scales each sample's logits, then softmaxes average.
    x, y = _classification_data(500, 3)
    g = torch.Generator().manual_seed(4)
    noise = torch.randn(8, 1, 3, generator=g, dtype=torch.float64)
    samples = 2.5 * (x @ W).unsqueeze(0) + noise
    scaled = temperature_scale(Fixed(lambda x: samples), x, y, num_samples=8, rng=0)

    def mixture_nll(temperature: float) -> float:
        probs = (samples / temperature).softmax(-1).mean(0)
        return -float(probs.gather(-1, y[:, None]).log().mean())

    grid = torch.linspace(0.5, 5.0, 4501).tolist()  # step 1e-3
    best = min(grid, key=mixture_nll)
    assert abs(scaled.temperature - best) <= 1e-3
    assert mixture_nll(scaled.temperature) <= mixture_nll(best) + 1e-12


def test_temperature_for_a_bernoulli_logit_equals_the_two_class_softmax() -> None:
    # sigmoid(z / T) = softmax([0, z] / T)[1]: both likelihoods must fit the same T.
    g = torch.Generator().manual_seed(5)
    x = torch.randn(3000, 1, dtype=torch.float64, generator=g)
    y = torch.bernoulli(torch.sigmoid(1.5 * x), generator=g)
    binary = temperature_scale(
        Fixed(lambda x: (3.0 * x).unsqueeze(0)), x, y, likelihood=bnn.Bernoulli(), rng=0
    )
    two_class = temperature_scale(
        Fixed(lambda x: torch.cat([torch.zeros_like(x), 3.0 * x], -1).unsqueeze(0)),
        x,
        y.squeeze(-1).long(),
        likelihood=bnn.Categorical(),
        rng=0,
    )
    assert binary.temperature == pytest.approx(two_class.temperature, rel=1e-9)
    assert binary.temperature > 1.5  # 3 / 1.5 = 2 in the limit


def test_temperature_scaling_refuses_regression_and_bad_targets() -> None:
    x, y = _classification_data(50, 0)
    model = Fixed(lambda x: (x @ W).unsqueeze(0))
    with pytest.raises(TypeError, match="std_scale"):
        temperature_scale(model, x, y.double(), likelihood=bnn.Gaussian(0.1))
    with pytest.raises(ValueError, match="rows"):
        temperature_scale(model, x, y[:40])
    with pytest.raises(ValueError, match=r"lie in \[0, 2\]"):
        temperature_scale(model, x, y + 3)


# ------------------------------------------------------------------ std scaling
def test_std_scaling_of_one_gaussian_matches_the_closed_form() -> None:
    g = torch.Generator().manual_seed(6)
    x = torch.rand(400, 1, dtype=torch.float64, generator=g)
    y = torch.sin(3 * x) + 0.3 * torch.randn(400, 1, dtype=torch.float64, generator=g)
    model = Fixed(lambda x: torch.cat([torch.sin(3 * x), torch.full_like(x, -1.0)], -1)[None])
    likelihood = bnn.HeteroscedasticGaussian()
    scaled = std_scale(model, x, y, likelihood=likelihood, rng=0)
    sigma = F.softplus(torch.tensor(-1.0, dtype=torch.float64)) + likelihood.min_std
    expected = math.sqrt(float((((y - torch.sin(3 * x)) / sigma) ** 2).mean()))
    assert scaled.factor == pytest.approx(expected, rel=1e-7)
    assert isinstance(scaled, StdScaled)


def test_std_scaled_mixture_keeps_the_mean_and_scales_the_std_and_quantiles() -> None:
    g = torch.Generator().manual_seed(7)
    samples = torch.randn(5, 30, 1, dtype=torch.float64, generator=g)
    x = torch.zeros(30, 1, dtype=torch.float64)
    model = Fixed(lambda x: samples)
    inner = bnn.predict_with_uncertainty(model, x, num_samples=5, likelihood=bnn.Gaussian(0.5))
    wrapped = StdScaled(model, 1.7)
    outer = bnn.predict_with_uncertainty(wrapped, x, num_samples=5, likelihood=bnn.Gaussian(0.5))
    torch.testing.assert_close(outer.mean, inner.mean, rtol=0, atol=1e-12)
    torch.testing.assert_close(outer.std, 1.7 * inner.std, rtol=1e-12, atol=0)
    torch.testing.assert_close(
        outer.quantile(0.9) - outer.mean,
        1.7 * (inner.quantile(0.9) - inner.mean),
        rtol=1e-9,
        atol=1e-9,
    )


def test_std_scaling_needs_noise() -> None:
    x = torch.zeros(20, 1)
    model = Fixed(lambda x: x.unsqueeze(0))
    with pytest.raises(ValueError, match="observation noise"):
        std_scale(model, x, torch.ones(20, 1))


# ------------------------------------------------------------------ conformal regression
def _regression_data(n: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
    x = torch.rand(n, 1, dtype=torch.float64, generator=g) * 2 - 1
    noise = (0.1 + 0.5 * x.abs()) * torch.randn(n, 1, dtype=torch.float64, generator=g)
    return x, torch.sin(3 * x) + noise


def _misspecified(x: Tensor) -> Tensor:
    """A wrong model: shrunk mean, a std that grows the wrong way: ``[1, N, 2]``."""
    raw = torch.log(torch.expm1(0.4 - 0.2 * x.abs()))
    return torch.cat([0.8 * torch.sin(3 * x), raw], -1).unsqueeze(0)


@pytest.mark.parametrize("method", ["absolute", "normalized", "cqr"])
def test_split_conformal_regression_coverage(method: str) -> None:
    n, m, repetitions, level = 47, 100, 300, 0.9
    model, likelihood = Fixed(_misspecified), bnn.HeteroscedasticGaussian()
    g = torch.Generator().manual_seed(8)
    coverage = []
    for _ in range(repetitions):
        x_cal, y_cal = _regression_data(n, g)
        x_test, y_test = _regression_data(m, g)
        conformal = conformalize(
            model, x_cal, y_cal, level=level, method=method, likelihood=likelihood, rng=0
        )
        lower, upper = conformal.interval(x_test)
        coverage.append(float(((y_test >= lower) & (y_test <= upper)).double().mean()))
    mean = sum(coverage) / repetitions
    exact, sd = _coverage_sd(n, level, m, repetitions)
    print(f"{method}: coverage {mean:.4f}, exact {exact:.4f} ± {sd:.4f}")
    assert level - K_SD * sd <= mean <= level + 1 / (n + 1) + K_SD * sd
    assert abs(mean - exact) <= K_SD * sd


@pytest.mark.parametrize("level", [0.8, 0.95])
def test_split_conformal_coverage_at_more_levels_and_sizes(level: float) -> None:
    n, m, repetitions = 99, 200, 1000
    model, likelihood = Fixed(_misspecified), bnn.HeteroscedasticGaussian()
    g = torch.Generator().manual_seed(9)
    coverage = []
    for _ in range(repetitions):
        x_cal, y_cal = _regression_data(n, g)
        x_test, y_test = _regression_data(m, g)
        conformal = conformalize(model, x_cal, y_cal, level=level, likelihood=likelihood)
        prediction = conformal.predict(x_test)
        coverage.append(metrics.interval_coverage(prediction, y_test, level))  # type: ignore[arg-type]
    exact, sd = _coverage_sd(n, level, m, repetitions)
    assert abs(sum(coverage) / repetitions - exact) <= K_SD * sd


def test_conformal_prediction_works_through_predict_with_uncertainty() -> None:
    g = torch.Generator().manual_seed(10)
    x_cal, y_cal = _regression_data(200, g)
    x_test, y_test = _regression_data(50, g)
    likelihood = bnn.HeteroscedasticGaussian()
    conformal = conformalize(Fixed(_misspecified), x_cal, y_cal, likelihood=likelihood)
    assert conformal.method == "normalized"
    prediction = bnn.predict_with_uncertainty(conformal, x_test, likelihood=likelihood)
    assert isinstance(prediction, ConformalRegressionPrediction)
    lower, upper = prediction.interval()
    torch.testing.assert_close((lower, upper), conformal.interval(x_test))
    wider = prediction.interval(0.95)
    assert bool((wider[0] <= lower).all() and (wider[1] >= upper).all())
    inner = bnn.predict_with_uncertainty(Fixed(_misspecified), x_test, likelihood=likelihood)
    torch.testing.assert_close(prediction.mean, inner.mean)
    assert 0.0 <= metrics.interval_coverage(prediction, y_test, 0.9) <= 1.0


# ------------------------------------------------------------------ conformal classification
def _overconfident(x: Tensor) -> Tensor:
    return (2.5 * x @ W + torch.tensor([0.5, 0.0, -0.5], dtype=torch.float64)).unsqueeze(0)


@pytest.mark.parametrize("randomized", [True, False])
def test_aps_coverage(randomized: bool) -> None:
    n, m, repetitions, level = 47, 100, 300, 0.9
    coverage, sizes = [], []
    for r in range(repetitions):
        x_cal, y_cal = _classification_data(n, 100 + 2 * r)
        x_test, y_test = _classification_data(m, 101 + 2 * r)
        conformal = conformalize(
            Fixed(_overconfident),
            x_cal,
            y_cal,
            level=level,
            likelihood=bnn.Categorical(),
            randomized=randomized,
            rng=r,
        )
        sets = conformal.prediction_set(x_test, rng=r)
        coverage.append(float(sets.gather(-1, y_test[:, None]).double().mean()))
        sizes.append(float(sets.sum(-1).double().mean()))
        if not randomized:
            assert bool(sets.any(-1).all())  # never empty
    mean = sum(coverage) / repetitions
    exact, sd = _coverage_sd(n, level, m, repetitions)
    print(
        f"APS randomized={randomized}: coverage {mean:.4f} (exact {exact:.4f} ± {sd:.4f}), "
        f"mean size {sum(sizes) / repetitions:.2f}"
    )
    assert mean >= level - K_SD * sd
    if randomized:  # exact for continuous (randomised) scores
        assert abs(mean - exact) <= K_SD * sd


def test_aps_through_predict_is_reproducible_and_binary_works() -> None:
    x_cal, y_cal = _classification_data(100, 20)
    x_test, _ = _classification_data(30, 21)
    conformal = conformalize(
        Fixed(_overconfident), x_cal, y_cal, likelihood=bnn.Categorical(), rng=0
    )
    assert conformal.method == "aps" and conformal.randomized
    first = bnn.predict_with_uncertainty(conformal, x_test, likelihood=bnn.Categorical(), rng=3)
    again = bnn.predict_with_uncertainty(conformal, x_test, likelihood=bnn.Categorical(), rng=3)
    assert isinstance(first, ConformalClassificationPrediction)
    assert torch.equal(first.prediction_set(), again.prediction_set())
    assert first.prediction_set(0.5).sum() <= first.prediction_set(0.95).sum()
    g = torch.Generator().manual_seed(22)
    xb = torch.randn(200, 1, dtype=torch.float64, generator=g)
    yb = torch.bernoulli(torch.sigmoid(2 * xb), generator=g)
    binary = conformalize(
        Fixed(lambda x: (3 * x).unsqueeze(0)), xb, yb, likelihood=bnn.Bernoulli(), rng=0
    )
    assert binary.prediction_set(xb[:10]).shape == (10, 2)


# ------------------------------------------------------------------ bad input
def test_conformal_bad_input_is_refused_before_work() -> None:
    x, y = _classification_data(8, 0)
    model, categorical = Fixed(_overconfident), bnn.Categorical()
    with pytest.raises(ValueError, match=r"at least 1/α − 1 = 9 calibration points, got 8"):
        conformalize(model, x, y, level=0.9, likelihood=categorical)
    x9, y9 = _classification_data(9, 0)
    conformalize(model, x9, y9, level=0.9, likelihood=categorical)  # exactly enough
    with pytest.raises(ValueError, match="rows"):
        conformalize(model, x9, y9[:5], likelihood=categorical)
    with pytest.raises(ValueError, match="method must be one of"):
        conformalize(model, x9, y9, method="jackknife")
    with pytest.raises(ValueError, match="for regression"):
        conformalize(model, x9, y9, method="cqr", likelihood=categorical)
    g = torch.Generator().manual_seed(0)
    xr, yr = _regression_data(50, g)
    regression = conformalize(
        Fixed(_misspecified), xr, yr, likelihood=bnn.HeteroscedasticGaussian()
    )
    with pytest.raises(ValueError, match="at least 1/α − 1 = 99"):
        regression.interval(xr, 0.99)
    with pytest.raises(ValueError, match="reshape y"):
        conformalize(
            Fixed(_misspecified), xr, yr.repeat(1, 2), likelihood=bnn.HeteroscedasticGaussian()
        )
    noise_free = Fixed(lambda x: x.unsqueeze(0))
    with pytest.raises(ValueError, match="predictive std"):
        conformalize(noise_free, xr, yr, method="normalized")
    assert conformalize(noise_free, xr, yr).method == "absolute"
