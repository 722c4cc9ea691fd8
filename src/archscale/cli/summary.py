"""`archscale summary`: a finished study's answer, as the end of a run prints it.

    archscale summary [--results results]

Why a command: Snakemake prints the summary from its `onsuccess` handler, which does not run
on "Nothing to be done", on `-n` or with `--no-hooks`. This prints the same lines from the
files of any finished study: per size, the baseline, the fastest shape at its predicted loss,
the predicted loss change and the speed-up with the throughput model's error; the verdicts;
and which files are missing or older than the runs, with the command that rebuilds them.
"""
from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("summary", help="a finished study's answer, as the end of a run prints it",
                       description=__doc__.splitlines()[0])
    p.add_argument("--results", default="results", type=Path,
                   help="the study's results directory (default %(default)s)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from archscale.workflow.run_summary import summary_lines
    from archscale.workflow.study_answer import read_answer

    lines = summary_lines(args.results)
    if not lines:  # no search here: say what is missing instead of printing nothing
        lines = [f"{args.results}: {notice}" for notice in read_answer(args.results).notices]
    print("\n".join(line for line in lines if line))
    return 0
