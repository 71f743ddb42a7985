"""Resume = uninterrupted, bit for bit: ``train 5 + resume 5 = train 10`` for every loop option.

Each case trains once for 10 epochs, and once for 5 epochs with a checkpoint followed by a
second call with 10 epochs on a *freshly built* model (different initial weights, so everything
must come from the file). Weights, likelihood and history must be identical.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import bnn
from bnn.infer import KLSchedule, Validation


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(48, 2, generator=generator) * 2 - 1
    y = x.sum(-1, keepdim=True) + 0.1 * torch.randn(48, 1, generator=generator)
    return x, y


def _bayesian(seed: int) -> nn.Module:
    with bnn.RNG(seed).stream("init"):
        net = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 1))
    return bnn.bayesianize(net, init="random", rng=seed)


def _dropout(seed: int) -> nn.Module:
    with bnn.RNG(seed).stream("init"):
        net = nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Dropout(0.2), nn.Linear(8, 1))
    return bnn.MCDropout(net)


def _plain(seed: int) -> nn.Module:
    with bnn.RNG(seed).stream("init"):
        return nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 1))


x_val = torch.linspace(-1, 1, 16).unsqueeze(-1).repeat(1, 2)
y_val = x_val.sum(-1, keepdim=True)

CASES: dict[str, tuple[Callable[[int], nn.Module], dict[str, Any]]] = {
    "kl annealing": (_bayesian, {"kl": KLSchedule(weight=1.0, annealing_epochs=7)}),
    "several MC samples, learned noise": (_bayesian, {"num_samples": 3, "learn_std": True}),
    "validation without patience": (_bayesian, {"validation": Validation(x_val, y_val)}),
    "early stopping counters": (
        _bayesian,
        {"validation": Validation(x_val, y_val, patience=2, num_samples=4), "lr": 0.2},
    ),
    "mc dropout": (_dropout, {}),
    "plain network, MAP prior, SGD momentum": (
        _plain,
        {
            "prior": bnn.nn.priors.Normal(0.0, 1.0),
            "optimizer": lambda params: torch.optim.SGD(params, lr=0.05, momentum=0.9),
        },
    ),
}


def _fit(
    build: Callable[[int], nn.Module],
    options: dict[str, Any],
    epochs: int,
    init_seed: int,
    checkpoint: Path | None,
) -> tuple[nn.Module, bnn.likelihoods.Likelihood, bnn.infer.History]:
    options = dict(options)
    likelihood = bnn.Gaussian(0.3, learn_std=options.pop("learn_std", False))
    model = build(init_seed)
    _, history = bnn.fit(
        model,
        _data(),
        likelihood=likelihood,
        epochs=epochs,
        batch_size=16,
        lr=options.pop("lr", 0.01),
        rng=3,
        checkpoint=checkpoint,
        progress=False,
        **options,
    )
    return model, likelihood, history


def _same(a: nn.Module, b: nn.Module) -> bool:
    return all(
        torch.equal(p, q)
        for p, q in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    )


@pytest.mark.parametrize("case", CASES)
def test_train_five_then_resume_five_equals_train_ten(case: str, tmp_path: Path) -> None:
    build, options = CASES[case]
    model, likelihood, history = _fit(build, options, 10, init_seed=0, checkpoint=None)
    path = tmp_path / "run.pt"
    _fit(build, options, 5, init_seed=0, checkpoint=path)
    resumed, resumed_likelihood, resumed_history = _fit(
        build, options, 10, init_seed=99, checkpoint=path
    )
    assert _same(model, resumed) and _same(likelihood, resumed_likelihood)
    assert resumed_history.metrics == history.metrics
    assert resumed_history.extras == history.extras


def test_early_stopping_case_really_stops_early() -> None:
    """The early-stopping case above must exercise a stop, or it tests nothing."""
    build, options = CASES["early stopping counters"]
    _, _, history = _fit(build, options, 10, init_seed=0, checkpoint=None)
    assert history.stopped_early and len(history.loss) < 10


def test_a_finished_checkpoint_trains_nothing_more(tmp_path: Path) -> None:
    build, options = CASES["kl annealing"]
    path = tmp_path / "run.pt"
    model, _, history = _fit(build, options, 4, init_seed=0, checkpoint=path)
    again, _, history_again = _fit(build, options, 4, init_seed=5, checkpoint=path)
    assert _same(model, again) and history_again.metrics == history.metrics


def test_resuming_with_other_settings_is_refused_with_the_differences(tmp_path: Path) -> None:
    build, options = CASES["kl annealing"]
    path = tmp_path / "run.pt"
    _fit(build, options, 2, init_seed=0, checkpoint=path)
    with pytest.raises(ValueError, match=r"kl_annealing_epochs: saved 7, now 3"):
        _fit(build, {"kl": KLSchedule(annealing_epochs=3)}, 4, init_seed=0, checkpoint=path)
    with pytest.raises(ValueError, match=r"batch_size: saved 16, now 8"):
        bnn.fit(
            build(0),
            _data(),
            likelihood=bnn.Gaussian(0.3),
            epochs=4,
            batch_size=8,
            rng=3,
            kl=KLSchedule(weight=1.0, annealing_epochs=7),
            checkpoint=path,
            progress=False,
        )


def test_a_file_that_is_not_a_checkpoint_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "samples.pt"
    net = nn.Linear(2, 1)
    bnn.SampleSet(
        net, {n: p.detach().expand(1, 2, *p.shape) for n, p in net.named_parameters()}
    ).save(path)
    with pytest.raises(ValueError, match="not a bnn checkpoint file"):
        bnn.fit(
            net, _data(), likelihood=bnn.Gaussian(0.3), epochs=2, checkpoint=path, progress=False
        )


def test_a_checkpoint_in_a_missing_folder_is_refused_before_training(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist; create it before training"):
        bnn.fit(
            _plain(0),
            _data(),
            likelihood=bnn.Gaussian(0.3),
            epochs=2,
            checkpoint=tmp_path / "no" / "run.pt",
            progress=False,
        )


RESUME_SCRIPT = """
import sys, torch, bnn
from torch import nn
sys.path.insert(0, {root!r})
from tests.infer.test_resume import CASES, _fit
case = CASES["kl annealing"]
model, likelihood, history = _fit(*case, {epochs}, init_seed={seed}, checkpoint={path!r})
torch.save([p for p in model.state_dict().values()], {out!r})
"""


def test_resume_in_a_new_process_equals_the_uninterrupted_run(tmp_path: Path) -> None:
    root = str(Path(__file__).resolve().parents[2])
    path, out = str(tmp_path / "run.pt"), str(tmp_path / "weights.pt")
    for epochs, seed in ((5, 0), (10, 42)):
        script = RESUME_SCRIPT.format(root=root, epochs=epochs, seed=seed, path=path, out=out)
        subprocess.run([sys.executable, "-c", script], check=True, timeout=300)
    model, _, _ = _fit(*CASES["kl annealing"], 10, init_seed=0, checkpoint=None)
    resumed = torch.load(out, weights_only=True)
    assert all(torch.equal(p, q) for p, q in zip(model.state_dict().values(), resumed, strict=True))


# ----------------------------------------------------------------------------- interruptions
class Interrupt(BaseException):
    """Stands in for Ctrl-C or a killed job."""


def _interrupt_after(monkeypatch: pytest.MonkeyPatch, module: Any, name: str, calls: int) -> None:
    original = getattr(module, name)
    count = 0

    def counted(*args: Any, **kwargs: Any) -> Any:
        nonlocal count
        count += 1
        if count > calls:
            raise Interrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, counted)


def test_fit_interrupted_mid_epoch_resumes_to_the_uninterrupted_result(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    vi = importlib.import_module("bnn.infer.training.fit")

    build, options = CASES["kl annealing"]
    model, _, history = _fit(build, options, 6, init_seed=0, checkpoint=None)
    path = tmp_path / "run.pt"
    _interrupt_after(monkeypatch, vi, "training_step", 3 * 3 + 1)  # 3 batches per epoch
    with pytest.raises(Interrupt):
        _fit(build, options, 6, init_seed=0, checkpoint=path)
    monkeypatch.undo()
    resumed, _, resumed_history = _fit(build, options, 6, init_seed=7, checkpoint=path)
    assert _same(model, resumed) and resumed_history.metrics == history.metrics


SGMCMC_CASES = {
    "sgld, constant, two chains, stopped in the second": (
        bnn.infer.sgld,
        {"schedule": bnn.infer.StepSchedule(steps=40, burn_in=10, thin=3), "num_chains": 2},
        40 + 17,
    ),
    "sghmc, cyclical, stopped in the first": (
        bnn.infer.sghmc,
        {"schedule": bnn.infer.StepSchedule("cyclical", steps=40, cycles=2, thin=2)},
        23,
    ),
}


@pytest.mark.parametrize("case", SGMCMC_CASES)
def test_sgmcmc_interrupted_resumes_instead_of_replaying_its_noise(
    case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sgmcmc = importlib.import_module("bnn.infer.mcmc._sgmcmc_chain")

    method, options, stop_after = SGMCMC_CASES[case]

    def run(checkpoint: Path | None) -> tuple[bnn.SampleSet, bnn.infer.History]:
        return method(  # type: ignore[no-any-return]
            _plain(0),
            _data(),
            likelihood=bnn.Gaussian(0.3),
            lr=1e-3,
            batch_size=16,
            rng=4,
            checkpoint=checkpoint,
            progress=False,
            **options,
        )

    samples, history = run(None)
    path = tmp_path / "chains.pt"
    _interrupt_after(monkeypatch, sgmcmc, "_update", stop_after * 4)  # 4 tensors per step
    with pytest.raises(Interrupt):
        run(path)
    monkeypatch.undo()
    resumed, resumed_history = run(path)
    assert all(torch.equal(samples.samples[k], resumed.samples[k]) for k in samples.samples)
    assert resumed_history.per_chain("potential") == history.per_chain("potential")
    replayed, _ = run(None)  # a rerun without the file starts over: the same, as it should
    assert torch.equal(replayed.samples["0.weight"], samples.samples["0.weight"])


def test_an_interrupted_ensemble_resumes_each_member_where_it_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    vi = importlib.import_module("bnn.infer.training.fit")

    def train(checkpoint: Path | None) -> bnn.infer.DeepEnsemble:
        ensemble, _ = bnn.infer.deep_ensemble(
            lambda: _plain(0),
            _data(),
            likelihood=bnn.Gaussian(0.3, learn_std=True),
            num_members=3,
            bagging=True,
            epochs=4,
            batch_size=16,
            rng=2,
            checkpoint=checkpoint,
            progress=False,
        )
        return ensemble

    uninterrupted = train(None)
    path = tmp_path / "ensemble.pt"
    _interrupt_after(monkeypatch, vi, "training_step", 12 + 7)  # member 1, epoch 3
    with pytest.raises(Interrupt):
        train(path)
    monkeypatch.undo()
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "ensemble.pt.member0",
        "ensemble.pt.member1",
    ]
    resumed = train(path)
    for a, b in zip(uninterrupted.members, resumed.members, strict=True):
        assert _same(a, b)
    for a, b in zip(uninterrupted.likelihoods, resumed.likelihoods, strict=True):
        assert _same(a, b)


def _svi(epochs: int, checkpoint: Path | None, init_seed: int = 0) -> tuple[torch.Tensor, Any]:
    posterior, history = bnn.infer.svi(
        _plain(init_seed),
        _data(),
        likelihood=bnn.Gaussian(0.3),
        epochs=epochs,
        batch_size=20,  # 3 batches per epoch, the last one smaller
        lr=0.02,
        rng=6,
        checkpoint=checkpoint,
        progress=False,
    )
    x = torch.linspace(-1, 1, 5).unsqueeze(-1).repeat(1, 2)
    return bnn.predict_with_uncertainty(posterior, x, num_samples=4, rng=0).samples, history


def test_svi_five_then_resume_five_equals_ten(tmp_path: Path) -> None:
    samples, history = _svi(10, None)
    path = tmp_path / "svi.pt"
    _svi(5, path)
    resumed, resumed_history = _svi(10, path, init_seed=8)
    assert torch.equal(samples, resumed) and resumed_history.metrics == history.metrics


def test_svi_interrupted_mid_epoch_resumes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from pyro.infer import SVI

    samples, _ = _svi(6, None)
    path = tmp_path / "svi.pt"
    _interrupt_after(monkeypatch, SVI, "step", 3 * 4 + 2)
    with pytest.raises(Interrupt):
        _svi(6, path)
    monkeypatch.undo()
    resumed, _ = _svi(6, path, init_seed=3)
    assert torch.equal(samples, resumed)
