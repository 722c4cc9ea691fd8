"""`archscale throughput predict`: the calibrated roofline's tokens/s for given architectures.

    archscale throughput predict --gpu H200 --engine sglang --batch 128 --input-len 4096 \
        --output-len 1024 --config results/architectures/a1/config.json
    archscale throughput predict --d-model 2048 --n-layers 16 --n-heads 32 --n-kv-heads 8 \
        --head-dim 64 --ffn-dim 8192 --vocab-size 128256 --tie-word-embeddings --gpu H100

The lead's main CLI calls `register(subparsers)`; `python -m archscale.cli.throughput` works too.
"""
from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from archscale.architecture import SHAPE_FIELDS, Architecture
from archscale.cli.args import calibration_file, fraction, positive_int
from archscale.devices import get_device, known_devices
from archscale.throughput.engines.registry import names as engine_names
from archscale.throughput.model import Workload, load_calibration, predict_architecture


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add `throughput predict` to an argparse subparsers object."""
    throughput = subparsers.add_parser(
        "throughput", help="throughput model and measurements",
        description="Throughput of architectures: the calibrated roofline model.")
    commands = throughput.add_subparsers(dest="throughput_command", required=True)
    p = commands.add_parser("predict", help="predicted tokens/s as JSON",
                            description="Predict generation throughput (tokens/s) of "
                                        "architectures on a device preset, as JSON.")
    p.add_argument("--config", action="append", default=[], metavar="PATH",
                   help="an HF config.json (or its directory); repeat for several")
    for name in SHAPE_FIELDS:
        p.add_argument("--" + name.replace("_", "-"), type=positive_int, dest=name)
    p.add_argument("--vocab-size", type=positive_int, default=None)
    p.add_argument("--tie-word-embeddings", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--name", default="shape", help="name of the architecture given by flags")
    p.add_argument("--gpu", default="H200", help=f"device preset: {sorted(known_devices())}")
    p.add_argument("--engine", default="vllm", choices=sorted(engine_names()))
    p.add_argument("--batch", type=positive_int, default=128)
    p.add_argument("--input-len", type=positive_int, default=4096)
    p.add_argument("--output-len", type=positive_int, default=1024)
    p.add_argument("--dtype", default="bfloat16",
                   choices=("bfloat16", "float16", "float32", "fp8"))
    p.add_argument("--max-num-seqs", type=positive_int, default=None)
    p.add_argument("--max-num-batched-tokens", type=positive_int, default=None)
    p.add_argument("--memory-fraction", type=fraction, default=0.9)
    p.add_argument("--calibration", type=calibration_file, default=None,
                   help="calibration JSON (results/throughput/calibration.json); without it "
                        "the documented default factors are used (uncalibrated)")
    p.set_defaults(func=predict_command)
    return p


def _architectures(args: argparse.Namespace) -> list[Architecture]:
    archs = [Architecture.from_hf_config(path) for path in args.config]
    given = {k: getattr(args, k) for k in SHAPE_FIELDS if getattr(args, k) is not None}
    if given or not archs:
        missing = [k for k in SHAPE_FIELDS if k not in given]
        if missing or args.vocab_size is None:
            missing += ["vocab_size"] if args.vocab_size is None else []
            raise SystemExit("throughput predict: give --config PATH or every shape flag; "
                             f"missing: {', '.join('--' + m.replace('_', '-') for m in missing)}")
        archs.append(Architecture(name=args.name, **given, vocab_size=args.vocab_size,
                                  tie_word_embeddings=args.tie_word_embeddings))
    return archs


def predict_json(args: argparse.Namespace) -> dict[str, Any]:
    device = get_device(args.gpu)
    workload = Workload(batch=args.batch, input_len=args.input_len, output_len=args.output_len,
                        dtype=args.dtype, engine=args.engine, max_num_seqs=args.max_num_seqs,
                        max_num_batched_tokens=args.max_num_batched_tokens,
                        memory_fraction=args.memory_fraction)
    factors, calibrated = load_calibration(args.calibration).lookup(args.engine, device.name)
    rows = []
    for arch in _architectures(args):
        p = predict_architecture(arch, device, workload, factors)
        rows.append({"name": arch.name, **arch.shape(), "vocab_size": arch.vocab_size,
                     "tie_word_embeddings": arch.tie_word_embeddings,
                     "output_tokens_per_s": float(p.output_tokens_per_s),
                     "total_tokens_per_s": float(p.total_tokens_per_s),
                     "time_s": float(p.time_s) if bool(p.feasible) else None,
                     "prefill_s": float(p.prefill_s), "decode_s": float(p.decode_s),
                     "concurrency": int(p.concurrency), "feasible": bool(p.feasible)})
    return {"device": device.name, "engine": args.engine, "workload": workload.to_dict(),
            "calibrated": calibrated, "status": "calibrated" if calibrated else "uncalibrated",
            "factors": factors.to_dict(), "architectures": rows}


def predict_command(args: argparse.Namespace) -> int:
    json.dump(predict_json(args), sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="archscale")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
