"""RAPS and class-conditional (Mondrian) conformal sets: the score against its formula, exact
coverage in simulation (within the Beta band of ``tests/evaluate/test_recalibrate.py``), sets
smaller than APS where a model's tail is noise, and coverage within every class where the
marginal sets miss one."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

import bnn
from bnn.evaluate import metrics
from bnn.evaluate._conformal_sets import SetScore
from bnn.evaluate.recalibrate import conformalize
from tests.evaluate.test_recalibrate import K_SD, Fixed, _coverage_sd

K = 20
W_TAIL = 1.5 * torch.randn(5, K, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


def _tail_data(n: int, seed: int) -> tuple[Tensor, Tensor]:
    """20 classes from 5 features; the inputs carry 20 more columns of noise that the model
    below adds to its logits, so its ranking of the unlikely classes is noise."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 5 + K, generator=g, dtype=torch.float64)
    y = torch.multinomial((x[:, :5] @ W_TAIL).softmax(-1), 1, generator=g).squeeze(-1)
    return x, y


NOISY_TAIL = Fixed(lambda x: (x[:, :5] @ W_TAIL + x[:, 5:]).unsqueeze(0))


def _sets(conformal: object, x: Tensor, y: Tensor, rng: int) -> tuple[float, float]:
    prediction = bnn.predict_with_uncertainty(conformal, x, rng=rng)
    return metrics.set_coverage(prediction, y), metrics.mean_set_size(prediction)


def test_the_raps_score_follows_its_formula() -> None:
    probs = torch.tensor([[0.3, 0.5, 0.2]], dtype=torch.float64)
    score = SetScore(penalty=0.1, k_reg=1)
    # ranks: class 1 first, class 0 second, class 2 third; u = 0.5
    expected = torch.tensor([[0.5 + 0.1 * 1 + 0.5 * 0.3, 0.5 * 0.5, 0.8 + 0.1 * 2 + 0.5 * 0.2]])
    scores = score.scores(probs, torch.tensor([0.5], dtype=torch.float64))
    torch.testing.assert_close(scores, expected.double())
    torch.testing.assert_close(
        SetScore().scores(probs, None), torch.tensor([[0.8, 0.5, 1.0]]).double()
    )


def test_raps_without_penalty_is_aps() -> None:
    x_cal, y_cal = _tail_data(300, 1)
    x_test, _ = _tail_data(50, 2)
    options = {"likelihood": bnn.Categorical(), "rng": 0}
    aps = conformalize(NOISY_TAIL, x_cal, y_cal, method="aps", **options)
    raps = conformalize(NOISY_TAIL, x_cal, y_cal, method="raps", penalty=0.0, k_reg=0, **options)
    assert raps.method == "raps"
    assert torch.equal(aps.prediction_set(x_test, rng=3), raps.prediction_set(x_test, rng=3))


def test_raps_coverage_is_exact_for_a_fixed_k_reg() -> None:
    n, m, repetitions, level = 200, 100, 200, 0.9
    coverage = []
    for r in range(repetitions):
        x_cal, y_cal = _tail_data(n, 100 + 2 * r)
        x_test, y_test = _tail_data(m, 101 + 2 * r)
        conformal = conformalize(
            NOISY_TAIL,
            x_cal,
            y_cal,
            likelihood=bnn.Categorical(),
            method="raps",
            penalty=0.05,
            k_reg=2,
            rng=r,
        )
        coverage.append(_sets(conformal, x_test, y_test, r)[0])
    mean = sum(coverage) / repetitions
    exact, sd = _coverage_sd(n, level, m, repetitions)
    print(f"RAPS coverage {mean:.4f} (exact {exact:.4f} ± {sd:.4f})")
    assert abs(mean - exact) <= K_SD * sd


def test_raps_sets_are_smaller_than_aps_where_the_tail_is_noise() -> None:
    """Paired over 200 calibration/test draws: RAPS (k_reg from a held-out fifth) keeps its
    coverage and its sets are smaller than APS's by more than 3 standard errors."""
    n, m, repetitions, level = 300, 100, 200, 0.9
    raps_coverage, differences = [], []
    for r in range(repetitions):
        x_cal, y_cal = _tail_data(n, 5000 + 2 * r)
        x_test, y_test = _tail_data(m, 5001 + 2 * r)
        options = {"likelihood": bnn.Categorical(), "rng": r}
        aps = conformalize(NOISY_TAIL, x_cal, y_cal, method="aps", **options)
        raps = conformalize(NOISY_TAIL, x_cal, y_cal, method="raps", **options)
        covered, raps_size = _sets(raps, x_test, y_test, r)
        raps_coverage.append(covered)
        differences.append(_sets(aps, x_test, y_test, r)[1] - raps_size)
    mean_difference = sum(differences) / repetitions
    spread = math.sqrt(sum((d - mean_difference) ** 2 for d in differences) / (repetitions - 1))
    print(f"APS − RAPS set size {mean_difference:.3f} ± {spread / math.sqrt(repetitions):.3f}")
    assert mean_difference > 3 * spread / math.sqrt(repetitions)
    kept = n - math.ceil(0.2 * n)  # the calibration points left after picking k_reg
    exact, sd = _coverage_sd(kept, level, m, repetitions)
    assert abs(sum(raps_coverage) / repetitions - exact) <= K_SD * sd


