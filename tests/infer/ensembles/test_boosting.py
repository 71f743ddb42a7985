"""Gradient boosting: least squares with linear learners, monotone stages, reproducibility."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

import bnn
from bnn.infer.ensembles.boosting import BoostedPosterior, boost


def _linear_problem(n: int = 200) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 3, dtype=torch.float64, generator=g)
    w = torch.tensor([[1.5], [-2.0], [0.5]], dtype=torch.float64)
    return x, x @ w + 0.7 + 0.3 * torch.randn(n, 1, dtype=torch.float64, generator=g)


def _linear() -> nn.Module:
    return nn.Linear(3, 1).double()


def test_linear_learners_converge_to_least_squares() -> None:
    # A linear learner fitted exactly (L-BFGS on a quadratic) is the least-squares fit of the
    # residual, the line search gives ρ = 1, and the residual's component in the column space
    # shrinks by (1 − ν) per stage: after M = 40 stages with ν = 0.5 the boosted fit is
    # 0.5^40 ≈ 1e-12 (relatively) from least squares, up to the learners' fitting error.
    x, y = _linear_problem()
    design = torch.cat([x, torch.ones(len(x), 1, dtype=torch.float64)], 1)
    least_squares = design @ torch.linalg.lstsq(design, y).solution
    errors = []
    for stages in (5, 40):
        boosted, history = boost(
            _linear,
            (x, y),
            likelihood=bnn.Gaussian(0.3),
            num_stages=stages,
            shrinkage=0.5,
            epochs=100,
            lr=1.0,
            optimizer="lbfgs",
            rng=0,
            progress=False,
        )
        fitted = boosted.sample_functions(x, 1)[0]
        errors.append(float((fitted - least_squares).norm() / least_squares.norm()))
    print("relative distance to least squares:", errors)
    assert errors[1] < 1e-8
    assert errors[1] < 1e-3 * errors[0]
    ols_loss = 0.5 * float(((y - least_squares) ** 2).mean())
    assert history.loss[-1] == pytest.approx(ols_loss, rel=1e-12)


def _mlp(inputs: int, outputs: int) -> nn.Module:
    return nn.Sequential(nn.Linear(inputs, 16), nn.Tanh(), nn.Linear(16, outputs)).double()


def _regression(n: int, seed: int) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, dtype=torch.float64, generator=g) * 2 - 1
    noise = (0.05 + 0.3 * x.abs()) * torch.randn(n, 1, dtype=torch.float64, generator=g)
    return x, torch.sin(3 * x) + noise


@pytest.mark.parametrize("subsample", [1.0, 0.5])
def test_no_stage_increases_the_training_loss(subsample: float) -> None:
    x, y = _regression(200, 1)
    _, history = boost(
        lambda: _mlp(1, 1),
        (x, y),
        likelihood=bnn.Gaussian(0.1),
        num_stages=15,
        shrinkage=0.5,
        subsample=subsample,
        epochs=50,
        rng=2,
        progress=False,
    )
    loss = history.loss
    assert len(loss) == 16
    assert all(b <= a for a, b in zip(loss, loss[1:], strict=False))
    assert loss[-1] < 0.2 * loss[0]


def test_classification_boosting_is_monotone_and_learns() -> None:
    g = torch.Generator().manual_seed(3)
    x = torch.randn(300, 2, dtype=torch.float64, generator=g)
    y = (x[:, 0] * x[:, 1] > 0).long() + (x[:, 0] > 1).long()  # 3 classes, not linear
    boosted, history = boost(
        lambda: _mlp(2, 3),
        (x, y),
        likelihood=bnn.Categorical(),
        num_stages=10,
        shrinkage=0.5,
        subsample=0.7,
        epochs=60,
        rng=0,
        progress=False,
    )
    loss = history.loss
    assert all(b <= a for a, b in zip(loss, loss[1:], strict=False))
    counts = torch.bincount(y, minlength=3).double()
    # stage 0 is the best constant: the entropy of the class frequencies
    assert loss[0] == pytest.approx(float(-(counts / 300 * (counts / 300).log()).sum()), rel=1e-9)
    prediction = bnn.predict_with_uncertainty(boosted, x)  # carries its Categorical
    assert bnn.evaluate.metrics.accuracy(prediction, y) > 0.8


def test_runs_are_bit_reproducible_per_seed() -> None:
    x, y = _regression(100, 4)

    def run(seed: int) -> tuple[Tensor, list[float]]:
        boosted, history = boost(
            lambda: _mlp(1, 1),
            (x, y),
            likelihood=bnn.HeteroscedasticGaussian(),
            num_stages=5,
            shrinkage=0.3,
            subsample=0.5,
            epochs=30,
            noise_epochs=50,
            rng=seed,
            progress=False,
        )
        return boosted.sample_functions(x, 1), history.loss

    first, again, other = run(0), run(0), run(1)
    assert torch.equal(first[0], again[0]) and first[1] == again[1]
    assert not torch.equal(first[0], other[0])


def test_the_probabilistic_final_stage() -> None:
    x, y = _regression(400, 5)
    boosted, history = boost(
        lambda: _mlp(1, 1),
        (x, y),
        likelihood=bnn.HeteroscedasticGaussian(),
        num_stages=20,
        shrinkage=0.5,
        epochs=60,
        noise_epochs=400,
        lr=0.02,
        rng=0,
        progress=False,
    )
    assert isinstance(boosted, BoostedPosterior) and isinstance(boosted, bnn.Posterior)
    prediction = bnn.predict_with_uncertainty(boosted, x)  # carries HeteroscedasticGaussian
    assert prediction.mean.shape == (400, 1)
    residual = y - prediction.mean
    rms = float(residual.pow(2).mean().sqrt())
    constant_nll = math.log(rms) + 0.5 + 0.5 * math.log(2 * math.pi)  # best constant std
    assert history.noise_nll < constant_nll  # the noise really depends on x
    near, far = x.abs().squeeze(-1) < 0.3, x.abs().squeeze(-1) > 0.7
    assert float(prediction.std[near].mean()) < float(prediction.std[far].mean())
    # a learned homoscedastic std is the residuals' RMS, its maximum-likelihood value
    learned, _ = boost(
        lambda: _mlp(1, 1),
        (x, y),
        likelihood=bnn.Gaussian(1.0, learn_std=True),
        num_stages=5,
        epochs=30,
        rng=0,
        progress=False,
    )
    fit = learned.sample_functions(x, 1)[0]
    expected = float((y - fit).pow(2).mean().sqrt())
    assert float(learned.predictive_likelihood.std.detach()) == pytest.approx(expected, rel=1e-6)


def test_bad_input_is_refused() -> None:
    x, y = _regression(20, 0)
    with pytest.raises(ValueError, match="same number"):
        boost(_linear, (x, y[:10]), likelihood=bnn.Gaussian(0.1))
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        boost(_linear, (x, y), likelihood=bnn.Gaussian(0.1), shrinkage=1.5)
    with pytest.raises(ValueError, match="subsample"):
        boost(_linear, (x, y), likelihood=bnn.Gaussian(0.1), subsample=0.0)
    with pytest.raises(TypeError, match="likelihood"):
        boost(_linear, (x, y), likelihood=bnn.MixtureDensity(2))
    with pytest.raises(ValueError, match="pseudo-residuals"):
        boost(
            lambda: nn.Linear(1, 2).double(),
            (x, y),
            likelihood=bnn.Gaussian(0.1),
            num_stages=1,
            progress=False,
        )
    with pytest.raises(ValueError, match="NaN"):
        boost(_linear, (x, y * math.nan), likelihood=bnn.Gaussian(0.1))


@pytest.mark.parametrize("optimizer", ["adam", "lbfgs"])
def test_learners_on_many_rows_take_the_full_batch_step_chunk_by_chunk(
    monkeypatch: pytest.MonkeyPatch, optimizer: str
) -> None:
    """Above ``LEARNER_CHUNK`` rows the full-batch gradient is accumulated over chunks: the same
    boosted fit up to float64 rounding (chunks of 7 rows against one batch of 200)."""
    from bnn.infer.ensembles import _boosting_stages

    x, y = _linear_problem()
    factory = lambda: nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 1)).double()  # noqa: E731

    def fitted() -> Tensor:
        boosted, _ = boost(
            factory,
            (x, y),
            likelihood=bnn.Gaussian(0.3),
            num_stages=3,
            epochs=10,
            optimizer=optimizer,
            lr=0.05 if optimizer == "adam" else 1.0,
            rng=0,
            progress=False,
        )
        return bnn.predict_with_uncertainty(boosted, x).mean

    whole = fitted()
    monkeypatch.setattr(_boosting_stages, "LEARNER_CHUNK", 7)
    chunked = fitted()
    torch.testing.assert_close(chunked, whole, rtol=0, atol=1e-10)
    assert not torch.equal(whole, torch.zeros_like(whole))


def test_the_noise_head_on_many_rows_takes_the_full_batch_step_chunk_by_chunk(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The heteroscedastic noise head's Adam steps accumulate the full-batch gradient over
    chunks above ``LEARNER_CHUNK`` rows: the same noise up to float64 rounding."""
    from bnn.infer.ensembles import _boosting_stages

    x, y = _linear_problem()
    factory = lambda: nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 1)).double()  # noqa: E731

    def noise_std() -> Tensor:
        boosted, _ = boost(
            factory,
            (x, y),
            likelihood=bnn.HeteroscedasticGaussian(),
            num_stages=2,
            epochs=10,
            noise_epochs=30,
            lr=0.05,
            rng=0,
            progress=False,
        )
        return bnn.predict_with_uncertainty(boosted, x).aleatoric.sqrt()

    whole = noise_std()
    rows: list[int] = []
    share = _boosting_stages._noise_nll

    def spy(noise: nn.Module, likelihood: object, x: Tensor, *rest: object) -> Tensor:
        rows.append(x.shape[0])
        return share(noise, likelihood, x, *rest)  # type: ignore[arg-type]

    monkeypatch.setattr(_boosting_stages, "_noise_nll", spy)
    monkeypatch.setattr(_boosting_stages, "LEARNER_CHUNK", 7)
    chunked = noise_std()
    assert max(rows) == 7 and sum(rows) == 30 * 200  # 30 steps over 200 rows, 7 at a time
    torch.testing.assert_close(chunked, whole, rtol=0, atol=1e-10)
    assert float(whole.std()) > 0  # a noise that depends on x
