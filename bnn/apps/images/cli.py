"""The arguments of ``bnn benchmark images``, checked before any training, and the run."""

from __future__ import annotations

import argparse
import importlib.util
from dataclasses import replace
from pathlib import Path

import torch

from bnn.apps.datasets.images import IDX_FILES, missing_files
from bnn.apps.images.command import Benchmark, run_images
from bnn.apps.images.network import METHODS, Settings
from bnn.apps.images.report import write_report

__all__ = ["OTHER_SET", "parse_ood", "run_from_arguments"]

OTHER_SET = {"mnist": "fashion-mnist", "fashion-mnist": "mnist"}
"""The default out-of-distribution set of each shipped training set."""


def parse_ood(entries: list[str] | None, train: str, data_dir: Path) -> dict[str, Path]:
    """``NAME=DIR`` entries as ``{name: folder}``; default: the other shipped set.

    Raises:
        ValueError: an entry without ``=``, a repeated name, or a folder without the t10k
            idx files.
    """
    if entries is None:
        if train not in OTHER_SET:
            raise ValueError(
                f"--train {train} has no default OOD set; name one or more with --ood NAME=DIR."
            )
        entries = [f"{OTHER_SET[train]}={data_dir / OTHER_SET[train]}"]
    sets: dict[str, Path] = {}
    for entry in entries:
        name, sep, folder = entry.partition("=")
        if not sep or not name or not folder:
            raise ValueError(f"--ood takes NAME=DIR, got {entry!r}.")
        if name in sets:
            raise ValueError(f"--ood names {name!r} twice; give each OOD set its own name.")
        path = Path(folder)
        if missing_files(path, "test"):
            raise ValueError(
                f"--ood {entry}: {path} has no {' and '.join(IDX_FILES['test'])} (plain or .gz); "
                "an OOD set is any folder with those two files."
            )
        sets[name] = path
    return sets


def _settings(args: argparse.Namespace) -> Settings:
    settings = Settings()
    for flag, value in (("--epochs", args.epochs), ("--train-images", args.train_images)):
        if value is not None and value < 1:
            raise ValueError(f"{flag} must be at least 1, got {value}.")
    if args.validation is not None:
        settings = replace(settings, validation=args.validation)
    if settings.validation < 1 and "temperature" in (args.method or METHODS):
        raise ValueError("--validation must be at least 1: temperature scaling is fitted there.")
    on_top = getattr(args, "temperature_on_top", None)
    if on_top:
        if settings.validation < 4:
            raise ValueError(
                "--temperature-on-top fits on one half of the validation split and chooses on "
                "the other: give --validation of at least 4 images (thousands are better)."
            )
        settings = replace(settings, temperature_on_top=True, pooled_temperature=on_top == "pooled")
    if args.epochs is not None:
        settings = replace(settings, epochs=args.epochs)
    if args.train_images is not None:
        settings = replace(settings, train_images=args.train_images)
    return settings


def _device(name: str | None) -> str:
    if name is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise ValueError(f"--device {name!r} is not a device (cpu, cuda, cuda:K).") from error
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: this machine has no CUDA device; use --device cpu.")
    return name


def run_from_arguments(args: argparse.Namespace) -> int:
    """Check every argument (paths, numbers, OOD folders), run, write and print the report."""
    for flag, value in (("--seeds", args.seeds), ("--jobs", args.jobs)):
        if value < 1:
            raise ValueError(f"{flag} must be at least 1, got {value}.")
    train_dir = args.data_dir / args.train
    if not train_dir.is_dir():
        raise ValueError(
            f"--data-dir {args.data_dir} has no folder {args.train}/; give the folder that "
            "holds the idx image folders (e.g. mnist/, fashion-mnist/)."
        )
    missing = missing_files(train_dir, "train") + missing_files(train_dir, "test")
    if missing:
        raise ValueError(f"{train_dir} lacks {', '.join(missing)} (plain or .gz).")
    figures = args.output / "figures" if importlib.util.find_spec("matplotlib") else None
    benchmark = Benchmark(
        train_name=args.train,
        train_dir=train_dir,
        ood_dirs=parse_ood(args.ood, args.train, args.data_dir),
        methods=tuple(args.method or METHODS),
        settings=_settings(args),
        seed=args.seed,
        figures=figures,
        device=_device(args.device),
    )
    results = run_images(benchmark, seeds=args.seeds, jobs=args.jobs)
    print(write_report(benchmark, results, args.output))
    written = ["images.md", "images.json"] + (["figures/"] if figures is not None else [])
    print("wrote " + ", ".join(str(args.output / name) for name in written))
    return 0
