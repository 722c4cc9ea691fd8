"""`archscale verdicts`: one verdict per finding of a finished study, printed.

    archscale verdicts [--results results] [--json] [--out verdicts.json]

Reads RESULTS/fits/verdicts.json when the workflow wrote it. For a study finished before the
verdicts existed (no verdicts.json), it computes them from the files such a study has:
RESULTS/runs.csv, RESULTS/fits/conditional.json (whose provenance holds the fit settings),
RESULTS/recommendations.json and RESULTS/throughput.csv when present; that comparison of forms
takes seconds to a minute, and without an optimum check x* and r* stay "not identified".
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("verdicts", help="one verdict per finding of a finished study",
                       description=__doc__.splitlines()[0])
    p.add_argument("--results", default="results", type=Path,
                   help="the study's results directory (default %(default)s)")
    p.add_argument("--json", action="store_true", help="print the whole document as JSON")
    p.add_argument("--out", type=Path, help="also write the document here")
    p.set_defaults(func=run)


def _compute(results: Path) -> dict:
    """The verdicts of a study without verdicts.json, from its runs and fits."""
    from archscale.fit.stages import forms_stage, verdicts_stage
    from archscale.io import read_json

    runs, conditional = results / "runs.csv", results / "fits" / "conditional.json"
    for path in (runs, conditional):
        if not path.exists():
            raise FileNotFoundError(f"{path} does not exist: {results} is not a finished study "
                                    "(run `snakemake --cores 2 results/fits/verdicts.json`)")
    fit = (read_json(conditional).get("provenance", {}).get("settings", {}) or {}).get("fit")
    forms = results / "fits" / "forms.json"
    with tempfile.TemporaryDirectory() as tmp:
        if not forms.exists():
            forms = Path(tmp) / "forms.json"
            forms_stage(runs, forms, fit)
        check = results / "optimum_check" / "runs.csv"
        recs, tput = results / "recommendations.json", results / "throughput.csv"
        return verdicts_stage(forms, None,
                              check_runs=check if check.exists() else None,
                              recommendations=recs if recs.exists() else None,
                              throughput=tput if tput.exists() else None)


def run(args: argparse.Namespace) -> int:
    from archscale.fit.verdicts import summary_lines
    from archscale.io import json_text, read_json, write_json

    path = args.results / "fits" / "verdicts.json"
    doc = read_json(path) if path.exists() else _compute(args.results)
    if args.out:
        write_json(args.out, doc)
    print(json_text(doc) if args.json else "\n".join(summary_lines(doc)))
    if not path.exists() and not args.json:
        print(f"(computed from {args.results}; the workflow writes {path})")
    return 0
