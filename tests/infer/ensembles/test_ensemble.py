"""Deep ensembles: seeded members, sequential = parallel, mixture predictive, save/load."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

import bnn


def member() -> nn.Module:
    return nn.Sequential(nn.Linear(1, 16), nn.Tanh(), nn.Linear(16, 2))


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(64, 1, generator=generator) * 2 - 1
    return x, torch.sin(3 * x) + 0.1 * torch.randn(64, 1, generator=generator)


def _parameters(ensemble: bnn.infer.DeepEnsemble) -> list[torch.Tensor]:
    return [torch.cat([p.detach().flatten() for p in m.parameters()]) for m in ensemble.members]


def _train(workers: int, seed: int = 0, data: object = None) -> bnn.infer.DeepEnsemble:
    ensemble, history = bnn.infer.deep_ensemble(
        member,
        _data() if data is None else data,
        likelihood=bnn.HeteroscedasticGaussian(),
        num_members=3,
        rng=seed,
        epochs=5,
        batch_size=16,
        lr=1e-2,
        bagging=True,
        workers=workers,
        threads_per_member=1,
    )
    assert len(history.chains) == 3 and len(history.chains[0].loss) == 5
    return ensemble


def test_members_differ_and_the_same_seed_reproduces_the_ensemble() -> None:
    first, second = _train(0), _train(0)
    params = _parameters(first)
    assert not torch.equal(params[0], params[1])
    assert all(torch.equal(a, b) for a, b in zip(params, _parameters(second), strict=True))
    assert not torch.equal(params[0], _parameters(_train(0, seed=1))[0])


def test_sequential_and_parallel_training_give_identical_members() -> None:
    sequential, parallel = _train(0), _train(2)
    assert all(
        torch.equal(a, b)
        for a, b in zip(_parameters(sequential), _parameters(parallel), strict=True)
    )


class _Rows(torch.utils.data.Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """A map-style dataset read row by row (the generic path, not a TensorDataset)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[i], self.y[i]


def test_a_dataset_trains_the_members_of_tensors_bagging_included() -> None:
    """A Dataset gives each member its own seeded loader and bootstrap Subset: the bits of
    tensors; a DataLoader is read as is by every member, and refused with bagging."""
    reference = _parameters(_train(0))
    from_dataset = _parameters(_train(0, data=_Rows(*_data())))
    assert all(torch.equal(a, b) for a, b in zip(reference, from_dataset, strict=True))
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(*_data()), batch_size=16)
    ensemble, _ = bnn.infer.deep_ensemble(
        member, loader, likelihood=bnn.HeteroscedasticGaussian(), num_members=2, rng=0, epochs=2
    )
    first, second = _parameters(ensemble)
    assert not torch.equal(first, second)  # the members differ by their initialisation
    with pytest.raises(ValueError, match="pass its Dataset"):
        _train(0, data=loader)
    shuffling = torch.utils.data.DataLoader(loader.dataset, batch_size=16, shuffle=True)
    with pytest.raises(ValueError, match="shuffling loader"):
        bnn.infer.deep_ensemble(
            member, shuffling, likelihood=bnn.HeteroscedasticGaussian(), num_members=2, epochs=1
        )
    with pytest.raises(TypeError, match="a Dataset or a DataLoader"):
        _train(0, data=[1, 2])


def test_member_does_not_depend_on_ensemble_size() -> None:
    small = bnn.infer.DeepEnsemble(member, 2, rng=0)
    large = bnn.infer.DeepEnsemble(member, 5, rng=0)
    assert torch.equal(_parameters(small)[1], _parameters(large)[1])


def test_vectorised_prediction_equals_member_loop_and_is_a_mixture() -> None:
    ensemble = _train(0)
    x = torch.linspace(-2, 2, 7).unsqueeze(-1)
    stacked = ensemble.sample_functions(x, 10)
    with torch.no_grad():
        loop = torch.stack([m(x) for m in ensemble.members])
    torch.testing.assert_close(stacked, loop)
    prediction = bnn.predict_with_uncertainty(ensemble, x, likelihood=bnn.HeteroscedasticGaussian())
    assert prediction.samples.shape == (3, 7, 2)
    mean, std = prediction.loc, prediction.scale
    expected_variance = (std**2).mean(0) + mean.var(0, unbiased=False)
    torch.testing.assert_close(prediction.variance, expected_variance)
    assert bnn.predict_with_uncertainty(ensemble, x, num_samples=2, rng=0).samples.shape == (
        2,
        7,
        2,
    )


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    ensemble = _train(0)
    ensemble.save(tmp_path / "ensemble.pt")
    loaded = bnn.infer.DeepEnsemble.load(
        tmp_path / "ensemble.pt", member, likelihood=bnn.HeteroscedasticGaussian()
    )
    assert all(
        torch.equal(a, b) for a, b in zip(_parameters(ensemble), _parameters(loaded), strict=True)
    )
    assert len(loaded.likelihoods) == 3


