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
import json
import sys
from typing import Any, Sequence

from archscale import __version__
from archscale.architecture import Architecture, ArchitectureError

# Sub-command groups that live beside their stage; each module exposes register(subparsers).
STAGE_CLIS = ("archscale.cli.fit", "archscale.cli.throughput", "archscale.cli.search")


def _describe(args: argparse.Namespace) -> int:
    if args.config:
        arch = Architecture.from_hf_config(args.config)
    else:
        missing = [f for f in ("d_model", "n_layers", "n_heads", "head_dim", "ffn_dim",
                               "vocab_size") if getattr(args, f) is None]
        if missing:
            raise SystemExit("archscale arch describe: give --config PATH or all of "
                             + ", ".join("--" + m.replace("_", "-") for m in missing))
        arch = Architecture(name=args.name, d_model=args.d_model, n_layers=args.n_layers,
                            n_heads=args.n_heads, n_kv_heads=args.n_kv_heads or args.n_heads,
                            head_dim=args.head_dim, ffn_dim=args.ffn_dim,
                            vocab_size=args.vocab_size, tie_word_embeddings=args.tied)
    print(json.dumps(arch.accounting(), indent=2))
    return 0


def _plan(args: argparse.Namespace) -> int:
    from archscale.costs import plan_study
    from archscale.config import load_study
    table = plan_study(load_study(args.configfile), mfu=args.mfu, gpu=args.gpu)
    if args.out:
        from archscale.io import write_csv
        write_csv(args.out, table)
    print(table.to_csv(index=False), end="")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="archscale", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"archscale {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    arch = sub.add_parser("arch", help="architecture accounting")
    arch_sub = arch.add_subparsers(dest="arch_command", required=True)
    desc = arch_sub.add_parser("describe", help="print N, r_mlp/attn, d/sqrt(N), KV bytes, ...")
    desc.add_argument("--config", help="an HF config.json (or its directory)")
    desc.add_argument("--name", default="custom")
    for flag in ("d_model", "n_layers", "n_heads", "n_kv_heads", "head_dim", "ffn_dim",
                 "vocab_size"):
        desc.add_argument("--" + flag.replace("_", "-"), dest=flag, type=int)
    desc.add_argument("--tied", action="store_true", help="tied input/output embeddings")
    desc.set_defaults(func=_describe)

    plan = sub.add_parser("plan", help="estimate GPU-hours, disk and jobs before submitting")
    plan.add_argument("--configfile", default="config.yaml")
    plan.add_argument("--mfu", type=float, default=0.35, help="assumed model FLOPs utilisation")
    plan.add_argument("--gpu", default="H100", help="device preset for the time estimate")
    plan.add_argument("--out", help="also write the table to this CSV")
    plan.set_defaults(func=_plan)

    for module_name in STAGE_CLIS:
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
