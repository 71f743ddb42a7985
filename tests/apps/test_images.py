"""``bnn benchmark images`` end to end on small synthetic idx folders: every method runs and
reports, one seed is reproducible, bad arguments are refused before training."""

from __future__ import annotations

import gzip
import json
import struct
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from bnn.apps.cli import main
from bnn.apps.datasets.images import ImageSet
from bnn.apps.images.command import Benchmark, run_images
from bnn.apps.images.methods import validation_halves
from bnn.apps.images.network import METHODS, Settings, lenet
from bnn.apps.images.report import summarise, write_report

SMALL = Settings(
    epochs=1,
    batch_size=32,
    ensemble_members=2,
    multiswag_runs=2,
    num_samples=4,
    swag_epochs=2,
    sghmc_epochs=1,
    sghmc_cycles=1,
    validation=40,
    shift_images=30,
    angles=(0, 90),
)


def _write(path: Path, values: np.ndarray) -> None:
    header = struct.pack(">BBBB", 0, 0, 0x08, values.ndim)
    header += struct.pack(f">{values.ndim}I", *values.shape)
    path.write_bytes(gzip.compress(header + values.astype(np.uint8).tobytes()))


def _image_folder(folder: Path, seed: int, *, train: int = 200, test: int = 60) -> Path:
    """Three classes: a bright bar at the top, the middle or the bottom, with noise."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for part, count in (("train", train), ("t10k", test)):
        labels = np.arange(count) % 3
        images = rng.integers(0, 60, size=(count, 28, 28))
        for i, label in enumerate(labels):
            images[i, 4 + 8 * label : 8 + 8 * label, 4:24] = 250
        _write(folder / f"{part}-images-idx3-ubyte.gz", images)
        _write(folder / f"{part}-labels-idx1-ubyte.gz", labels)
    return folder


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("images")
    _image_folder(root / "bars", 0)
    other = root / "noise"
    other.mkdir()
    rng = np.random.default_rng(2)
    _write(other / "t10k-images-idx3-ubyte.gz", rng.integers(0, 256, size=(50, 28, 28)))
    _write(other / "t10k-labels-idx1-ubyte.gz", np.zeros(50))
    return root


def test_lenet_is_the_laplace_redux_network() -> None:
    network = lenet()
    assert sum(p.numel() for p in network.parameters()) == 44_426
    assert network(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    with pytest.raises(ValueError, match="at least 16"):
        lenet(image_size=12)


def test_every_method_reports(folders: Path, tmp_path: Path) -> None:
    benchmark = Benchmark(
        train_name="bars",
        train_dir=folders / "bars",
        ood_dirs={"noise": folders / "noise"},
        methods=METHODS,
        settings=SMALL,
        figures=tmp_path / "figures",
    )
    results = run_images(benchmark, seeds=1)
    assert list(results[0]) == list(METHODS)
    for method, result in results[0].items():
        metrics = result["metrics"]
        assert 0.0 <= metrics["accuracy"] <= 1.0 and np.isfinite(metrics["nll"]), method
        assert 0.0 <= result["ood"]["noise"]["auroc"] <= 1.0, method
        assert len(result["shift"]["accuracy"]) == 2, method
        assert 0.0 < result["memory_gb"] < 8.0, method
        assert (tmp_path / "figures" / f"{method}-reliability.png").stat().st_size > 5_000
    assert results[0]["map"]["ood"]["noise"]["auroc_mutual_information"] == 0.5  # one network
    assert results[0]["temperature"]["extras"]["temperature"] > 0
    assert results[0]["laplace"]["extras"]["prior_precision"] > 0
    text = write_report(benchmark, results, tmp_path)
    assert "| laplace_all |" in text and "Out of distribution: noise" in text
    chosen = min(
        (m for m in METHODS if m != "temperature"),
        key=lambda m: results[0][m]["metrics"]["val_nll"],
    )
    assert f"**{chosen}**" in text
    record = json.loads((tmp_path / "images.json").read_text())
    assert record["summary"]["map"]["accuracy"][0] == results[0]["map"]["metrics"]["accuracy"]
    assert (tmp_path / "figures" / "shift.png").stat().st_size > 5_000


def test_temperature_on_top_adds_a_scaled_row_per_method_and_keeps_the_others(
    folders: Path, tmp_path: Path
) -> None:
    methods = ("map", "temperature", "ensemble", "laplace")
    options = {"train_name": "bars", "train_dir": folders / "bars", "methods": methods}
    options["ood_dirs"] = {"noise": folders / "noise"}
    plain = run_images(Benchmark(**options, settings=SMALL), seeds=1)[0]
    on_top = replace(SMALL, temperature_on_top=True)
    benchmark = Benchmark(**options, settings=on_top)
    scaled = run_images(benchmark, seeds=1)[0]
    assert list(scaled) == ["map", "temperature", "ensemble", "ensemble+T", "laplace", "laplace+T"]
    for method in ("map", "ensemble", "laplace"):  # the same training and test predictions
        for metric in ("accuracy", "nll", "ece", "brier"):
            assert scaled[method]["metrics"][metric] == plain[method]["metrics"][metric]
        assert scaled[method]["ood"] == plain[method]["ood"]
        assert scaled[method]["metrics"]["val_nll"] != plain[method]["metrics"]["val_nll"]
    for row in ("temperature", "ensemble+T", "laplace+T"):
        assert scaled[row]["extras"]["temperature"] > 0
        assert np.isfinite(scaled[row]["metrics"]["nll"])
    for method in ("ensemble", "laplace"):  # the temperature was applied
        assert scaled[f"{method}+T"]["metrics"]["nll"] != scaled[method]["metrics"]["nll"]
        assert scaled[f"{method}+T"]["metrics"]["accuracy"] == scaled[method]["metrics"]["accuracy"]
    # fitted on half the validation split now, so another temperature
    assert scaled["temperature"]["extras"] != plain["temperature"]["extras"]
    text = write_report(benchmark, [scaled], tmp_path)
    chosen = min(scaled, key=lambda m: scaled[m]["metrics"]["val_nll"])  # all compete
    assert f"first half, every NLL measured on its second half): **{chosen}**" in text
    assert "| ensemble+T |" in text


def test_a_pooled_temperature_on_top_tempers_each_methods_averaged_predictive(
    folders: Path, tmp_path: Path
) -> None:
    methods = ("map", "ensemble", "laplace")
    options = {"train_name": "bars", "train_dir": folders / "bars", "methods": methods}
    options["ood_dirs"] = {"noise": folders / "noise"}
    on_top = replace(SMALL, temperature_on_top=True)
    per_sample = run_images(Benchmark(**options, settings=on_top), seeds=1)[0]
    pooled_settings = replace(on_top, pooled_temperature=True)
    benchmark = Benchmark(**options, settings=pooled_settings)
    pooled = run_images(benchmark, seeds=1)[0]
    assert list(pooled) == list(per_sample)
    for method in methods:  # the untempered rows are the same
        for metric in ("accuracy", "nll", "ece", "brier", "val_nll"):
            assert pooled[method]["metrics"][metric] == per_sample[method]["metrics"][metric]
    # the ensemble's pooled temperature is another model than a temperature per member
    assert pooled["ensemble+T"]["extras"] != per_sample["ensemble+T"]["extras"]
    for method in ("ensemble", "laplace"):  # the pool's arg-max is kept
        assert pooled[f"{method}+T"]["metrics"]["accuracy"] == pooled[method]["metrics"]["accuracy"]
    text = write_report(benchmark, [pooled], tmp_path)
    assert "first half to the pooled predictives, every NLL" in text


def test_multiswag_continues_every_ensemble_member_unless_told_fewer() -> None:
    assert Settings().multiswag_runs is None  # all of the ensemble's members
    assert replace(SMALL, multiswag_runs=None).multiswag_runs is None
    for runs in (0, 3):
        with pytest.raises(ValueError, match=r"multiswag_runs must be in \[1, ensemble_members"):
            replace(SMALL, multiswag_runs=runs)


def test_the_validation_halves_are_disjoint_and_cover_the_split() -> None:
    images = ImageSet(torch.arange(10.0).reshape(10, 1, 1, 1), torch.arange(10))
    same = validation_halves(images, SMALL)
    assert same == (images, images)
    fit, choose = validation_halves(images, replace(SMALL, temperature_on_top=True))
    assert fit.y.tolist() == [0, 1, 2, 3, 4] and choose.y.tolist() == [5, 6, 7, 8, 9]
    with pytest.raises(ValueError, match="validation must be at least 4"):
        Benchmark(
            train_name="bars",
            train_dir=Path("."),
            ood_dirs={},
            methods=("map",),
            settings=replace(SMALL, validation=3, temperature_on_top=True),
        )


def test_a_seed_is_reproducible_and_seeds_differ(folders: Path) -> None:
    benchmark = Benchmark(
        train_name="bars",
        train_dir=folders / "bars",
        ood_dirs={"noise": folders / "noise"},
        methods=("map", "mc_dropout"),
        settings=SMALL,
    )
    first, second = run_images(benchmark, seeds=2)
    again = run_images(benchmark, seeds=1)[0]
    for method in ("map", "mc_dropout"):
        assert again[method]["metrics"]["nll"] == first[method]["metrics"]["nll"]
        assert again[method]["shift"] == first[method]["shift"]
        assert second[method]["metrics"]["nll"] != first[method]["metrics"]["nll"]
    summary = summarise([first, second])
    mean, se = summary["map"]["nll"]
    values = [first["map"]["metrics"]["nll"], second["map"]["metrics"]["nll"]]
    assert mean == pytest.approx(sum(values) / 2)
    assert se == pytest.approx(abs(values[0] - values[1]) / 2)


def test_seeds_in_worker_processes_give_the_serial_numbers(folders: Path) -> None:
    """``jobs=2`` runs the two seeds in two one-thread processes: every metric equals the
    serial one-thread run's."""
    benchmark = Benchmark(
        train_name="bars",
        train_dir=folders / "bars",
        ood_dirs={"noise": folders / "noise"},
        methods=("map", "ensemble"),
        settings=SMALL,
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        serial = run_images(benchmark, seeds=2)
    finally:
        torch.set_num_threads(threads)
    parallel = run_images(benchmark, seeds=2, jobs=2)
    for one, other in zip(serial, parallel, strict=True):
        for method in ("map", "ensemble"):
            measured = [k for k in one[method]["metrics"] if "seconds" in k or "memory" in k]
            assert {k: v for k, v in one[method]["metrics"].items() if k not in measured} == {
                k: v for k, v in other[method]["metrics"].items() if k not in measured
            }
            assert one[method]["shift"] == other[method]["shift"]


def test_the_command_line(
    folders: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    arguments = [
        "benchmark", "images", "--train", "bars", "--data-dir", str(folders),
        "--ood", f"noise={folders / 'noise'}", "--method", "map", "--epochs", "1",
        "--validation", "40", "--output", str(tmp_path / "out"),
    ]  # fmt: skip
    assert main(arguments) == 0
    assert "| map |" in (tmp_path / "out" / "images.md").read_text()
    assert "wrote" in capsys.readouterr().out
    pooled = [*arguments[:-1], str(tmp_path / "pooled"), "--temperature-on-top", "pooled"]
    assert main([*pooled, "--method", "temperature"]) == 0
    assert "to the pooled predictives" in (tmp_path / "pooled" / "images.md").read_text()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"--train": "absent"}, "has no folder absent/"),
        ({"--ood": "noise"}, "NAME=DIR"),
        ({"--ood": "x=/nowhere"}, "t10k-images-idx3-ubyte"),
        ({"--seeds": "0"}, "--seeds must be at least 1"),
        ({"--epochs": "0"}, "--epochs must be at least 1"),
        ({"--validation": "500"}, "validation must be in"),
        ({"--device": "gpu7"}, "is not a device"),
    ],
)
def test_bad_arguments_are_refused(
    folders: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    change: dict[str, str],
    message: str,
) -> None:
    options = {
        "--train": "bars",
        "--data-dir": str(folders),
        "--ood": f"noise={folders / 'noise'}",
        "--method": "map",
        "--epochs": "1",
        "--validation": "40",
        "--output": str(tmp_path),
    }
    options.update(change)
    arguments = ["benchmark", "images"] + [item for pair in options.items() for item in pair]
    assert main(arguments) == 2
    assert message in capsys.readouterr().err


def test_the_default_ood_set_is_the_other_shipped_set(tmp_path: Path) -> None:
    from bnn.apps.images.cli import parse_ood

    _image_folder(tmp_path / "mnist", 0, train=0, test=5)
    assert parse_ood(None, "fashion-mnist", tmp_path) == {"mnist": tmp_path / "mnist"}
    with pytest.raises(ValueError, match="no default OOD set"):
        parse_ood(None, "bars", tmp_path)
    with pytest.raises(ValueError, match="twice"):
        parse_ood([f"a={tmp_path / 'mnist'}", f"a={tmp_path / 'mnist'}"], "bars", tmp_path)
