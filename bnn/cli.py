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
    return 0


def _demo(output: Path, *, seed: int, quick: bool) -> int:
    from bnn.demo import format_table, run_demo

    torch.set_num_threads(max(1, torch.get_num_threads()))
    print(f"bnn demo: seed {seed}, writing to {output.resolve()}")
    results = run_demo(output, seed=seed, quick=quick)
    print(format_table(results))
    print(f"wrote {output / 'metrics.json'} and {output / 'toy_predictive.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
