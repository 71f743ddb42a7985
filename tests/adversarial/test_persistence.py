"""Loading files that are not what they claim, and saves that are interrupted.

Every load path names the file and the problem (never a bare ``EOFError`` or ``KeyError``);
a crafted pickle is refused without running it; an interrupted save keeps the old file.
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import bnn
from tests.adversarial._tiny import NOISE, NUTS, data, mlp

X, Y = data()


def _samples() -> bnn.SampleSet:
    return bnn.infer.nuts(mlp(), (X, Y), likelihood=NOISE, rng=0, **NUTS)[0]


def _ensemble(learned: bool = False) -> bnn.infer.DeepEnsemble:
    likelihood = bnn.Gaussian(0.5, learn_std=learned)
    ensemble, _ = bnn.infer.deep_ensemble(
        mlp, (X, Y), likelihood=likelihood, num_members=2, epochs=1, progress=False, rng=0
    )
    return ensemble


LOADERS: dict[str, Callable[[Path], object]] = {
    "SampleSet": lambda path: bnn.SampleSet.load(path, mlp()),
    "DeepEnsemble": lambda path: bnn.infer.DeepEnsemble.load(path, mlp),
}


class _RunsCode:
    """Unpickling this would run ``touch <marker>``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.marker}",))


def _write(path: Path, content: str) -> Path:
    if content == "empty":
        path.write_bytes(b"")
    elif content == "text":
        path.write_text("this is not a checkpoint\n")
    elif content == "random-bytes":
        path.write_bytes(bytes(range(256)) * 4)
    elif content == "plain-dict":
        torch.save({"weights": torch.zeros(2)}, path)
    elif content == "list":
        torch.save([torch.zeros(2)], path)
    return path


@pytest.mark.parametrize(
    "content, fragment",
    [
        ("empty", r"is empty \(0 bytes\)"),
        ("text", "not a readable bnn .* file"),
        ("random-bytes", "not a readable bnn .* file"),
        ("plain-dict", "holds no bnn format name"),
        ("list", "holds a list"),
    ],
)
@pytest.mark.parametrize("kind", sorted(LOADERS))
def test_a_file_that_is_not_a_checkpoint_is_named(
    tmp_path: Path, kind: str, content: str, fragment: str
) -> None:
    path = _write(tmp_path / "file.pt", content)
    with pytest.raises(ValueError, match=fragment) as raised:
        LOADERS[kind](path)
    assert str(path) in str(raised.value) and kind in str(raised.value)


@pytest.mark.parametrize("kind", sorted(LOADERS))
def test_a_missing_file_and_a_folder_are_named(tmp_path: Path, kind: str) -> None:
    with pytest.raises(FileNotFoundError, match="no file .*missing.pt"):
        LOADERS[kind](tmp_path / "missing.pt")
    with pytest.raises(ValueError, match="is a folder"):
        LOADERS[kind](tmp_path)


@pytest.mark.parametrize("where", ["top-level", "inside-a-dict"])
@pytest.mark.parametrize("kind", sorted(LOADERS))
def test_a_crafted_pickle_is_refused_without_running_it(
    tmp_path: Path, kind: str, where: str
) -> None:
    marker = tmp_path / "ran"
    path = tmp_path / "evil.pt"
    if where == "top-level":
        path.write_bytes(pickle.dumps(_RunsCode(marker)))
    else:
        torch.save({"format": f"bnn.{kind}", "payload": _RunsCode(marker)}, path)
    with pytest.raises(ValueError, match="refuses to load.*could run code"):
        LOADERS[kind](path)
    assert not marker.exists()


