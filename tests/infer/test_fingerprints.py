"""Same seed, same bits: one small seeded run of every inference method, hashed.

Each run fits a tiny network (or GP) on 32 points and hashes the function samples its posterior
draws at 8 test inputs with a fixed ``rng``. The expected digests were computed before the
inference families moved into packages (issue 27) and must survive any refactor that keeps
behaviour; a change that is meant to alter the numbers re-pins them and says why in its commit.
Everything runs on one torch thread, so the digests do not depend on the machine's core count.
They can depend on the CPU kernels ATen picks (``torch.backends.cpu.get_cpu_capability()``):
where a method's last bits differ between machines, every digest a machine of the pinning
commit's code gave is listed in ``OTHER_KERNELS``.

Run ``python -m tests.infer.test_fingerprints`` to print the current digests.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import pytest
import torch
from torch import Tensor, nn

import bnn

Run = Callable[[], bnn.Posterior]

NOISE = bnn.Gaussian(0.3)
QUIET = {"progress": False}


def _data() -> tuple[Tensor, Tensor, Tensor]:
    generator = torch.Generator().manual_seed(11)
    x = torch.rand(32, 2, generator=generator) * 2 - 1
    y = torch.sin(2 * x[:, :1]) + x[:, 1:] + 0.1 * torch.randn(32, 1, generator=generator)
    x_test = torch.linspace(-1.5, 1.5, 16).reshape(8, 2)
    return x, y, x_test


def _net(seed: int = 0) -> nn.Sequential:
    with bnn.RNG(seed).stream("init"):
        return nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 1))


def _trained(seed: int = 0) -> nn.Sequential:
    net = _net(seed)
    x, y, _ = _data()
    bnn.fit(net, (x, y), likelihood=NOISE, epochs=30, batch_size=8, lr=1e-2, rng=seed, **QUIET)
    return net


def _dropout_net() -> bnn.MCDropout:
    with bnn.RNG(0).stream("init"):
        net = nn.Sequential(nn.Linear(2, 8), nn.ReLU(), nn.Dropout(0.1), nn.Linear(8, 1))
    return bnn.MCDropout(net)


def _fit() -> bnn.Posterior:
    model = bnn.bayesianize(_net(), init="random", rng=0)
    post, _ = bnn.fit(model, _data()[:2], likelihood=NOISE, epochs=5, batch_size=8, rng=0, **QUIET)
    return post


def _svi() -> bnn.Posterior:
    return bnn.infer.svi(_net(), _data()[:2], likelihood=NOISE, steps=20, rng=0, **QUIET)[0]


def _nuts() -> bnn.Posterior:
    settings = {"num_chains": 2, "warmup": 10, "draws": 5, "max_tree_depth": 4}
    return bnn.infer.nuts(_net(), _data()[:2], likelihood=NOISE, rng=0, **settings, **QUIET)[0]


def _hmc() -> bnn.Posterior:
    settings = {"num_chains": 1, "warmup": 5, "draws": 5, "trajectory_length": 0.2}
    return bnn.infer.hmc(_net(), _data()[:2], likelihood=NOISE, rng=0, **settings, **QUIET)[0]


def _sgmcmc(method: str) -> Run:
    def run() -> bnn.Posterior:
        sampler = getattr(bnn.infer, method)
        schedule = bnn.infer.StepSchedule(steps=20, burn_in=10, thin=2)
        data = _data()[:2]
        return sampler(_net(), data, likelihood=NOISE, lr=1e-3, schedule=schedule, rng=0, **QUIET)[
            0
        ]  # type: ignore[no-any-return]

    return run


def _deep_ensemble() -> bnn.Posterior:
    options = {"epochs": 5, "batch_size": 8}
    return bnn.infer.deep_ensemble(
        _net, _data()[:2], likelihood=NOISE, num_members=2, rng=0, **options, **QUIET
    )[0]


def _neural_linear() -> bnn.Posterior:
    return bnn.infer.neural_linear(_trained(), _data()[:2], likelihood=NOISE, **QUIET)[0]


def _laplace() -> bnn.Posterior:
    return bnn.infer.laplace(_trained(), _data()[:2], likelihood=NOISE, hessian="kron", **QUIET)[0]


def _swag() -> bnn.Posterior:
    options = {"epochs": 4, "lr": 1e-2, "rank": 3, "batch_size": 8}
    return bnn.infer.swag(_trained(), _data()[:2], likelihood=NOISE, rng=0, **options, **QUIET)[0]


def _multi_swag() -> bnn.Posterior:
    models = [_trained(0), _trained(1)]
    options = {"epochs": 3, "lr": 1e-2, "rank": 2, "batch_size": 8}
    return bnn.infer.multi_swag(models, _data()[:2], likelihood=NOISE, rng=0, **options, **QUIET)[0]


def _gp() -> bnn.Posterior:
    return bnn.infer.gp(None, _data()[:2], likelihood=NOISE, epochs=10, rng=0, **QUIET)[0]


def _stack() -> bnn.Posterior:
    x, y, _ = _data()
    members = [_laplace(), _dropout_member()]
    return bnn.infer.stack(members, x, y, likelihood=NOISE, num_samples=16, rng=0, **QUIET)[0]


def _dropout_member() -> bnn.Posterior:
    model = _dropout_net()
    post, _ = bnn.fit(model, _data()[:2], likelihood=NOISE, epochs=5, batch_size=8, rng=0, **QUIET)
    return post


def _boost() -> bnn.Posterior:
    options = {"num_stages": 2, "epochs": 5, "noise_epochs": 5}
    return bnn.infer.boost(_net, _data()[:2], likelihood=NOISE, rng=0, **options, **QUIET)[0]


def _marglik_training() -> bnn.Posterior:
    options = {"epochs": 20, "every": 5, "burn_in": 5, "hyper_steps": 5}
    return bnn.infer.marglik_training(
        _net(), _data()[:2], likelihood=NOISE, rng=0, **options, **QUIET
    )[0]


RUNS: dict[str, Run] = {
    "fit": _fit,
    "svi": _svi,
    "nuts": _nuts,
    "hmc": _hmc,
    "sgld": _sgmcmc("sgld"),
    "sghmc": _sgmcmc("sghmc"),
    "deep_ensemble": _deep_ensemble,
    "neural_linear": _neural_linear,
    "laplace": _laplace,
    "swag": _swag,
    "multi_swag": _multi_swag,
    "gp": _gp,
    "stack": _stack,
    "boost": _boost,
    "marglik_training": _marglik_training,
}


def fingerprint(method: str) -> str:
    """SHA-256 of 16 function samples at the test inputs, after one seeded run of ``method``."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        posterior = RUNS[method]()
        samples = posterior.sample_functions(_data()[2], 16, rng=bnn.RNG(5))
    finally:
        torch.set_num_threads(threads)
    return hashlib.sha256(samples.detach().contiguous().numpy().tobytes()).hexdigest()


