"""Measure the paper's three 1B shapes on one GPU with the torch engine and calibrate the model.

    PYTHONPATH=src python3 benchmarks/gpu_throughput.py [--out benchmarks/gpu_throughput.json]

For a lent GPU machine (torch + transformers, nothing installable, ~5 minutes): LLaMA-3.2-1B,
Surefire-1B and Panda-1B (vocab 128256, tied embeddings), dummy (random, seeded) weights, bf16,
HF generation with a static cache, two reduced workloads (one prefill-heavy, one decode-heavy,
so the fit sees both phases). It then fits the torch engine's efficiency factors for this device,
prints each measurement next to the calibrated model's leave-one-out prediction, and the
model's throughput ratios at the paper's workload (batch 128, 4096 in, 1024 out) next to the
paper's measurements. Everything is written to --out as JSON.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from archscale.paper import PAPER_1B_SHAPES as PAPER_SHAPES  # noqa: E402
from archscale.paper import PAPER_1B_VOCAB

# (batch, input_len, output_len): prefill-heavy, then decode-heavy
WORKLOADS = [(64, 1024, 128), (32, 256, 384)]
# The paper's measured ratios against LLaMA-3.2-1B (batch 128, 4096 in, 1024 out).
PAPER_RATIOS = {
    "SGLang/H200": {"Surefire-1B": 12645.55 / 8608.57},
    "vLLM/A100": {"Surefire-1B": 1.21, "Panda-1B": 0.67},
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "gpu_throughput.json"))
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--max-seconds", type=float, default=270.0,
                        help="stop measuring (and fit what was measured) after this long")
    args = parser.parse_args(argv)

    import torch
    if not torch.cuda.is_available():
        sys.exit("benchmarks/gpu_throughput.py needs a CUDA GPU: torch "
                 f"{torch.__version__} sees none. Run it on a GPU machine; on a CPU the "
                 "workflow's own torch engine (snakemake results/throughput.csv) measures.")

    from archscale.architecture import Architecture
    from archscale.devices import get_device, preset_for_device_name
    from archscale.throughput.engines.base import MeasureSettings
    from archscale.throughput.engines.torch import TorchEngine
    from archscale.throughput.model import (DEFAULT_FACTORS, Measurement, Workload, fit_factors,
                                            leave_one_out, predict_tokens_per_s)

    gpu_name = torch.cuda.get_device_name(0)
    preset = preset_for_device_name(gpu_name)
    if preset in (None, "cpu"):
        sys.exit(f"no device preset for {gpu_name!r}; add one to archscale.devices.PRESETS")
    device = get_device(preset)
    print(f"device: {gpu_name} -> preset {preset}; torch {torch.__version__}", flush=True)

    engine, start = TorchEngine(), time.perf_counter()
    records, measurements = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for name, shape in PAPER_SHAPES.items():
            arch = Architecture(name=name, **shape, vocab_size=PAPER_1B_VOCAB,
                                tie_word_embeddings=True, max_position_embeddings=5120,
                                bos_token_id=128000, eos_token_id=128001)
            model_dir = Path(tmp) / name
            model_dir.mkdir()
            (model_dir / "config.json").write_text(json.dumps(arch.hf_config()))
            for batch, s_in, s_out in WORKLOADS:
                if time.perf_counter() - start > args.max_seconds:
                    print(f"time budget spent: skipping {name} {batch}x{s_in}+{s_out}")
                    continue
                settings = MeasureSettings(batch=batch, input_len=s_in, output_len=s_out,
                                           dtype="bfloat16", device="cuda", warmup=1,
                                           repeats=args.repeats)
                record = engine.measure(model_dir, settings).to_dict()
                records.append(record)
                measurements.append(Measurement.from_result(record, device, name=name))
                print(f"{name:13s} batch {batch:3d} in {s_in:5d} out {s_out:4d}: "
                      f"{record['output_tokens_per_s']:9.1f} output tok/s "
                      f"({record['mean_time_s']:.3f} s, load {record['load_time_s']:.1f} s)",
                      flush=True)
                torch.cuda.empty_cache()

    calibration = fit_factors(measurements)
    factors, _ = calibration.lookup("torch", device.name)
    loo = leave_one_out(measurements)
    print(f"\nfitted torch/{device.name} factors: {factors.to_dict()}")
    rows = []
    for m, (loo_time, _) in zip(measurements, loo):
        w = m.workload
        rows.append({"name": m.name, "batch": w.batch, "input_len": w.input_len,
                     "output_len": w.output_len, "measured_time_s": m.time_s,
                     "fitted_time_s": m.predicted_time(factors),
                     "loo_time_s": loo_time,
                     "default_time_s": m.predicted_time(DEFAULT_FACTORS["torch"])})
        print(f"  {m.name:13s} {w.batch}x{w.input_len}+{w.output_len}: measured "
              f"{m.time_s:.3f} s, fitted {rows[-1]['fitted_time_s']:.3f} s, leave-one-out "
              f"{loo_time:.3f} s ({m.time_s / loo_time - 1:+.1%} on tokens/s)")

    paper = Workload(batch=128, input_len=4096, output_len=1024, dtype="bfloat16")
    ratios = {}
    for label, engine_name, preset_name, f in [
            (f"torch/{device.name} (fitted here)", "torch", device.name, factors),
            ("SGLang/H200 (default factors)", "sglang", "H200", DEFAULT_FACTORS["sglang"]),
            ("vLLM/A100-80GB (default factors)", "vllm", "A100-80GB", DEFAULT_FACTORS["vllm"])]:
        w = Workload(**{**paper.to_dict(), "engine": engine_name})
        tps = {n: float(predict_tokens_per_s(**s, vocab_size=PAPER_1B_VOCAB,
                                             device=get_device(preset_name), workload=w,
                                             factors=f))
               for n, s in PAPER_SHAPES.items()}
        base = tps["LLaMA-3.2-1B"]
        ratios[label] = {"tokens_per_s": tps,
                         "ratio_to_llama": {n: t / base for n, t in tps.items()}}
        print(f"\npaper workload, {label}: " + ", ".join(
            f"{n} {t:.0f} tok/s ({t / base:.2f}x)" for n, t in tps.items()))
    print("paper: SGLang/H200 LLaMA-3.2-1B 8608.57, Surefire-1B 12645.55 tok/s (1.47x); "
          "vLLM/A100 Surefire +21 %, Panda -33 %")
    measured_ratio = {}
    for batch, s_in, s_out in WORKLOADS:
        got = {r["architecture"]["name"]: r["output_tokens_per_s"] for r in records
               if (r["batch"], r["input_len"], r["output_len"]) == (batch, s_in, s_out)}
        if "LLaMA-3.2-1B" in got:
            measured_ratio[f"{batch}x{s_in}+{s_out}"] = {
                n: t / got["LLaMA-3.2-1B"] for n, t in got.items()}
    print(f"measured ratios here (torch engine, reduced workloads): {measured_ratio}")

    out = {"device": gpu_name, "preset": device.name, "torch": torch.__version__,
           "workloads": WORKLOADS, "results": records, "fit": rows,
           "calibration": calibration.to_dict(), "paper_workload_predictions": ratios,
           "measured_ratios": measured_ratio, "paper_ratios": PAPER_RATIOS,
           "seconds": time.perf_counter() - start}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(f"\nwrote {args.out} ({out['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