@pytest.mark.parametrize(
    "build, error, match",
    [
        (lambda: bnn.infer.DeepEnsemble(member, 0), ValueError, "num_members"),
        (lambda: bnn.infer.DeepEnsemble(lambda: "not a module", 2), TypeError, "nn.Module"),
        (lambda: _train(-1), ValueError, "workers"),
    ],
)
def test_bad_ensemble_arguments(build, error, match) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(error, match=match):
        build()


def homoscedastic_member() -> nn.Module:
    return nn.Sequential(nn.Linear(1, 16), nn.Tanh(), nn.Linear(16, 1))


def test_members_with_learned_noise_predict_with_their_own_noise() -> None:
    ensemble, _ = bnn.infer.deep_ensemble(
        homoscedastic_member,
        _data(),
        likelihood=bnn.Gaussian(0.5, learn_std=True),
        num_members=3,
        rng=0,
        epochs=20,
        lr=1e-2,
    )
    stds = torch.stack([lk.std.detach() for lk in ensemble.likelihoods]).flatten()
    assert len(set(stds.tolist())) == 3  # each member learned its own noise
    x = torch.linspace(-1, 1, 5).unsqueeze(-1)
    prediction = bnn.predict_with_uncertainty(ensemble, x)  # the members' own likelihoods
    outputs = ensemble(x).detach()  # [M, N, 1]
    # Mixture (1/M) Σ N(f_m, σ_m²): mean and total variance by hand.
    mean = outputs.mean(0)
    variance = (stds.view(3, 1, 1) ** 2 + outputs**2).mean(0) - mean**2
    torch.testing.assert_close(prediction.mean, mean)
    torch.testing.assert_close(prediction.std, variance.sqrt())
    with pytest.raises(ValueError, match="carries its own observation model"):
        bnn.predict_with_uncertainty(ensemble, x, likelihood=bnn.Gaussian(0.5, learn_std=True))
    with pytest.raises(ValueError, match="num_samples >= 3"):
        bnn.predict_with_uncertainty(ensemble, x, num_samples=2, rng=0)


def test_members_learned_noise_survives_save_and_load(tmp_path: Path) -> None:
    ensemble, _ = bnn.infer.deep_ensemble(
        homoscedastic_member,
        _data(),
        likelihood=bnn.Gaussian(0.5, learn_std=True),
        num_members=2,
        rng=0,
        epochs=3,
        progress=False,
    )
    ensemble.save(tmp_path / "noisy.pt")
    with pytest.raises(ValueError, match="learned likelihood parameters"):
        bnn.infer.DeepEnsemble.load(tmp_path / "noisy.pt", homoscedastic_member)
    loaded = bnn.infer.DeepEnsemble.load(
        tmp_path / "noisy.pt", homoscedastic_member, likelihood=bnn.Gaussian(1.0, learn_std=True)
    )
    x = torch.linspace(-1, 1, 5).unsqueeze(-1)
    torch.testing.assert_close(
        bnn.predict_with_uncertainty(loaded, x).std, bnn.predict_with_uncertainty(ensemble, x).std
    )


def test_members_evaluated_in_chunks_under_a_tiny_budget_equal_one_vmap() -> None:
    ensemble = _train(0)
    x = torch.linspace(-2, 2, 7).unsqueeze(-1)
    with torch.no_grad():
        whole = ensemble.sample_functions(x, 3)
        chunked = ensemble.sample_functions(x, 3, memory_budget=1)  # one member, one input
        subset = ensemble.sample_functions(x, 2, rng=4, memory_budget=1)
    torch.testing.assert_close(chunked, whole)
    assert subset.shape == (2, 7, 2)
    assert any(torch.allclose(subset[0], member) for member in whole)
