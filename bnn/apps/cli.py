"""The ``bnn`` command line."""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from bnn._version import installed_version

__all__ = ["UsageError", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bnn", description="Bayesian deep learning for PyTorch.")
    parser.add_argument("--version", action="version", version=f"bnn {installed_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    _add_demo(commands)
    benchmark = commands.add_parser("benchmark", help="standard benchmarks")
    suites = benchmark.add_subparsers(dest="suite", metavar="SUITE", required=True)
    _add_uci(suites)
    _add_images(suites)
    return parser


def _add_demo(commands: Any) -> None:
    demo = commands.add_parser(
        "demo", help="MC dropout and Bayes by backprop on a toy problem and UCI yacht"
    )
    demo.add_argument("--seed", type=int, default=0, help="seed of the whole run (default 0)")
    demo.add_argument(
        "--output", type=Path, default=Path("bnn-demo-output"), help="folder for PNG and JSON"
    )
    demo.add_argument("--quick", action="store_true", help="few epochs (a smoke test)")


UCI_METHODS = (
    "mc_dropout",
    "ensemble",
    "vi",
    "sghmc",
    "laplace",
    "swag",
    "multiswag",
    "gp",
    "stack",
)
"""``--method`` choices of ``bnn benchmark uci`` (``bnn.apps.uci.command.METHODS``; checked by
the tests, not imported here, so that ``bnn --help`` stays fast)."""


def _add_uci(suites: Any) -> None:
    uci = suites.add_parser("uci", help="UCI regression benchmark (20 standard splits)")
    uci.add_argument(
        "--dataset",
        required=True,
        help="yacht ships with bnn; others (boston, concrete, energy, kin8nm, ...) need "
        "--data-dir (see docs/data.md)",
    )
    uci.add_argument(
        "--method",
        required=True,
        choices=UCI_METHODS,
        help="stack: MC dropout, ensemble and GP stacked on the validation split",
    )
    uci.add_argument(
        "--recalibrate",
        choices=["conformal", "cvplus", "jab", "isotonic"],
        default=None,
        help="also report the test coverage and width of 90/95%% intervals: split conformal "
        "calibrated on the validation split (conformal), CV+ from 10 more models per split "
        "trained on folds of the training split (cvplus), jackknife+-after-bootstrap from 20 "
        "more models per split on 60%% subsamples (jab), or the predictive CDF recalibrated "
        "on the validation split (isotonic)",
    )
    uci.add_argument(
        "--tune",
        action="store_true",
        help="tune each split's hyperparameters on its validation split first (needs the "
        "tune extra; see bnn.apps.uci.tune)",
    )
    uci.add_argument("--tune-trials", type=int, default=12, help="configurations per split")
    uci.add_argument("--tune-seeds", type=int, default=2, help="seeds per configuration")
    uci.add_argument("--epochs", type=int, default=None, help="override the default epochs")
    uci.add_argument(
        "--validation-fraction",
        type=float,
        default=None,
        help="share of each training split held out to pick the epoch (default 0.1; 0 = none)",
    )
    uci.add_argument(
        "--lockstep",
        action="store_true",
        help="train the ensemble's members at once, one vmapped step for all (--method "
        "ensemble or stack): 2-3x faster on these networks, the same mathematics, other last "
        "bits than one after another (the default)",
    )
    _add_uci_run(uci)


def _add_uci_run(uci: Any) -> None:
    """Where the UCI run reads, writes and runs: data, splits, processes, output, resuming."""
    uci.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="splits trained in parallel processes, one torch thread each (default 1: serial)",
    )
    uci.add_argument("--splits", type=int, default=None, help="first K splits (default: all)")
    uci.add_argument("--data-dir", type=Path, default=None, help="folder in the UCI layout")
    uci.add_argument("--seed", type=int, default=0)
    uci.add_argument("--output", type=Path, default=Path("uci-results"))
    uci.add_argument(
        "--resume",
        action="store_true",
        help="continue the run whose journal (uci-splits.jsonl, written as splits finish) is "
        "in --output: only the splits it lacks are trained (same settings required)",
    )


def _add_images(suites: Any) -> None:
    from bnn.apps.images.network import METHODS

    images = suites.add_parser(
        "images", help="image classification: calibration, OOD detection, rotation (LeNet)"
    )
    images.add_argument(
        "--train", required=True, help="the training set: a folder name under --data-dir"
    )
    images.add_argument(
        "--data-dir", type=Path, required=True, help="folder holding the idx image folders"
    )
    images.add_argument(
        "--ood",
        action="append",
        default=None,
        metavar="NAME=DIR",
        help="an out-of-distribution set: any folder with the t10k idx files (repeatable; "
        "default: the other of mnist / fashion-mnist under --data-dir)",
    )
    images.add_argument(
        "--method",
        action="append",
        choices=METHODS,
        default=None,
        help="repeatable; default: every method",
    )
    images.add_argument("--seeds", type=int, default=1, help="seeds (mean ± s.e. over them)")
    images.add_argument("--seed", type=int, default=0, help="the first seed")
    images.add_argument("--epochs", type=int, default=None, help="override the default epochs")
    images.add_argument(
        "--train-images", type=int, default=None, help="train on this many images (default all)"
    )
    images.add_argument(
        "--validation",
        type=int,
        default=None,
        help="training images held out for temperature scaling (default 5000)",
    )
    images.add_argument(
        "--temperature-on-top",
        nargs="?",
        const="samples",
        choices=("samples", "pooled"),
        default=None,
        help="also report every method with a temperature fitted on the first half of the "
        "validation split (rows METHOD+T), on each function sample's logits (samples, the "
        "default) or on the averaged predictive (pooled); every method is then chosen on the "
        "second half",
    )
    images.add_argument(
        "--jobs", type=int, default=1, help="seeds run in parallel processes (default 1)"
    )
    images.add_argument(
        "--device", default=None, help="cpu, cuda or cuda:K (default: cuda when available)"
    )
    images.add_argument("--output", type=Path, default=Path("images-results"))


USAGE_ERROR = 2
"""Exit status for a user error (bad path, data file or number), as argparse uses."""
JOURNAL = "uci-splits.jsonl"
"""Where ``bnn benchmark uci`` saves each split's result as it finishes (``--resume``)."""


class UsageError(ValueError):
    """A command-line argument that cannot work, found before any training."""


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``bnn`` console script.

    A user error (a bad path, data file or number) prints one line ``bnn: error: ...`` to
    stderr and returns 2, before any training where it can be found up front.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        if args.command == "demo":
            _check_output(args.output, ("metrics.json", "toy_predictive.png"))
            return _demo(args.output, seed=args.seed, quick=args.quick)
        if args.command == "benchmark" and args.suite == "uci":
            return _uci(args)
        if args.command == "benchmark" and args.suite == "images":
            from bnn.apps.images.cli import run_from_arguments

            _check_output(args.output, ("images.md", "images.json"))
            return run_from_arguments(args)
    except (ValueError, OSError) as error:  # bad paths, data files, numbers
        message = " ".join(str(error).split()) or type(error).__name__
        print(f"bnn: error: {message}", file=sys.stderr)
        return USAGE_ERROR
    return 0


def _check_output(folder: Path, files: Sequence[str]) -> None:
    """Create ``folder`` and check that ``files`` can be written there, before any work.

    Raises:
        UsageError: ``folder`` is a file, cannot be created or written, or one of ``files``
            is a folder.
    """
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"--output {folder} is a file; give a folder (it is created if needed).")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise UsageError(
            f"cannot write to --output {folder} ({error.strerror or error}); give a folder "
            "you can write to."
        ) from error
    for name in files:
        if (folder / name).is_dir():
            raise UsageError(
                f"--output {folder} holds a folder named {name}, where the results go; "
                "remove it or give another --output."
            )


