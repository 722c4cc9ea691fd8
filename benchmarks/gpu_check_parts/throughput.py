"""Part 4: the torch engine's throughput for LLaMA-3.2-1B, Panda-1B and Surefire-1B.

At the paper's workload (batch 128, 4096 prompt tokens, 1024 generated, dummy weights) and at
one more batch size, through archscale's own torch engine (HF generation with a static cache:
archscale.throughput.engines.torch), so the records are those the workflow's throughput rule
writes and part 5 fits them as the workflow does.

Time box: every run is measured in full (no decode steps extrapolated). One tiny generate per
process warms CUDA up; each workload is then timed once (warmup 0, repeats 1), since a second
full pass would double the part's time. The paper's workload comes first for all three
shapes; a run whose predicted time (the roofline's, scaled by how far off it was on the runs
before) does not fit in the time left is skipped and says so. --output-len shortens the
generated length for every run, and the result records that it did.
"""
from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

from archscale.architecture import Architecture
from archscale.paper import PAPER_1B_SHAPES, PAPER_1B_VOCAB, PAPER_MEASURED_GAINS
from gpu_check_parts.common import device_facts
from gpu_check_parts.runner import Context, Recorder

BASELINE = "LLaMA-3.2-1B"
PAPER_WORKLOAD = dict(batch=128, input_len=4096, output_len=1024)
EXTRA_BATCH = 32      # decode-overhead-bound where 128 is bandwidth-bound: both help the fit
DRY_SHAPES = {
    "LLaMA-3.2-1B": dict(d_model=64, n_layers=2, n_heads=4, n_kv_heads=1, head_dim=16,
                         ffn_dim=256),
    "Surefire-1B": dict(d_model=80, n_layers=2, n_heads=4, n_kv_heads=1, head_dim=16,
                        ffn_dim=192),
    "Panda-1B": dict(d_model=80, n_layers=2, n_heads=8, n_kv_heads=2, head_dim=16,
                     ffn_dim=128),
}
DRY_WORKLOAD = dict(batch=4, input_len=32, output_len=8)
DRY_EXTRA_BATCH = 2
SAFETY = 1.3          # a run starts only if 1.3 x its predicted time (+ loading) is left
LOAD_S = 10.0         # loading before the first measured load time is known


def run(ctx: Context, rec: Recorder) -> None:
    from archscale.throughput.engines.torch import TorchEngine

    shapes = DRY_SHAPES if ctx.dry else PAPER_1B_SHAPES
    base = dict(DRY_WORKLOAD if ctx.dry else PAPER_WORKLOAD)
    output_len = int(ctx.options.get("output_len") or base["output_len"])
    extra = int(ctx.options.get("extra_batch") or (DRY_EXTRA_BATCH if ctx.dry else EXTRA_BATCH))
    workloads = [dict(base, output_len=output_len), dict(base, batch=extra,
                                                         output_len=output_len)]
    engine = TorchEngine()
    facts = device_facts()
    rec.update(engine=engine.version(), device=facts, workloads=workloads,
               output_len_reduced=None if output_len == base["output_len"] else
               {"from": base["output_len"], "to": output_len, "why": "--output-len"},
               timing="one tiny generate per process warms the device up, then each workload is "
                      "timed once in full (warmup 0, repeats 1)",
               paper_gains=PAPER_MEASURED_GAINS)
    max_len = base["input_len"] + output_len
    dirs = {name: model_dir(ctx.work_dir / "models", name, shape, ctx.dry, max_len)
            for name, shape in shapes.items()}
    rec.update(warm_up_s=warm_up(engine, dirs[BASELINE], ctx.dry))
    runs: list[dict[str, Any]] = []
    for workload in workloads:
        for name in shapes:
            runs.append(measure_one(ctx, engine, name, shapes[name], dirs[name], workload,
                                    facts["device"], runs))
            rec.update(runs=runs, records=[r["record"] for r in runs if r.get("record")],
                       ratios_to_baseline=ratios(runs))


def model_dir(root: Path, name: str, shape: dict[str, int], dry: bool, max_len: int) -> Path:
    """A folder named after the architecture with its config.json (the engine builds dummy
    weights from it; the folder name is the record's architecture name)."""
    vocab, bos, eos = (512, 0, 1) if dry else (PAPER_1B_VOCAB, 128000, 128001)
    arch = Architecture(name=name, **shape, vocab_size=vocab, tie_word_embeddings=True,
                        max_position_embeddings=max_len, bos_token_id=bos, eos_token_id=eos)
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(arch.hf_config()))
    return folder


