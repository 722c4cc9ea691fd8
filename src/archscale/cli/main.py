"""The `archscale` command line: the library's stages for users outside Snakemake.

    archscale arch describe --config path/to/config.json      (or shape flags)
    archscale plan [--configfile config.yaml]
    archscale fit chinchilla|conditional --runs runs.csv --out fit.json
    archscale throughput predict ...
    archscale search --coefficients fit.json --gpu H200 ...
Every command prints JSON (or CSV for tables) on stdout.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

from archscale import __version__
from archscale.architecture import ArchitectureError

# One module per command group, each exposing register(subparsers).
COMMAND_MODULES = ("archscale.cli.arch", "archscale.cli.plan", "archscale.cli.fit",
                   "archscale.cli.throughput", "archscale.cli.search")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="archscale", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"archscale {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ArchitectureError, ValueError, FileNotFoundError) as exc:
        print(f"archscale: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
