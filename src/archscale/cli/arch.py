"""`archscale arch describe`: N, r_mlp/attn, d/sqrt(N), GQA group and KV bytes of one shape.

    archscale arch describe --config path/to/config.json
    archscale arch describe --d-model 2048 --n-layers 16 --n-heads 32 --n-kv-heads 8 \
        --head-dim 64 --ffn-dim 8192 --vocab-size 128256 --tied
"""
from __future__ import annotations

import argparse
import json
from typing import Any

from archscale.cli.args import positive_int

SHAPE_FLAGS = ("d_model", "n_layers", "n_heads", "n_kv_heads", "head_dim", "ffn_dim",
               "vocab_size")


def _describe(args: argparse.Namespace) -> int:
    from archscale.architecture import Architecture

    if args.config:
        arch = Architecture.from_hf_config(args.config)
    else:
        missing = [f for f in SHAPE_FLAGS if f != "n_kv_heads" and getattr(args, f) is None]
        if missing:
            raise SystemExit("archscale arch describe: give --config PATH or all of "
                             + ", ".join("--" + m.replace("_", "-") for m in missing))
        arch = Architecture(name=args.name, d_model=args.d_model, n_layers=args.n_layers,
                            n_heads=args.n_heads, n_kv_heads=args.n_kv_heads or args.n_heads,
                            head_dim=args.head_dim, ffn_dim=args.ffn_dim,
                            vocab_size=args.vocab_size, tie_word_embeddings=args.tied)
    print(json.dumps(arch.accounting(), indent=2))
    return 0


def register(subparsers: Any) -> None:
    """Add `arch describe` to the main CLI's sub-command parsers."""
    arch = subparsers.add_parser("arch", help="architecture accounting")
    arch_sub = arch.add_subparsers(dest="arch_command", required=True)
    desc = arch_sub.add_parser("describe", help="print N, r_mlp/attn, d/sqrt(N), KV bytes, ...")
    desc.add_argument("--config", help="an HF config.json (or its directory)")
    desc.add_argument("--name", default="custom")
    for flag in SHAPE_FLAGS:
        desc.add_argument("--" + flag.replace("_", "-"), dest=flag, type=positive_int)
    desc.add_argument("--tied", action="store_true", help="tied input/output embeddings")
    desc.set_defaults(func=_describe)