W_HARD = torch.tensor([[2.0, -2.0, 0.0], [0.0, 0.0, 0.4]], dtype=torch.float64)


def _hard_class_data(n: int, seed: int) -> tuple[Tensor, Tensor]:
    """Three classes; class 2 is hard to tell apart, and the model below is over-confident
    against it, so marginal sets cover it far less often than the others."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 2, generator=g, dtype=torch.float64)
    y = torch.multinomial((x @ W_HARD).softmax(-1), 1, generator=g).squeeze(-1)
    return x, y


AGAINST_CLASS_2 = Fixed(lambda x: (3 * x @ W_HARD - torch.tensor([0.0, 0.0, 2.0])).unsqueeze(0))


@pytest.mark.parametrize("class_conditional", [False, True])
def test_class_conditional_sets_cover_every_class(class_conditional: bool) -> None:
    n, m, repetitions, level = 300, 300, 200, 0.9
    covered = torch.zeros(3, dtype=torch.float64)
    counted = torch.zeros(3, dtype=torch.float64)
    expected = torch.zeros(3, dtype=torch.float64)
    for r in range(repetitions):
        x_cal, y_cal = _hard_class_data(n, 9000 + 2 * r)
        x_test, y_test = _hard_class_data(m, 9001 + 2 * r)
        conformal = conformalize(
            AGAINST_CLASS_2,
            x_cal,
            y_cal,
            likelihood=bnn.Categorical(),
            class_conditional=class_conditional,
            rng=r,
        )
        sets = conformal.prediction_set(x_test, rng=r)
        hit = sets[torch.arange(m), y_test].double()
        for label in range(3):
            own = y_test == label
            covered[label] += hit[own].sum()
            counted[label] += own.sum()
            n_label = int((y_cal == label).sum())
            expected[label] += own.sum() * math.ceil((n_label + 1) * level) / (n_label + 1)
    per_class = covered / counted
    smallest_class = int(min(counted)) // repetitions
    _, sd = _coverage_sd(n // 6, level, smallest_class, repetitions)  # classes hold ≥ n/6
    print(f"class_conditional={class_conditional}: per-class coverage {per_class.tolist()}")
    if class_conditional:
        assert bool(((per_class - expected / counted).abs() <= K_SD * sd).all())
    else:  # the marginal sets miss the hard class: what the class-conditional ones fix
        assert float(per_class[2]) < level - K_SD * sd


def test_class_conditional_sets_need_enough_points_of_every_class() -> None:
    x_cal, y_cal = _hard_class_data(60, 7)
    y_cal[y_cal == 2] = 0  # no calibration point of class 2
    with pytest.raises(ValueError, match="class 2 has 0 calibration points"):
        conformalize(
            AGAINST_CLASS_2, x_cal, y_cal, likelihood=bnn.Categorical(), class_conditional=True
        )


def test_bad_set_arguments_are_refused_before_work() -> None:
    x, y = _hard_class_data(50, 8)
    options = {"likelihood": bnn.Categorical()}
    with pytest.raises(ValueError, match="penalty must be a number >= 0"):
        conformalize(AGAINST_CLASS_2, x, y, method="raps", penalty=-0.1, **options)
    with pytest.raises(ValueError, match="k_reg must be an int >= 0 or 'auto'"):
        conformalize(AGAINST_CLASS_2, x, y, method="raps", k_reg=-1, **options)
    with pytest.raises(ValueError, match="holds out"):
        conformalize(AGAINST_CLASS_2, x[:12], y[:12], method="raps", **options)
    xr = torch.rand(30, 1, dtype=torch.float64)
    regression = Fixed(lambda x: x.unsqueeze(0))
    with pytest.raises(ValueError, match="for classifiers"):
        conformalize(regression, xr, xr, method="raps", likelihood=bnn.Gaussian(0.1))
    with pytest.raises(ValueError, match="class_conditional sets are for classifiers"):
        conformalize(regression, xr, xr, class_conditional=True, likelihood=bnn.Gaussian(0.1))
