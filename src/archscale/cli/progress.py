"""`archscale progress`: a running study's jobs, each running job's step and ETA, the time left.

    archscale progress [--dir .]

Run it from another terminal while `snakemake` runs in DIR. It reads that run's log
(.snakemake/log/), its lock and each running job's own log; see archscale.workflow.progress
for how the time left is estimated.
"""
from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("progress", help="a running study's jobs, each run's step and the time left",
                       description=__doc__.splitlines()[0])
    p.add_argument("--dir", default=".", type=Path,
                   help="the study's working directory (default: the current one)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from archscale.workflow.progress import progress_lines

    print("\n".join(progress_lines(args.dir)))
    return 0
