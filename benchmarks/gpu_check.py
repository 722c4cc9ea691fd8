"""One prepared GPU check (issue 16): five time-boxed parts, one JSON, one markdown summary.

    bash benchmarks/gpu_check.sh [--out DIR] [--md FILE] [--parts a,b] [--dry]

For a lent H200 (torch, transformers and the usual scientific Python; no snakemake, vLLM,
SGLang, lm-eval, pulp or jsonschema; no downloads), in 5 minutes or less:
1. train_mfu: the trainer's MFU on a 124M LLaMA (bf16, compiled) against a bare PyTorch loop;
2. fsdp_memory: the peak memory of a paper-3b training step under fsdp on one GPU against the
   plan's per-GPU figure;
3. parallel_loss: the trainer's ddp and fsdp modes on one GPU (one-rank nccl group) give the
   same losses;
4. throughput: the torch engine on LLaMA-3.2-1B, Panda-1B and Surefire-1B at the paper's
   workload (128 x 4096 -> 1024, dummy weights) and at one more batch size;
5. calibration: the roofline's torch factors fitted to those runs, with the leave-one-out error.

Each part runs in a forked process with a deadline (gpu_check_parts.runner): its share of the
total plus whatever the parts before it left unused. A part that runs out is killed and keeps
what it recorded. The JSON and the markdown are rewritten after every part. The first thing
this script does is install the import blocker (gpu_check_parts.blocker), so the packages the
H200 lacks are unimportable here too. `--dry` runs every part on the CPU with tiny shapes in
seconds, and the JSON says it was dry.

On the lent machine, results written under $OUT come back (gpu_check.sh uses it when --out is
not given); commit the summary as docs/gpu-results.md. `--parts throughput,calibration` reruns
some parts with the whole time box.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "src")]

from gpu_check_parts import blocker  # noqa: E402  (first: nothing may be imported before it)

blocker.install()

import argparse  # noqa: E402
import datetime  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

REPO = HERE.parent
DEFAULT_OUT = REPO / "results" / "gpu_check"
TOTAL_S = 285.0          # gpu_check.sh kills at 300 s; the rest is start-up and writing
DRY_TOTAL_S = 150.0
DRY_PART_S = 30.0
MIN_PART_S = 5.0         # a part with less than this left is skipped, not started
# Packages the parts use, imported once here so each forked part starts with them loaded.
WARM_IMPORTS = ("numpy", "torch", "transformers", "transformers.models.llama.modeling_llama",
                "tokenizers", "safetensors", "yaml", "scipy", "scipy.optimize", "pandas",
                "archscale.training.loop", "archscale.training.parallel", "archscale.costs",
                "archscale.throughput.engines.torch", "archscale.throughput.calibrate")


class TotalTimeout(Exception):
    """SIGTERM: gpu_check.sh's total time limit (or someone) stopped the check."""


def parts() -> list:
    """The five parts in order, with their budgets on an H200 (seconds, of the 285 s in all;
    run_parts scales them to the time there is)."""
    from gpu_check_parts import (calibration, fsdp_memory, parallel_loss, throughput,
                                 train_mfu)
    from gpu_check_parts.runner import Part

    return [
        Part("train_mfu", "1. Trainer MFU: 124M LLaMA, bf16, compiled, vs a bare loop", 85,
             train_mfu.run),
        Part("fsdp_memory", "2. A paper-3b step under fsdp on one GPU: peak memory vs the plan",
             50, fsdp_memory.run),
        Part("parallel_loss", "3. ddp and fsdp on one GPU: the same loss", 25,
             parallel_loss.run),
        Part("throughput", "4. Torch engine throughput of the paper's 1B shapes", 115,
             throughput.run),
        Part("calibration", "5. The roofline's torch factors, with the leave-one-out error", 10,
             calibration.run),
    ]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    names = [p.name for p in parts()]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dry", action="store_true",
                        help="CPU, tiny shapes, seconds: proves the script runs here")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help="output folder: gpu_check.json, gpu-results.md, the throughput "
                             "records, throughput.csv and calibration.json (default "
                             "results/gpu_check); a path ending in .json names the JSON")
    parser.add_argument("--md", type=Path, help="the markdown summary (default "
                        "<out>/gpu-results.md; commit it as docs/gpu-results.md)")
    parser.add_argument("--parts", default=",".join(names),
                        help=f"comma-separated subset of {','.join(names)}")
    parser.add_argument("--total-s", type=float, help=f"time for all parts (default {TOTAL_S:.0f}"
                        f", dry {DRY_TOTAL_S:.0f})")
    parser.add_argument("--work-dir", type=Path, help="scratch for checkpoints (default "
                        "/dev/shm when it has room for the 3B step's, else the temp folder)")
    parser.add_argument("--config", type=Path, help="the study for part 2 (default "
                        "configs/paper-3b.yaml)")
    parser.add_argument("--fsdp-arch", help="part 2's architecture (default the file's largest "
                        "explicit shape)")
    parser.add_argument("--output-len", type=int, help="part 4's generated length (default the "
                        "paper's 1024; a shorter one is recorded as reduced)")
    parser.add_argument("--extra-batch", type=int, help="part 4's second batch size (default 32)")
    args = parser.parse_args(argv)
    unknown = set(args.parts.split(",")) - set(names)
    if unknown:
        parser.error(f"--parts: unknown {sorted(unknown)}; known: {names}")
    if args.total_s is None:
        args.total_s = DRY_TOTAL_S if args.dry else TOTAL_S
    return args