def _check_counts(args: argparse.Namespace) -> None:
    """The numbers of ``bnn benchmark uci`` that can be checked without the data."""
    if args.splits is not None and args.splits < 1:
        raise UsageError(f"--splits must be at least 1, got {args.splits}.")
    if args.epochs is not None and args.epochs < 1:
        raise UsageError(f"--epochs must be at least 1, got {args.epochs}.")
    fraction = args.validation_fraction
    if fraction is not None and not 0.0 <= fraction < 1.0:
        raise UsageError(f"--validation-fraction must be in [0, 1), got {fraction}.")


def _check_data_dir(dataset: str, data_dir: Path | None) -> None:
    """Name the CLI flag and docs/data.md when the data are not where they should be."""
    from bnn.apps.datasets import BUNDLED

    if data_dir is None:
        if dataset not in BUNDLED:
            raise UsageError(
                f"data set {dataset!r} is not bundled (bundled: {', '.join(sorted(BUNDLED))}); "
                f"pass --data-dir DIR, where DIR/{dataset}/ holds it in the layout of "
                "docs/data.md."
            )
        return
    if not data_dir.is_dir():
        raise UsageError(
            f"--data-dir {data_dir} does not exist or is not a folder; give the folder that "
            f"holds {dataset}/ (layout: docs/data.md)."
        )
    folder = data_dir / dataset if (data_dir / dataset).is_dir() else data_dir
    if not (folder / "data.txt").is_file():
        raise UsageError(
            f"--data-dir {data_dir}: no {dataset}/data.txt there (nor data.txt); give the "
            f"folder that holds {dataset}/ in the layout of docs/data.md."
        )