def test_truncated_and_corrupted_sample_files_are_named(tmp_path: Path) -> None:
    good = tmp_path / "good.pt"
    _samples().save(good)
    raw = good.read_bytes()
    (tmp_path / "truncated.pt").write_bytes(raw[: len(raw) // 2])
    corrupted = bytearray(raw)
    corrupted[len(raw) // 3 : len(raw) // 3 + 64] = bytes(64)
    (tmp_path / "corrupted.pt").write_bytes(bytes(corrupted))
    for name in ("truncated.pt", "corrupted.pt"):
        with pytest.raises(ValueError, match=f"{name} is not a readable bnn SampleSet file"):
            bnn.SampleSet.load(tmp_path / name, mlp())


@pytest.mark.parametrize(
    "edit, fragment",
    [
        (lambda s: s.update(format_version=99), "format version 99; this bnn reads version"),
        (lambda s: s.update(format="bnn.DeepEnsemble"), "holds format 'bnn.DeepEnsemble'"),
        (lambda s: s.pop("samples"), r"damaged bnn SampleSet file: it lacks \['samples'\]"),
        (lambda s: s.update(samples=[1, 2]), "does not hold samples of this model"),
    ],
    ids=["version-skew", "other-kind", "missing-key", "malformed-entry"],
)
def test_edited_sample_files_are_refused_with_the_reason(
    tmp_path: Path, edit: Callable[[dict[str, Any]], None], fragment: str
) -> None:
    state = _samples().state_dict()
    edit(state)
    torch.save(state, tmp_path / "edited.pt")
    with pytest.raises(ValueError, match=fragment):
        bnn.SampleSet.load(tmp_path / "edited.pt", mlp())


def test_samples_loaded_for_another_model_are_refused(tmp_path: Path) -> None:
    _samples().save(tmp_path / "s.pt")
    with pytest.raises(ValueError, match="does not hold samples of this model.*not a parameter"):
        bnn.SampleSet.load(tmp_path / "s.pt", nn.Sequential(nn.Identity(), nn.Linear(2, 1)))
    with pytest.raises(ValueError, match="does not hold samples of this model.*shape"):
        bnn.SampleSet.load(tmp_path / "s.pt", mlp(hidden=4))


def test_a_round_trip_keeps_every_draw(tmp_path: Path) -> None:
    samples = _samples()
    samples.save(tmp_path / "s.pt")
    loaded = bnn.SampleSet.load(tmp_path / "s.pt", mlp())
    for name, value in samples.samples.items():
        assert torch.equal(loaded.samples[name], value)
    assert loaded.is_mcmc and loaded.sample_stats.keys() == samples.sample_stats.keys()


def test_ensemble_loaded_without_its_learned_likelihoods_says_what_to_pass(tmp_path: Path) -> None:
    _ensemble(learned=True).save(tmp_path / "e.pt")
    with pytest.raises(ValueError, match="learned likelihood parameters.*pass likelihood="):
        bnn.infer.DeepEnsemble.load(tmp_path / "e.pt", mlp)
    loaded = bnn.infer.DeepEnsemble.load(tmp_path / "e.pt", mlp, bnn.Gaussian(1.0, learn_std=True))
    prediction = bnn.predict_with_uncertainty(loaded, X, num_samples=2)
    assert bool((prediction.aleatoric > 0).all())  # the learned noise came back


@pytest.mark.parametrize(
    "factory, likelihood, fragment",
    [
        (lambda: mlp(hidden=5), None, "members of another architecture"),
        (mlp, bnn.Categorical(), "likelihoods of another kind than Categorical"),
    ],
    ids=["wrong-factory", "wrong-likelihood"],
)
def test_ensemble_loaded_with_the_wrong_parts_is_refused(
    tmp_path: Path, factory: Callable[[], nn.Module], likelihood: Any, fragment: str
) -> None:
    _ensemble(learned=True).save(tmp_path / "e.pt")
    with pytest.raises(ValueError, match=fragment):
        bnn.infer.DeepEnsemble.load(tmp_path / "e.pt", factory, likelihood or NOISE)


@pytest.mark.parametrize("kind", ["SampleSet", "DeepEnsemble"])
def test_an_interrupted_save_leaves_the_previous_file_intact(
    tmp_path: Path, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    obj: Any = _samples() if kind == "SampleSet" else _ensemble()
    path = tmp_path / "keep.pt"
    obj.save(path)
    before = path.read_bytes()
    real_save = torch.save

    def half_written(state: object, handle: Any, *args: Any, **kwargs: Any) -> None:
        real_save(state, handle, *args, **kwargs)
        handle.truncate(len(before) // 2)
        raise KeyboardInterrupt  # e.g. Ctrl-C in the middle of the write

    monkeypatch.setattr(torch, "save", half_written)
    with pytest.raises(KeyboardInterrupt):
        obj.save(path)
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["keep.pt"]  # no temporary file left
    LOADERS[kind](path)


@pytest.mark.parametrize("kind", ["SampleSet", "DeepEnsemble"])
def test_saving_into_a_missing_folder_names_it(tmp_path: Path, kind: str) -> None:
    obj: Any = _samples() if kind == "SampleSet" else bnn.infer.DeepEnsemble(mlp, 1, rng=0)
    with pytest.raises(FileNotFoundError, match="does not exist; create it first"):
        obj.save(tmp_path / "no-such-folder" / "file.pt")


@pytest.mark.parametrize(
    "state, error, fragment",
    [
        (None, TypeError, "must be a dict from RNG.state_dict"),
        ({"seed": 0}, ValueError, "missing keys"),
        (lambda s: s.update(format_version=0), ValueError, "format version 0"),
        (lambda s: s.update(seed=1), ValueError, r"belongs to RNG\(seed=1"),
        (lambda s: s.update(streams={"x": {"python": "garbage"}}), ValueError, "malformed RNG"),
    ],
    ids=["not-a-dict", "missing-keys", "version", "other-seed", "garbage-stream"],
)
def test_rng_state_loads_refuse_foreign_or_damaged_states(
    state: Any, error: type[Exception], fragment: str
) -> None:
    if callable(state):
        good = bnn.RNG(0).state_dict()
        state(good)
        state = good
    with pytest.raises(error, match=fragment):
        bnn.RNG(0).load_state_dict(state)


def test_rng_state_round_trips_through_a_weights_only_file(tmp_path: Path) -> None:
    rng = bnn.RNG(5)
    with rng.stream("a"):
        torch.rand(3)
    torch.save(rng.state_dict(), tmp_path / "rng.pt")
    restored = bnn.RNG(5)
    restored.load_state_dict(torch.load(tmp_path / "rng.pt", weights_only=True))
    with rng.stream("a"):
        expected = torch.rand(3)
    with restored.stream("a"):
        assert torch.equal(torch.rand(3), expected)