def output_paths(args: argparse.Namespace) -> tuple[Path, Path, Path]:
    """(folder, JSON, markdown)."""
    if args.out.suffix == ".json":
        folder, json_path = args.out.parent, args.out
    else:
        folder, json_path = args.out, args.out / "gpu_check.json"
    return folder, json_path, args.md or folder / "gpu-results.md"


def scratch_root(args: argparse.Namespace) -> Path:
    """Where the parts' checkpoints go: a 3B float32 checkpoint is 13 GB, fastest in RAM."""
    if args.work_dir:
        return args.work_dir
    shm = Path("/dev/shm")
    if not args.dry and shm.is_dir() and shutil.disk_usage(shm).free > 40e9:
        return shm
    return Path(tempfile.gettempdir())


def warm_imports() -> dict[str, Any]:
    """Import what the parts use, so forked parts start warm. The parent must not make a CUDA
    context (a forked child could not use CUDA): if an import made one anyway, the parts are
    spawned instead (slower, but they run)."""
    import importlib

    missing = {}
    for name in WARM_IMPORTS:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            missing[name] = f"{type(exc).__name__}: {exc}"
    import torch

    method = "spawn" if torch.cuda.is_initialized() else "fork"
    return {"python": sys.version.split()[0], "missing_imports": missing,
            "start_method": method}


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


#: Set by the SIGTERM handler. The exception it raises can land where Python swallows it (a
#: finalizer or an at-fork hook, "Exception ignored in ..."), so the loop also reads this flag.
SIGTERM_RECEIVED: list[bool] = []


def on_sigterm(signum: int, frame: Any) -> None:
    SIGTERM_RECEIVED.append(True)
    raise TotalTimeout()


def prepare_environment(dry: bool) -> None:
    """Before torch is imported: torch.cuda.is_available through NVML (no CUDA context in
    the parent, see warm_imports), and one CPU thread in a dry run (a tiny model on busy cores
    runs many times faster with one)."""
    os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
    if dry:
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ.setdefault(name, "1")


def cuda_missing(dry: bool) -> str | None:
    """Why a full check cannot run here (no CUDA device), or None. Its parts would run the
    real shapes on the CPU until their deadlines; a dry run is for CPUs."""
    import torch

    if dry or torch.cuda.is_available():
        return None
    return ("gpu_check: no CUDA device here (torch.cuda.is_available() is False): the check "
            "measures a GPU. On a CPU, `bash benchmarks/gpu_check.sh --dry` runs every part "
            "with tiny shapes in seconds.")


def start_results(args: argparse.Namespace) -> dict[str, Any]:
    """The results before any part: the mode, the blocker and its probe, the host."""
    return {"format": "archscale-gpu-check/1", "dry": args.dry,
            "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "total_budget_s": args.total_s,
            "blocker": {**blocker.report(), "probe": blocker.probe()},
            "host": warm_imports(), "device": None, "parts": {}}


