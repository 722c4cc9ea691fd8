"""Measure one architecture with one engine and write the result JSON.

    python -m archscale.throughput.measure --engine vllm --config results/architectures/a1 \
        --out results/throughput/a1/vllm.json --batch 4 --input-len 64 --output-len 32

Why a module entry point: vLLM and SGLang live in their own environments (conda envs on a
cluster, .venv-vllm in CI), so the measurement runs as a process of that environment's python;
the Snakemake rule and the tests call exactly this. It imports only numpy and the engine.

The process ends with the job that started it (`die_with_parent`): when its parent process
goes (Snakemake killed the job, SLURM cancelled it), or on SIGTERM, it stops the engine and
exits without writing --out. Before, a killed job's measurement kept running and wrote its
result after Snakemake had marked the job failed, while a rerun measured on the same device.
"""
from __future__ import annotations

import argparse
import ctypes
import json
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

from archscale.provenance import now, provenance
from archscale.throughput.engines.base import MeasureSettings, get_engine, write_result
from archscale.throughput.engines.registry import names as engine_names


def model_dir_of(path: str | Path) -> Path:
    """Accept the architecture's directory or its config.json."""
    path = Path(path)
    directory = path.parent if path.name == "config.json" else path
    if not (directory / "config.json").is_file():
        raise FileNotFoundError(f"{directory / 'config.json'} does not exist: pass an "
                                "architecture directory such as results/architectures/<arch>")
    return directory


def measure_to_file(engine: str, model_dir: str | Path, settings: MeasureSettings,
                    out: str | Path, log: logging.Logger | None = None) -> dict[str, Any]:
    """Measure and write `out` atomically, with provenance; returns the record."""

    started = now()
    model_dir = model_dir_of(model_dir)
    runner = get_engine(engine)
    result = runner.measure(model_dir, settings, log=log)
    result.provenance = provenance(settings=settings.to_dict(),
                                   inputs=[model_dir / "config.json"], started=started,
                                   packages=runner.packages)
    write_result(result, out)
    return result.to_dict()


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m archscale.throughput.measure",
                                description="Measure generation throughput of one architecture "
                                            "(dummy weights) with one engine.")
    p.add_argument("--engine", required=True, choices=engine_names())
    p.add_argument("--config", required=True,
                   help="architecture directory holding config.json (or the file itself)")
    p.add_argument("--out", required=True, help="result JSON to write")
    p.add_argument("--settings", type=json.loads, default={},
                   help="JSON object of settings (config.yaml throughput keys); flags override")
    p.add_argument("--batch", type=int)
    p.add_argument("--input-len", type=int)
    p.add_argument("--output-len", type=int)
    p.add_argument("--dtype", choices=("auto", "float32", "bfloat16", "float16"))
    p.add_argument("--device", choices=("auto", "cpu", "cuda"))
    p.add_argument("--warmup", type=int)
    p.add_argument("--repeats", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--threads", type=int)
    p.add_argument("--max-model-len", type=int)
    p.add_argument("--max-num-seqs", type=int)
    p.add_argument("--max-num-batched-tokens", type=int)
    p.add_argument("--gpu-memory-utilization", type=float)
    p.add_argument("--chunked-prefill-size", type=int)
    p.add_argument("--cuda-graph-max-batch", type=int)
    p.add_argument("--enforce-eager", action="store_true", default=None)
    p.add_argument("--engine-args", type=json.loads,
                   help="JSON object passed through to the engine's constructor")
    return p


def settings_from_args(args: argparse.Namespace) -> MeasureSettings:
    data = dict(args.settings)
    data.setdefault("batch_size", 128)
    data.setdefault("input_len", 4096)
    data.setdefault("output_len", 1024)
    flags = {"batch": "batch_size", "input_len": "input_len", "output_len": "output_len",
             "dtype": "dtype", "device": "device", "warmup": "warmup", "repeats": "repeats",
             "seed": "seed", "threads": "threads", "max_model_len": "max_model_len",
             "max_num_seqs": "max_num_seqs", "max_num_batched_tokens": "max_num_batched_tokens",
             "gpu_memory_utilization": "gpu_memory_utilization",
             "chunked_prefill_size": "chunked_prefill_size", "enforce_eager": "enforce_eager",
             "cuda_graph_max_batch": "cuda_graph_max_batch",
             "engine_args": "engine_args"}
    for attr, key in flags.items():
        value = getattr(args, attr)
        if value is not None:
            data[key] = value
    return MeasureSettings.from_dict(data)


class JobEnded(SystemExit):
    """The job this measurement belongs to ended (SIGTERM, or its parent process is gone). A
    SystemExit, so no engine's `except Exception` swallows it and every `finally` runs: the
    engine is shut down and the half-written output removed (archscale.io.atomic_path)."""


PR_SET_PDEATHSIG = 1  # linux/prctl.h
PARENT_POLL_S = 1.0   # how often the watcher looks for its parent
KILL_GRACE_S = 60.0   # then, if the engine does not stop on SIGTERM, SIGKILL


def _end_job(signum: int, frame: FrameType | None) -> None:
    """SIGTERM handler: end the measurement at the next Python instruction. Later SIGTERMs (the
    watcher's, after the kernel's) are ignored, so they cannot interrupt the engine's shutdown."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    os.write(2, f"measurement stopped by signal {signal.Signals(signum).name}: its job ended; "
                f"no result is written\n".encode())
    raise JobEnded(128 + signum)


def _watch_parent(parent: int) -> None:
    """Poll for the parent's death (a subreaper or a non-Linux system gets no PDEATHSIG): then
    SIGTERM this process, and SIGKILL it if the engine is stuck in native code."""
    while os.getppid() == parent:
        time.sleep(PARENT_POLL_S)
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(KILL_GRACE_S)
    os.kill(os.getpid(), signal.SIGKILL)


def die_with_parent() -> None:
    """End this process with the process that started it, and turn SIGTERM into JobEnded.

    On Linux the kernel sends SIGTERM when the parent dies (prctl PR_SET_PDEATHSIG); a watcher
    thread covers other systems and a parent that dies between getppid and prctl. A parent
    that dies while this module is still importing (a fraction of a second) goes unnoticed.
    Call it from the main thread: signal handlers run there.
    """
    parent = os.getppid()
    signal.signal(signal.SIGTERM, _end_job)
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        except (OSError, AttributeError):  # no libc prctl: the watcher alone
            pass
    threading.Thread(target=_watch_parent, args=(parent,), name="parent-watch",
                     daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s",
                        stream=sys.stderr)
    log = logging.getLogger("archscale.throughput")
    settings = settings_from_args(args)
    start = time.perf_counter()
    record = measure_to_file(args.engine, args.config, settings, args.out, log=log)
    log.info("%s on %s: %.1f output tokens/s (%.1f total), %d repeats, %.1f s in all; wrote %s",
             args.engine, record["device"], record["output_tokens_per_s"],
             record["total_tokens_per_s"], record["repeats"], time.perf_counter() - start,
             args.out)
    return 0


if __name__ == "__main__":
    die_with_parent()  # here, not in main(): a test calling main() keeps its own signals
    try:
        raise SystemExit(main())
    except JobEnded as ended:  # the engine is shut down: skip the interpreter's slow teardown
        logging.shutdown()
        os._exit(int(ended.code))