FINGERPRINTS: dict[str, str] = {
    "fit": "24e22bca03330f1ee21d8e9bcd723a02f755f34897261a3f9f91e7a3973e58f8",
    "svi": "ecb76d7e4b5b9d80f98fe1808472c451efa927df85d471fdf3a214d80a089413",
    "nuts": "dc627472f1a873664418cd0d03394731beca869fb43a8740a157aa45d931ad32",
    "hmc": "67a4a70c5e583145ef55859c9db4c3384fb182fd137ace4c1aa85caac86b637b",
    "sgld": "1a4871365d34f5141c2c52274f5353e45d50f057d0b7d2e81fdd320064e5c4a0",
    "sghmc": "5bbe2191b4008d2b7c9831242e475f174f232d67f7ccce95a3c58d4e557410a3",
    "deep_ensemble": "de6ea6b16f87bb89625b8cef0447e1dacc5dff3616c4cc3d4c800ea759208557",
    "neural_linear": "69979e52c4d68a7015ec56fe5b54135e38da6cafc544cf828081242ddd422aee",
    "laplace": "96caa8061c4073c252a6370960a7d0e5598adc85af679ca79d99db9393d5de2e",
    "swag": "f553b2c67e66b8124a5f138fd4b1c64d37bd249b3bf2487ca5329756686aac26",
    "multi_swag": "e173669b0468b36c3a894339ab157a1353f2d7a03267db715d3df904b26991e9",
    # re-pinned (issue 31): the exact GP's predictive is solved in float64, and a learned
    # noise has GPyTorch's floor (1e-4, was 1e-10), which changes the noise's parametrisation.
    # Before: 5c7299ee…
    "gp": "4b958081c4911cec65911c564d3f301b5d7d8e934c693c03400a82a6d75ff7c6",
    "stack": "39483172ece8690a12daa6e2450f9b9b299633c358cab5b4bf019bb0343819bb",
    "boost": "006276c535cea54e0984c7c5bf70b3bbb6e188282b92f385ed1260e91ec49f65",
    "marglik_training": "80727fbf6b92a2f8afca935728df7df824706904c494db64801e399fb3debc6e",
}


OTHER_KERNELS: dict[str, set[str]] = {
    # An AVX2 machine (AMD EPYC) running the pinning commit's code: SVI's last bits differ
    # from the machine the digests were pinned on; every other method's agree.
    "svi": {"fc6893ab911ccb7ac69116a37f813e994fcb3995d722d25b0f4761249233f456"},
}


@pytest.mark.parametrize("method", sorted(RUNS))
def test_a_seeded_run_gives_the_same_bits_as_before_the_move(method: str) -> None:
    assert fingerprint(method) in {FINGERPRINTS[method], *OTHER_KERNELS.get(method, set())}


if __name__ == "__main__":
    for name in RUNS:
        print(f'    "{name}": "{fingerprint(name)}",')