def save_results(results: dict[str, Any], json_path: Path, md_path: Path) -> None:
    """The JSON, then its markdown summary (a summary that fails to render keeps the JSON)."""
    from gpu_check_parts import report

    write_atomic(json_path, json.dumps(results, indent=1, default=str) + "\n")
    try:
        text = report.render(results, {p.name: p.title for p in parts()})
    except Exception as exc:  # noqa: BLE001
        text = f"# GPU check: results\n\nThe summary could not be written ({exc!r}); see " \
               f"{json_path.name}.\n"
    write_atomic(md_path, text)


def not_run(reason: str) -> dict[str, Any]:
    return {"status": "skipped", "reason": reason, "result": {}}


def run_parts(selected: list, ctx, budgets: dict[str, float], end: float,
              results: dict[str, Any], save: Any) -> bool:
    """Run the parts in order and save after each. The budgets are shares of the time left
    before `end` (a subset chosen with --parts shares all of it), and each part may run until
    the sum of its and the earlier parts' shares, so time a part leaves unused goes to the
    next. True if SIGTERM stopped the check."""
    from gpu_check_parts.runner import run_part

    slot_end, stopped = time.monotonic(), False
    scale = (end - slot_end) / sum(budgets.values())
    for part in selected:
        slot_end += scale * budgets[part.name]
        ctx.deadline = min(slot_end, end)
        if stopped or ctx.seconds_left() < MIN_PART_S:
            results["parts"][part.name] = not_run(
                "stopped by SIGTERM" if stopped else
                f"under {MIN_PART_S:.0f} s left of the {results['total_budget_s']:.0f} s total")
            continue
        print(f"[gpu_check] {part.name}: up to {ctx.seconds_left():.0f} s", flush=True)
        ctx.earlier = dict(results["parts"])
        record = run_part(part, ctx, ctx.work_dir / f"{part.name}.json",
                          results["host"]["start_method"])
        if SIGTERM_RECEIVED and not record.get("interrupted"):  # the exception was swallowed
            record.update(interrupted=True, reason="SIGTERM (gpu_check.sh's total time limit) "
                          "arrived while it ran; it was allowed to finish")
        stopped = bool(record.get("interrupted"))
        results["parts"][part.name] = record
        results["device"] = results["device"] or (record.get("result") or {}).get("device")
        print(f"[gpu_check] {part.name}: {record['status']}"
              + (f" ({record['reason']})" if record.get("reason") else "")
              + f" in {record.get('seconds', 0):.0f} s", flush=True)
        save()
    return stopped


def main(argv: list[str] | None = None) -> int:
    from gpu_check_parts.runner import Context

    t0 = time.monotonic()
    args = parse_args(argv)
    prepare_environment(args.dry)
    missing = cuda_missing(args.dry)
    if missing:
        print(missing, file=sys.stderr)
        return 2
    folder, json_path, md_path = output_paths(args)
    folder.mkdir(parents=True, exist_ok=True)
    print(f"[gpu_check] results: {json_path} and {md_path}", flush=True)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s: %(message)s")
    results = start_results(args)
    selected = [p for p in parts() if p.name in args.parts.split(",")]
    for part in parts():
        if part not in selected:
            results["parts"][part.name] = not_run("not selected (--parts)")

    def save() -> None:
        results["wall_s"] = round(time.monotonic() - t0, 1)
        save_results(results, json_path, md_path)

    scratch = Path(tempfile.mkdtemp(prefix="gpu_check.", dir=scratch_root(args)))
    ctx = Context(dry=args.dry, out_dir=folder, work_dir=scratch, options={
        "config": args.config, "fsdp_arch": args.fsdp_arch, "output_len": args.output_len,
        "extra_batch": args.extra_batch})
    budgets = {p.name: DRY_PART_S if args.dry else p.budget_s for p in selected}
    signal.signal(signal.SIGTERM, on_sigterm)
    save()
    try:
        stopped = run_parts(selected, ctx, budgets, t0 + args.total_s, results, save)
    except TotalTimeout:  # SIGTERM between two parts
        stopped = True
        for part in selected:
            results["parts"].setdefault(part.name, not_run("stopped by SIGTERM"))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        results["finished"] = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
        save()
    print(f"[gpu_check] done in {results['wall_s']:.0f} s: {json_path} and {md_path}",
          flush=True)
    statuses = [p["status"] for p in results["parts"].values()]
    stopped = stopped or bool(SIGTERM_RECEIVED)
    return 124 if stopped else int(any(s not in ("ok", "skipped") for s in statuses))


if __name__ == "__main__":
    raise SystemExit(main())