def _uci_defaults(args: argparse.Namespace) -> Any:
    """The benchmark's `Defaults` with the flags that override them."""
    from dataclasses import replace

    from bnn.apps.uci.command import Defaults

    defaults = Defaults()
    if args.epochs is not None:
        defaults = replace(defaults, epochs=args.epochs)
    if args.validation_fraction is not None:
        defaults = replace(defaults, validation_fraction=args.validation_fraction)
    if args.lockstep:
        if args.method not in ("ensemble", "stack"):
            raise UsageError("--lockstep trains an ensemble's members: --method ensemble or stack.")
        defaults = replace(defaults, ensemble_lockstep=True)
    return defaults


def _uci(args: argparse.Namespace) -> int:
    from bnn.apps.uci.command import run_uci
    from bnn.apps.uci.report import write_report
    from bnn.parallel.executors import local_pool

    _check_counts(args)
    _check_output(args.output, ("uci.md", "uci.json", JOURNAL))
    _check_data_dir(args.dataset, args.data_dir)
    defaults = _uci_defaults(args)
    if args.jobs < 1:
        raise UsageError(f"--jobs must be a positive number of processes, got {args.jobs}.")
    needs_validation = (
        args.method == "stack" or args.recalibrate in ("conformal", "isotonic") or args.tune
    )
    if args.validation_fraction == 0 and needs_validation:
        raise UsageError(
            "--method stack, --recalibrate conformal or isotonic, and --tune need the "
            "validation split; give --validation-fraction above 0."
        )
    tuning = None
    if args.tune:
        from bnn.apps.uci.tune import Tuning, check_tunable

        check_tunable(args.method)
        for flag, value in (("--tune-trials", args.tune_trials), ("--tune-seeds", args.tune_seeds)):
            if value < 1:
                raise UsageError(f"{flag} must be at least 1, got {value}.")
        tuning = Tuning(args.tune_trials, args.tune_seeds)
    options = {
        "splits": args.splits,
        "data_dir": args.data_dir,
        "seed": args.seed,
        "recalibrate": args.recalibrate,
        "tuning": tuning,
        "journal": args.output / JOURNAL,
        "resume": args.resume,
    }
    if args.resume and not (args.output / JOURNAL).exists():
        print(f"bnn: no {JOURNAL} in {args.output} to resume; starting a new run", file=sys.stderr)
    if args.jobs == 1:  # one torch thread per split here too: the same numbers as --jobs N
        results = run_uci(
            args.dataset, args.method, defaults=defaults, threads_per_job=1, **options
        )
    else:
        with local_pool(args.jobs) as pool:
            results = run_uci(
                args.dataset, args.method, defaults=defaults, executor=pool, **options
            )
    print(write_report(results, args.output))
    print(f"wrote {args.output / 'uci.md'} and {args.output / 'uci.json'}")
    return 0


def _demo(output: Path, *, seed: int, quick: bool) -> int:
    from bnn.apps.demo import format_table, reading_notes, run_demo

    torch.set_num_threads(max(1, torch.get_num_threads()))
    print(f"bnn demo: seed {seed}, writing to {output.resolve()}")
    results = run_demo(output, seed=seed, quick=quick)
    print(format_table(results))
    for note in reading_notes(results):
        print(f"- {note}")
    written = [output / name for name in ("metrics.json", "toy_predictive.png")]
    print("wrote " + " and ".join(str(path) for path in written if path.exists()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
