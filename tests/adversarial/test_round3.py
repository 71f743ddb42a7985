"""Reliability round 3 (issue 31): one regression test per silent wrong answer or raw
traceback found by the review of the newer methods. Each failed before its fix."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor, nn

import bnn
from bnn.apps.datasets import duplicated_inputs
from bnn.evaluate import metrics

gpytorch = pytest.importorskip("gpytorch")


def _mlp(features: int = 2, hidden: int = 5) -> nn.Sequential:
    with bnn.RNG(0).stream("init"):
        return nn.Sequential(nn.Linear(features, hidden), nn.Tanh(), nn.Linear(hidden, 1))


def _data(n: int = 30, features: int = 2) -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(n, features, generator=generator)
    return x, x.sum(-1, keepdim=True) + 0.1 * torch.randn(n, 1, generator=generator)


# ------------------------------------------------------------------ 0, 1: GP noise and duplicates
def _rounded_with_duplicates(n: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    """Inputs on a grid of 0.5 with 13 % duplicated rows (their targets duplicated too) and
    integer targets, standardised: the shape of a wine-quality table."""
    generator = torch.Generator().manual_seed(seed)
    unique = int(n * 0.87)
    x = torch.round(torch.randn(unique, 11, generator=generator) * 2) / 2
    y = torch.round(x[:, :3].sum(-1) * 0.6 + 0.8 * torch.randn(unique, generator=generator))
    copies = torch.randint(unique, (n - unique,), generator=generator)
    x, y = torch.cat([x, x[copies]]), torch.cat([y, y[copies]])
    return x.double(), ((y - y.mean()) / y.std()).unsqueeze(-1).double()


@pytest.mark.slow
def test_a_gp_on_duplicated_rounded_data_keeps_a_noise_floor_and_says_so() -> None:
    x, y = _rounded_with_duplicates(800)
    options: dict[str, Any] = {"epochs": 200, "lr": 0.05, "progress": False, "rng": 0}
    with pytest.warns(RuntimeWarning, match="interpolates its training data"):
        _, history = bnn.infer.gp(
            None, (x, y), likelihood=bnn.Gaussian(0.5, learn_std=True), **options
        )
    # the floor of GPyTorch (variance 1e-4); with the old floor of 1e-10 this data drove the
    # noise std to 0.0031 without a word
    assert history.noise_std >= math.sqrt(1e-4) * (1 - 1e-6)


def test_the_noise_warning_fires_at_the_floor_and_not_for_a_healthy_noise() -> None:
    from bnn.infer.gp._checks import check_learned_noise

    y = torch.randn(100)
    with pytest.warns(RuntimeWarning, match="at its floor"):
        check_learned_noise(0.0101, y, 1e-4)
    with pytest.warns(RuntimeWarning, match="interpolates"):
        check_learned_noise(1e-3, y * 10, 1e-8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_learned_noise(0.3, y, 1e-4)


def test_a_gp_on_identical_inputs_with_a_small_fixed_noise_gives_the_exact_mean() -> None:
    x = torch.zeros(20, 1)
    y = torch.randn(20, 1, generator=torch.Generator().manual_seed(0)) * 0.5 + 0.3
    post, _ = bnn.infer.gp(
        None,
        (x, y),
        likelihood=bnn.Gaussian(1e-4),
        train_hyperparameters=False,
        lengthscale=1.0,
        outputscale=1.0,
        mean="zero",
        progress=False,
    )
    mean, _ = post.functional_moments(torch.zeros(1, 1))
    kernel = torch.ones(20, 20, dtype=torch.float64) + 1e-8 * torch.eye(20, dtype=torch.float64)
    exact = torch.ones(1, 20, dtype=torch.float64) @ torch.linalg.solve(kernel, y.double())
    # float32 with GPyTorch's jitter gave -0.031 here; the exact mean is 0.4735
    assert float(mean) == pytest.approx(float(exact), abs=1e-4)


def test_duplicated_test_inputs_are_counted() -> None:
    train = torch.tensor([[0.0, 1.0], [2.0, 3.0]])
    test = torch.tensor([[2.0, 3.0], [2.0, 3.5], [0.0, 1.0]])
    assert duplicated_inputs(test, train) == 2


# ------------------------------------------------------------------ 2, 3, 7: resuming fit
def _bayes(hidden: int = 8) -> nn.Module:
    with bnn.RNG(0).stream("init"):
        net = nn.Sequential(nn.Linear(1, hidden), nn.Tanh(), nn.Linear(hidden, 1))
    return bnn.bayesianize(net, rng=0)


def _toy() -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(32, 1, generator=generator) * 2 - 1
    return x, torch.sin(3 * x) + 0.1 * torch.randn(32, 1, generator=generator)


def _fit(model: nn.Module, data: Any, likelihood: Any, epochs: int, **options: Any) -> None:
    bnn.fit(
        model,
        data,
        likelihood=likelihood,
        epochs=epochs,
        batch_size=8,
        rng=1,
        progress=False,
        **options,
    )


@pytest.mark.parametrize(
    "change, named",
    [
        ("data", "data: saved"),
        ("architecture", "model: saved"),
        ("learned likelihood", "likelihood: saved 'Gaussian that learns nothing"),
    ],
)
def test_a_checkpoint_of_another_run_of_the_same_size_is_refused(
    tmp_path: Path, change: str, named: str
) -> None:
    path = tmp_path / "run.pt"
    x, y = _toy()
    _fit(_bayes(), (x, y), bnn.Gaussian(0.1), 2, checkpoint=path)
    model, data, likelihood = _bayes(), (x, y), bnn.Gaussian(0.1)
    if change == "data":
        data = (x + 1, y)  # same size, other values: resumed silently before
    elif change == "architecture":
        model = _bayes(4)  # a raw load_state_dict error before
    else:
        likelihood = bnn.Gaussian(0.1, learn_std=True)  # a raw optimizer error before
    with pytest.raises(ValueError, match=named):
        _fit(model, data, likelihood, 4, checkpoint=path)


def test_initial_epoch_resumes_by_hand_to_the_uninterrupted_bits() -> None:
    x, y = _toy()
    schedule = bnn.infer.KLSchedule(annealing_epochs=8)
    whole = _bayes()
    bnn.fit(
        whole,
        (x, y),
        likelihood=bnn.Gaussian(0.1),
        epochs=10,
        batch_size=8,
        kl=schedule,
        optimizer=torch.optim.Adam(whole.parameters(), lr=1e-3),
        rng=1,
        progress=False,
    )
    rng = bnn.RNG(1)
    first = _bayes()
    optimizer = torch.optim.Adam(first.parameters(), lr=1e-3)
    options: dict[str, Any] = {"likelihood": bnn.Gaussian(0.1), "batch_size": 8, "kl": schedule}
    bnn.fit(first, (x, y), epochs=5, optimizer=optimizer, rng=rng, progress=False, **options)
    saved = (first.state_dict(), optimizer.state_dict(), rng.state_dict())
    second = _bayes()  # a new process: everything from the saved state
    second.load_state_dict(saved[0])
    optimizer = torch.optim.Adam(second.parameters(), lr=1e-3)
    optimizer.load_state_dict(saved[1])
    rng = bnn.RNG(1)
    rng.load_state_dict(saved[2])
    _, history = bnn.fit(
        second,
        (x, y),
        epochs=10,
        initial_epoch=5,
        optimizer=optimizer,
        rng=rng,
        progress=False,
        **options,
    )
    assert all(
        torch.equal(a, b)
        for a, b in zip(whole.state_dict().values(), second.state_dict().values(), strict=True)
    )
    assert history.kl_weight[0] == pytest.approx(6 / 8)  # the annealing went on (restarted: 1/8)


@pytest.mark.parametrize(
    "initial_epoch, epochs, checkpoint, message",
    [
        (5, 5, None, "leaves nothing to train"),
        (-1, 5, None, "initial_epoch must be"),
        (True, 5, None, "initial_epoch must be"),
        (2, 5, "run.pt", "not both"),
    ],
)
def test_bad_initial_epochs_are_refused(
    tmp_path: Path, initial_epoch: Any, epochs: int, checkpoint: str | None, message: str
) -> None:
    path = None if checkpoint is None else tmp_path / checkpoint
    with pytest.raises(ValueError, match=message):
        _fit(
            _bayes(),
            _toy(),
            bnn.Gaussian(0.1),
            epochs,
            initial_epoch=initial_epoch,
            checkpoint=path,
        )


# ------------------------------------------------------------------ 4: tune
def test_tune_refuses_a_score_that_is_not_a_number() -> None:
    pytest.importorskip("optuna")
    from bnn.tune import Float, tune

    for wrong in ("0.5", True, torch.ones(2), None):
        with pytest.raises(TypeError, match="must return one real number"):
            tune(
                lambda params, rng, w=wrong: w,
                {"a": Float(0, 1)},
                seeds=2,
                n_trials=1,
                progress=False,
            )
    result = tune(
        lambda params, rng: torch.tensor(0.25),
        {"a": Float(0, 1)},
        seeds=2,
        n_trials=1,
        progress=False,
    )
    assert result.best_score == 0.25


def test_tune_warns_when_some_seeds_fail_or_return_nan() -> None:
    pytest.importorskip("optuna")
    from bnn.tune import Float, tune

    def objective(params: dict[str, float], rng: bnn.RNG) -> float:
        return math.nan if rng.torch_generator("x").initial_seed() % 3 == 0 else params["a"]

    with pytest.warns(RuntimeWarning, match="seed runs failed .* the objective returned nan"):
        tune(objective, {"a": Float(0, 1)}, seeds=6, n_trials=2, rng=0, progress=False)


# ------------------------------------------------------------------ 5: ensembles on disk
def test_an_ensemble_file_with_fewer_likelihoods_than_members_is_refused(tmp_path: Path) -> None:
    def factory() -> nn.Module:
        return nn.Sequential(nn.Linear(2, 3), nn.Tanh(), nn.Linear(3, 1))

    learned = bnn.Gaussian(0.3, learn_std=True)
    ensemble, _ = bnn.infer.deep_ensemble(
        factory, _data(), likelihood=learned, num_members=2, epochs=1, progress=False
    )
    path = tmp_path / "ensemble.pt"
    ensemble.save(path)
    state = torch.load(path, weights_only=True)
    state["likelihoods"] = state["likelihoods"][:1]
    torch.save(state, path)
    with pytest.raises(ValueError, match="2 members but 1 likelihoods"):
        bnn.infer.DeepEnsemble.load(path, factory, likelihood=learned)
    state["members"], state["likelihoods"] = [], []
    torch.save(state, path)
    with pytest.raises(ValueError, match="no members"):
        bnn.infer.DeepEnsemble.load(path, factory, likelihood=learned)


# ------------------------------------------------------------------ 6: raw tracebacks
@pytest.fixture(scope="module")
def laplace_all() -> bnn.Posterior:
    return bnn.infer.laplace(
        _mlp(), _data(), likelihood=bnn.Gaussian(0.1), subset="all", progress=False
    )[0]


@pytest.fixture(scope="module")
def exact_gp() -> bnn.Posterior:
    return bnn.infer.gp(None, _data(), likelihood=bnn.Gaussian(0.1), epochs=2, progress=False)[0]


@pytest.mark.parametrize(
    "x, error, message",
    [
        (
            torch.ones(4, 2, dtype=torch.int64),
            ValueError,
            "cannot take x of shape \\(4, 2\\).*Long",
        ),
        (torch.randn(4, 3), ValueError, "cannot take x of shape \\(4, 3\\)"),
        (torch.randn(4, 2, dtype=torch.float64), TypeError, "convert with"),
    ],
)
def test_laplace_glm_prediction_names_bad_inputs(
    laplace_all: bnn.Posterior, x: Tensor, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        bnn.predict_with_uncertainty(laplace_all, x, num_samples=4)


def test_gp_prediction_names_a_wrong_feature_count(exact_gp: bnn.Posterior) -> None:
    with pytest.raises(ValueError, match="fitted on inputs of shape \\[N, 2\\]"):
        bnn.predict_with_uncertainty(exact_gp, torch.randn(4, 3), num_samples=4)


def test_a_gp_takes_a_fixed_noise_below_the_learned_floor() -> None:
    post, history = bnn.infer.gp(
        None, _data(), likelihood=bnn.Gaussian(1e-6), epochs=2, progress=False
    )
    assert history.noise_std == pytest.approx(1e-6, rel=1e-3)  # a GPyTorch constraint error before
    assert post.predictive_likelihood.std.item() == pytest.approx(1e-6, rel=1e-3)


# ------------------------------------------------------------------ 8: NaN members
class _NaNPosterior:
    def sample_functions(
        self, x: Tensor, num_samples: int, *, rng: object = None, memory_budget: object = None
    ) -> Tensor:
        del rng, memory_budget  # the protocol's arguments; nothing is drawn
        return torch.full((num_samples, x.shape[0], 1), math.nan)


def test_stacking_a_member_that_predicts_nan_names_the_member(laplace_all: bnn.Posterior) -> None:
    x, y = _data()
    with pytest.raises(
        ValueError, match="stack: posterior 1 of the list: the function samples hold 3000 NaN"
    ):
        bnn.infer.stack(
            [laplace_all, _NaNPosterior()], x, y, likelihood=bnn.Gaussian(0.1), progress=False
        )  # type: ignore[list-item]


@pytest.mark.parametrize(
    "likelihood", [bnn.Gaussian(0.1), bnn.HeteroscedasticGaussian(), bnn.Categorical()]
)
def test_a_prediction_from_nan_samples_is_refused_before_any_metric(likelihood: Any) -> None:
    x, _ = _data()
    with pytest.raises(ValueError, match="NaN or inf values"):
        prediction = bnn.predict_with_uncertainty(
            _NaNPosterior(), x, likelihood=likelihood, num_samples=4
        )  # type: ignore[arg-type]
        metrics.nll(prediction, torch.zeros(30, dtype=torch.int64))


# ------------------------------------------------------------------ 9: allocator limits
def test_the_memory_check_sees_an_address_space_limit() -> None:
    code = (
        "import torch, bnn\n"
        "from torch import nn\n"
        "net = bnn.bayesianize(nn.Sequential(nn.Linear(2, 1)), rng=0)\n"
        "try:\n"
        "    bnn.predict_with_uncertainty(net, torch.zeros(100, 2), num_samples=10_000_000,\n"
        "                                 likelihood=bnn.Gaussian(1.0))\n"
        "except MemoryError as error:\n"
        "    print('refused:', error)\n"
    )
    limit_kib = 6_000_000  # the 4 GB result fits in RAM but not under this limit
    completed = subprocess.run(
        ["bash", "-c", f'ulimit -v {limit_kib} && "{sys.executable}" -c "$0"', code],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "refused:" in completed.stdout and "ulimit -v" in completed.stdout, completed.stderr[
        -2000:
    ]


def test_available_memory_is_the_smallest_of_the_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    from bnn.posterior import _evaluate

    monkeypatch.setattr(_evaluate, "_meminfo_available", lambda: 8 * 2**30)
    monkeypatch.setattr(_evaluate, "_cgroup_available", lambda: 2**30)
    monkeypatch.setattr(_evaluate, "_address_space_available", lambda: None)
    assert _evaluate.available_memory_bytes(torch.device("cpu")) == 2**30
    monkeypatch.setattr(_evaluate, "_address_space_available", lambda: 2**20)
    assert _evaluate.available_memory_bytes(torch.device("cpu")) == 2**20


# ------------------------------------------------------------------ 10: SWAG on broken weights
@pytest.mark.parametrize("method", ["swag", "laplace", "neural_linear", "multi_swag"])
def test_post_hoc_methods_refuse_non_finite_weights(method: str) -> None:
    net = _mlp()
    with torch.no_grad():
        net[0].weight[0, 0] = math.inf
    options: dict[str, Any] = {"likelihood": bnn.Gaussian(0.1), "progress": False}
    if method in ("swag", "multi_swag"):
        options |= {"epochs": 4, "rank": 2, "lr": 1e-2}
    with pytest.raises(ValueError, match="needs finite weights.*0.weight \\(1 of 10\\)"):
        getattr(bnn.infer, method)(net, _data(), **options)


# ------------------------------------------------------------------ 11: killed writes
def test_a_killed_write_leaves_its_temporary_only_until_the_next_save_or_load(
    tmp_path: Path,
) -> None:
    from bnn._io import load_versioned, save_atomically

    target = tmp_path / "samples.pt"
    save_atomically({"format": "bnn.X", "format_version": 1, "a": torch.zeros(3)}, target)
    code = (
        "import os, signal, torch\n"
        "from bnn._io import atomic_write\n"
        f"with atomic_write({str(target)!r}) as handle:\n"
        "    handle.write(b'partial')\n"
        "    handle.flush()\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=False, timeout=60)
    left = [name for name in os.listdir(tmp_path) if name.endswith(".bnn-partial")]
    assert len(left) == 1  # the killed writer could not clean up
    assert load_versioned(target, "X", 1)["a"].shape == (3,)  # the old version, intact
    assert not [name for name in os.listdir(tmp_path) if name.endswith(".bnn-partial")]


def test_a_live_writer_keeps_its_temporary(tmp_path: Path) -> None:
    from bnn._io import atomic_write, remove_stale_temporaries

    with atomic_write(tmp_path / "a.txt", "w") as handle:
        handle.write("x")
        assert remove_stale_temporaries(tmp_path) == []  # this process is writing it
    assert (tmp_path / "a.txt").read_text() == "x"
    assert oct((tmp_path / "a.txt").stat().st_mode & 0o777) == oct(0o666 & ~_umask())


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
