"""`archscale plan`: GPU-hours, disk and job counts of a study before anything is submitted
(archscale.costs; the same table as the workflow's results/plan.csv).

    archscale plan --configfile configs/paper-1b.yaml --gpu H200 --out plan.csv

It sees the study `snakemake --configfile FILE --config KEY=VALUE ...` runs: FILE alone, not
merged onto config.yaml, with the same overrides on top.
"""
from __future__ import annotations

import argparse
from typing import Any

from archscale.costs import ASSUMED_MFU, TRAINING_GPU


def _study(args: argparse.Namespace) -> Any:
    """The study Snakemake would run with the same --configfile and --config: the file alone
    (it replaces config.yaml), then the overrides, parsed as Snakemake parses them."""
    from archscale.config import load_study, merge_config, read_config_file

    if not args.config:
        return load_study(args.configfile)
    from snakemake.cli import parse_config

    try:
        overrides = parse_config(args.config)
    except ValueError as exc:
        raise ValueError(f"--config: {exc}") from None
    return load_study(merge_config(read_config_file(args.configfile), overrides),
                      source=f"{args.configfile} with --config overrides")


def _plan(args: argparse.Namespace) -> int:
    from archscale.costs import loop_round_cost, study_plan
    from archscale.io import write_csv

    study = _study(args)
    table = study_plan(study, mfu=args.mfu, gpu=args.gpu)
    if args.out:
        write_csv(args.out, table)
        total = table[table.architecture == "TOTAL"].iloc[0]
        print(f"wrote {args.out}: {len(table) - 1} architectures, {int(total.runs)} runs, "
              f"{total.gpu_hours:,.0f} {args.gpu} GPU-hours at MFU {args.mfu}")
    else:
        print(table.to_csv(index=False), end="")
    if study.config["loop"]["enabled"]:
        cost = loop_round_cost(table, study.config["loop"])
        print(f"closed loop: up to {cost['rounds']} round(s) of up to {cost['runs_per_round']} "
              f"runs, at most {cost['budget_hours']:,.4g} device-hours in all; one round "
              f"about {cost['typical_round_hours']:,.4g} {args.gpu} GPU-hours at the study's "
              f"median run, {cost['most_round_hours']:,.4g} at its costliest; a run one size "
              f"above the largest about {cost['new_size_run_hours']:,.4g}; the budget caps "
              "every round")
    return 0


def register(subparsers: Any) -> None:
    """Add `plan` to the main CLI's sub-command parsers."""
    plan = subparsers.add_parser("plan", help="estimate GPU-hours, disk and jobs before submitting")
    plan.add_argument("--configfile", default="config.yaml",
                      help="the study (replaces config.yaml, as with snakemake --configfile)")
    plan.add_argument("--config", nargs="+", metavar="KEY=VALUE",
                      help="overrides on top, as snakemake --config reads them")
    plan.add_argument("--mfu", type=float, default=ASSUMED_MFU,
                      help="assumed model FLOPs utilisation")
    plan.add_argument("--gpu", default=TRAINING_GPU, help="device preset for the time estimate")
    plan.add_argument("--out", help="also write the table to this CSV")
    plan.set_defaults(func=_plan)
