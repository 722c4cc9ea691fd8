"""`archscale search`: the frontier search outside Snakemake, on fitted or published coefficients.

    archscale search --coefficients results/fits/conditional.json --gpu H200 --engine sglang \
        --budget 973e6 --n-layers 16 --head-dim 64 --tokens 20e9 --out-dir search-h200/
    archscale search --coefficients paper --configfile configs/paper-1b.yaml --out-dir out/

`--coefficients paper` uses the paper's published multiplicative fit with Epoch AI's Chinchilla
refit as L_opt. Search settings (grid, GQA groups, baseline) come from --configfile's `search`
section when given, otherwise from the schema defaults; flags override them. The candidates' r
range is the law's: the r span it was fitted on (the paper's fitting range for 'paper').
The files are the workflow's search rule's own (archscale.search.outputs).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from archscale.architecture import Architecture
from archscale.cli.args import (calibration_file, csv_file, load_json_object, output_dir,
                                positive_float, positive_int)
from archscale.config import load_study, search_engine
from archscale.schema import section_defaults
from archscale.throughput.engines.registry import names as engine_names

#: The device preset without --gpu and without --configfile (no throughput section to read):
#: the paper's, as the engine defaults to the paper's vLLM then. A config's throughput.gpu wins.
GPU_WITHOUT_CONFIG = "H100"


def _coefficients(text: str) -> str:
    """--coefficients: 'paper' or a path; a directory is refused here, as reading it would
    fail with IsADirectoryError (a missing file is left to load_conditional, whose message
    says how to make one)."""
    if text != "paper" and Path(text).is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a directory; give the conditional.json "
                                         "written by `archscale fit conditional`, or 'paper'")
    return text


def _law(text: str) -> Any:
    """The law --coefficients names: 'paper', or a conditional.json whose numbers are checked
    first, so a NaN anywhere in it, or a null where its L_opt needs a number, is named with its
    key (either one made every prediction NaN: an empty frontier, exit 0, or a TypeError)."""
    from archscale.fit.chinchilla import COEF_NAMES
    from archscale.fit.conditional import load_conditional, paper_law

    if text == "paper":
        return paper_law()
    if Path(text).is_file():
        fix = "the conditional.json written by `archscale fit conditional`, or 'paper'"
        try:
            doc = load_json_object(text, fix)
        except argparse.ArgumentTypeError as exc:
            raise ValueError(str(exc)) from None
        reference = (doc.get("l_opt") or {}).get("chinchilla") or {}
        missing = [k for k in COEF_NAMES if k in reference and (
            isinstance(reference[k], bool) or not isinstance(reference[k], (int, float)))]
        if missing:
            raise ValueError(f"{text}: l_opt.chinchilla.{missing[0]} is "
                             f"{json.dumps(reference[missing[0]])}, not a number; refit the law "
                             "(`archscale fit conditional`) or restore the file")
    return load_conditional(text)  # a missing file: its message says how to make one


def _settings(args: argparse.Namespace) -> Any:
    """The search described by --configfile (or the schema's defaults) and the flags."""
    from archscale.search.study import SearchSettings
    from archscale.throughput.model import load_calibration

    settings, throughput, archs = section_defaults("search"), {}, []
    tokens = args.tokens
    if args.configfile:
        study = load_study(args.configfile)
        settings = dict(study.config["search"])
        throughput = dict(study.config["throughput"])
        archs = list(study.architectures.values())
        tokens = tokens or settings["tokens"] or max(
            max(study.token_budgets(a)) for a in study.architectures)
    if args.budget:
        settings["budgets"] = args.budget
    for key in ("gqa_groups", "d_model_step", "n_params_tolerance"):
        if getattr(args, key) is not None:
            settings[key] = getattr(args, key)
    if not tokens:
        raise ValueError("give --tokens (the training tokens D the loss is predicted at) or a "
                         "--configfile with token_budgets")
    if not archs:
        if not (args.budget and args.n_layers and args.head_dim):
            raise ValueError("without --configfile give --budget, --n-layers and --head-dim "
                             "(the depth and head size of the searched size)")
        archs = [Architecture("reference", d_model=max(64, int(0.066 * b ** 0.5)),
                              n_layers=args.n_layers, n_heads=1, n_kv_heads=1,
                              head_dim=args.head_dim, ffn_dim=64, vocab_size=args.vocab_size,
                              tie_word_embeddings=True) for b in args.budget]
    elif args.n_layers or args.head_dim:
        archs = [Architecture(**{**a.to_dict(), "n_layers": args.n_layers or a.n_layers,
                                 "head_dim": args.head_dim or a.head_dim}) for a in archs]
    law = _law(args.coefficients)
    workload = {k: v for k, v in (("batch_size", args.batch), ("input_len", args.input_len),
                                  ("output_len", args.output_len)) if v is not None}
    return SearchSettings(
        search=settings, throughput={**throughput, **workload}, architectures=archs,
        tokens=float(tokens), law=law,
        calibration=load_calibration(args.calibration),
        throughput_error=(json.loads(Path(args.calibration).read_text()).get("leave_one_out")
                          if args.calibration else None),
        # without --configfile there is no throughput section: vLLM, as the paper measured
        engine=args.engine or search_engine(settings, throughput or {"engines": ["vllm"]}),
        gpu=args.gpu or throughput.get("gpu") or GPU_WITHOUT_CONFIG)


def _run(args: argparse.Namespace) -> int:
    from archscale.io import json_text, read_table
    from archscale.provenance import now
    from archscale.search.outputs import recommendations_document, write_search_outputs
    from archscale.search.study import run_study_search

    started = now()
    quality = (read_table(args.quality, "fit quality table",
                          "give the quality.csv written by `archscale fit quality`")
               if args.quality else None)  # read first: a bad file stops before the search
    settings = _settings(args)
    result, inputs = run_study_search(settings)
    record = {"command": "archscale search", "arguments": {k: v for k, v in vars(args).items()
                                                           if k != "func"}}
    files = [f for f in (args.coefficients, args.configfile, args.calibration, args.quality)
             if f and f != "paper"]
    if args.out_dir:
        out = Path(args.out_dir)
        write_search_outputs(result, inputs.law, {name: out / f"{name}.{ext}" for name, ext in
                                                  (("candidates", "csv"), ("pareto", "csv"),
                                                   ("recommendations", "json"))},
                             quality=quality, settings=record, inputs=files, started=started)
        speedups = ", ".join(f"{r['budget']:.3g}: {r['speedup_vs_baseline']:.2f}x"
                             for r in result["recommendations"] if "speedup_vs_baseline" in r)
        print(f"wrote {out}/: candidates.csv ({len(result['candidates']):,} shapes), pareto.csv "
              f"({len(result['pareto'])} frontier points), recommendations.json; speed-up at the "
              f"baseline's loss by budget: {speedups or 'none found'}")
    else:
        doc = recommendations_document(result, inputs.law, quality, record, files, started)
        print(json_text(doc))  # the text write_json writes
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("search", help="Eq. 4 frontier search on fitted or paper coefficients",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--coefficients", required=True, type=_coefficients,
                   help="a conditional.json from the fit stage, or 'paper'")
    p.add_argument("--configfile", help="a study config for sizes, search and throughput settings")
    p.add_argument("--gpu", help="device preset (A100-40GB, A100-80GB, H100, H200, cpu); default: "
                                 f"the config's throughput.gpu, else {GPU_WITHOUT_CONFIG}")
    p.add_argument("--engine", choices=engine_names())
    p.add_argument("--calibration", type=calibration_file,
                   help="results/throughput/calibration.json (default: uncalibrated)")
    p.add_argument("--budget", type=positive_float, action="append",
                   help="non-embedding parameter budget (repeatable)")
    p.add_argument("--n-layers", type=positive_int)
    p.add_argument("--head-dim", type=positive_int)
    p.add_argument("--vocab-size", type=positive_int, default=128256)
    p.add_argument("--tokens", type=positive_float,
                   help="training tokens D the loss is predicted at")
    p.add_argument("--batch", type=positive_int)
    p.add_argument("--input-len", type=positive_int)
    p.add_argument("--output-len", type=positive_int)
    p.add_argument("--gqa-groups", type=positive_int, nargs="+")
    p.add_argument("--d-model-step", type=positive_int)
    p.add_argument("--n-params-tolerance", type=positive_float)
    p.add_argument("--quality", type=csv_file,
                   help="results/fits/quality.csv, the law's held-out extrapolation, copied into "
                        "recommendations.json (default: none, and the document says so)")
    p.add_argument("--out-dir", type=output_dir,
                   help="write candidates.csv, pareto.csv, recommendations.json here")
    p.set_defaults(func=_run)
