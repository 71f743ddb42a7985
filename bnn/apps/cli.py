"""The ``bnn`` command line."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch

__all__ = ["main"]


def _version() -> str:
    try:
        return version("bnn-torch")
    except PackageNotFoundError:  # running from a source tree that is not installed
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bnn", description="Bayesian deep learning for PyTorch.")
    parser.add_argument("--version", action="version", version=f"bnn {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo = commands.add_parser(
        "demo", help="MC dropout and Bayes by backprop on a toy problem and UCI yacht"
    )
    demo.add_argument("--seed", type=int, default=0, help="seed of the whole run (default 0)")
    demo.add_argument(
        "--output", type=Path, default=Path("bnn-demo-output"), help="folder for PNG and JSON"
    )
    demo.add_argument("--quick", action="store_true", help="few epochs (a smoke test)")
    benchmark = commands.add_parser("benchmark", help="standard benchmarks")
    suites = benchmark.add_subparsers(dest="suite", metavar="SUITE", required=True)
    uci = suites.add_parser("uci", help="UCI regression benchmark (20 standard splits)")
    uci.add_argument(
        "--dataset",
        required=True,
        help="yacht ships with bnn; others (boston, concrete, energy, kin8nm, ...) need "
        "--data-dir (see docs/data.md)",
    )
    uci.add_argument("--method", required=True, choices=["mc_dropout", "ensemble", "vi", "sghmc"])
    uci.add_argument("--splits", type=int, default=None, help="first K splits (default: all)")
    uci.add_argument("--data-dir", type=Path, default=None, help="folder in the UCI layout")
    uci.add_argument("--epochs", type=int, default=None, help="override the default epochs")
    uci.add_argument(
        "--validation-fraction",
        type=float,
        default=None,
        help="share of each training split held out to pick the epoch (default 0.1; 0 = none)",
    )
    uci.add_argument("--seed", type=int, default=0)
    uci.add_argument("--output", type=Path, default=Path("uci-results"))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``bnn`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    if args.command == "demo":
        return _demo(args.output, seed=args.seed, quick=args.quick)
    if args.command == "benchmark" and args.suite == "uci":
        return _uci(args)
    return 0


def _uci(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from bnn.apps.uci import Defaults, run_uci, write_report

    defaults = Defaults()
    if args.epochs is not None:
        defaults = replace(defaults, epochs=args.epochs)
    if args.validation_fraction is not None:
        defaults = replace(defaults, validation_fraction=args.validation_fraction)
    results = run_uci(
        args.dataset,
        args.method,
        splits=args.splits,
        data_dir=args.data_dir,
        seed=args.seed,
        defaults=defaults,
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
