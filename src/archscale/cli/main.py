"""The `archscale` command line: the library's stages for users outside Snakemake.

    archscale arch describe --config path/to/config.json      (or shape flags)
    archscale plan [--configfile config.yaml]
    archscale fit chinchilla|conditional --runs runs.csv --out fit.json
    archscale throughput predict ...
    archscale search --coefficients fit.json --gpu H200 ...
    archscale verdicts [--results results]
    archscale summary [--results results]
    archscale progress [--dir .]
Every command prints JSON (or CSV for tables) on stdout; with --out (or --out-dir) the result
goes to the file and stdout gets one line saying what was written.

Start-up: only the command being run is imported. `archscale --help`, `--version` and a
command's `--help` build their parsers from this module's table and the command's own module,
so they never load numpy, pandas, scipy, torch or matplotlib (tests/test_cli.py checks it).
"""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

from archscale import __version__

# The command groups: name -> (module exposing register(subparsers), one-line help).
COMMANDS: dict[str, tuple[str, str]] = {
    "arch": ("archscale.cli.arch", "architecture accounting"),
    "plan": ("archscale.cli.plan", "estimate GPU-hours, disk and jobs before submitting"),
    "fit": ("archscale.cli.fit", "fit scaling laws to a runs table"),
    "throughput": ("archscale.cli.throughput", "throughput model and measurements"),
    "search": ("archscale.cli.search", "Eq. 4 frontier search on fitted or paper coefficients"),
    "verdicts": ("archscale.cli.verdicts", "one verdict per finding of a finished study"),
    "summary": ("archscale.cli.summary", "a finished study's answer, as the end of a run prints it"),
    "progress": ("archscale.cli.progress", "a running study's jobs, each run's step and the time left"),
}
COMMAND_MODULES = tuple(module for module, _ in COMMANDS.values())


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser; only `command`'s module is imported (all of them when it is None)."""
    parser = argparse.ArgumentParser(prog="archscale", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"archscale {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (module_name, help_text) in COMMANDS.items():
        if command is None or name == command:
            importlib.import_module(module_name).register(sub)
        else:  # listed in --help without importing its module
            sub.add_parser(name, help=help_text)
    return parser


def _command_in(argv: Sequence[str]) -> str:
    """The command group named on the command line ('' when none is): the first word that
    names one, as argparse would read it (no global option takes a value)."""
    return next((word for word in argv if word in COMMANDS), "")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser(_command_in(argv)).parse_args(argv)
    from archscale.architecture import ArchitectureError
    from archscale.io import OutputWriteError

    try:
        return int(args.func(args) or 0)
    except (ArchitectureError, ValueError, FileNotFoundError, OutputWriteError) as exc:
        print(f"archscale: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