def settings_for(workload: dict[str, int], warmup: int = 0, repeats: int = 1):
    from archscale.throughput.engines.base import MeasureSettings

    return MeasureSettings(batch=workload["batch"], input_len=workload["input_len"],
                           output_len=workload["output_len"], dtype="auto", device="auto",
                           warmup=warmup, repeats=repeats)


def warm_up(engine, folder: Path, dry: bool) -> float:
    """One small generate: CUDA context, cuBLAS and attention kernels initialised once."""
    start = time.perf_counter()
    engine.measure(folder, settings_for(dict(batch=2, input_len=8 if dry else 64,
                                             output_len=2 if dry else 4)))
    return round(time.perf_counter() - start, 2)


def measure_one(ctx: Context, engine, name: str, shape: dict[str, int], folder: Path,
                workload: dict[str, int], device: str, done: list[dict[str, Any]]
                ) -> dict[str, Any]:
    """One measured run, written as the workflow's record, or why it was not run."""
    import torch

    entry: dict[str, Any] = {"architecture": name, **workload}
    expected = predicted_seconds(shape, workload, device, ctx.dry, done)
    loading = max([r["load_time_s"] for r in done if "load_time_s" in r], default=LOAD_S)
    entry["predicted_s"] = expected
    if expected is not None and SAFETY * expected + loading > ctx.seconds_left():
        entry["skipped"] = (f"predicted {expected:.0f} s (+{loading:.0f} s loading), "
                            f"{ctx.seconds_left():.0f} s left in the part's budget")
        return entry
    try:
        result = engine.measure(folder, settings_for(workload))
    except torch.OutOfMemoryError as exc:
        entry["failed"] = f"out of memory: {str(exc).splitlines()[0]}"
        torch.cuda.empty_cache()
        return entry
    record = result.to_dict()
    path = (ctx.out_dir / "throughput" / name /
            f"torch-b{workload['batch']}-i{workload['input_len']}-o{workload['output_len']}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1) + "\n")
    entry.update(time_s=record["mean_time_s"], load_time_s=record["load_time_s"],
                 output_tokens_per_s=record["output_tokens_per_s"],
                 total_tokens_per_s=record["total_tokens_per_s"], record=str(path))
    return entry


def predicted_seconds(shape: dict[str, int], workload: dict[str, int], device: str, dry: bool,
                      done: list[dict[str, Any]]) -> float | None:
    """The roofline's time with the torch defaults, times the geometric mean of measured over
    predicted on the runs before; None where the device has no preset."""
    from archscale.devices import get_device, preset_for_device_name
    from archscale.throughput.model import DEFAULT_FACTORS, Workload, predict

    preset = preset_for_device_name(device)
    if preset is None:
        return None
    prediction = predict(**shape, vocab_size=512 if dry else PAPER_1B_VOCAB,
                         device=get_device(preset), workload=Workload(**workload, engine="torch"),
                         factors=DEFAULT_FACTORS["torch"], tie_word_embeddings=True)
    seconds = float(prediction.time_s)
    if not math.isfinite(seconds):
        return None  # the model says the cache does not fit; let the engine try
    misses = [math.log(r["time_s"] / r["predicted_s"]) for r in done
              if r.get("time_s") and r.get("predicted_s")]
    scale = math.exp(sum(misses) / len(misses)) if misses else 1.0
    return round(seconds * scale, 2)


def ratios(runs: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Output tokens/s over the baseline's, per workload ("128x4096->1024")."""
    out: dict[str, dict[str, float]] = {}
    for r in runs:
        if "output_tokens_per_s" not in r:
            continue
        key = f"{r['batch']}x{r['input_len']}->{r['output_len']}"
        base = next((b for b in runs if b["architecture"] == BASELINE
                     and "output_tokens_per_s" in b and
                     (b["batch"], b["input_len"], b["output_len"]) ==
                     (r["batch"], r["input_len"], r["output_len"])), None)
        if base is not None:
            out.setdefault(key, {})[r["architecture"]] = round(
                r["output_tokens_per_s"] / base["output_tokens_per_s"], 4)
    return out
