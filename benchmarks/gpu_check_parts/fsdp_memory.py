"""Part 2: the peak GPU memory of a paper-3b training step under fsdp, against the plan's figure.

Why: `archscale plan` and the SLURM memory request rest on a per-GPU memory estimate (weights,
gradients and AdamW states over the ranks, plus activations and logits); one measured step on
one GPU checks it where it is largest, one rank holding every shard.

The study is read from configs/paper-3b.yaml with pyyaml and the schema's defaults read as JSON
(archscale.config needs jsonschema, which the lent machine lacks). The step is the trainer's own
(archscale.training.loop.run) with the file's training settings, except: parallel fsdp on one
rank, the global batch cut to one micro-batch (gradients accumulate in place, so the peak does
not depend on the number of micro-batches), two steps (AdamW's states exist from the first
step on, so the second step's forward and backward see the steady-state memory), and compile
off (compiling a 3B layer takes longer than this part's budget; the result says so).
"""
from __future__ import annotations

import dataclasses
import json
import threading
import time
from pathlib import Path
from typing import Any

from archscale.architecture import SHAPE_FIELDS, Architecture
from gpu_check_parts.common import (device_facts, device_is_gpu, fsdp_unavailable, gb,
                                    train_job, write_data)
from gpu_check_parts.runner import Context, Recorder, Skip

REPO = Path(__file__).resolve().parents[2]
SCHEMA = REPO / "src" / "archscale" / "schemas" / "config.schema.json"
DEFAULT_CONFIG = REPO / "configs" / "paper-3b.yaml"
STEPS = 2
DRY_SHAPE = dict(d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=16, ffn_dim=128)
DRY_SIZES = dict(vocab=512, seq_len=64, micro=2)
PLAN_FUNCTION = "training_gpu_memory"  # archscale.costs: the plan's per-GPU memory
FILE_SETTINGS = ("parallel", "activation_checkpointing", "micro_batch_size", "compile", "dtype",
                 "gpus", "nodes", "global_batch_tokens")
STEP_SETTINGS = ("parallel", "activation_checkpointing", "micro_batch_size", "compile", "dtype",
                 "global_batch_tokens")


def read_study(path: Path) -> dict[str, Any]:
    import yaml

    return yaml.safe_load(path.read_text())


def training_settings(study: dict[str, Any], arch_name: str) -> dict[str, Any]:
    """The schema's training defaults, the file's training section, the architecture's own
    overrides: what archscale.config resolves, without its jsonschema validation."""
    schema = json.loads(SCHEMA.read_text())["properties"]["training"]["properties"]
    settings = {key: spec["default"] for key, spec in schema.items() if "default" in spec}
    settings.update(study.get("training") or {})
    spec = next(a for a in study["architectures"] if a["name"] == arch_name)
    settings.update(spec.get("training") or {})
    return settings


def explicit_architectures(study: dict[str, Any]) -> dict[str, Architecture]:
    """The architectures the file gives as explicit shapes (its 3B checks; the ladder's
    target-solved shapes are small and not what the memory check is about)."""
    defaults = study.get("architecture_defaults") or {}
    tok = study["data"]["tokenizer"]
    seq_len = int(study["data"]["seq_len"])
    out = {}
    for spec in study["architectures"]:
        if all(f in spec for f in SHAPE_FIELDS):
            out[spec["name"]] = Architecture(
                name=spec["name"], **{f: int(spec[f]) for f in SHAPE_FIELDS},
                vocab_size=int(tok["vocab_size"]),
                tie_word_embeddings=spec.get("tie_word_embeddings",
                                             defaults.get("tie_word_embeddings", False)),
                rope_theta=float(spec.get("rope_theta", defaults.get("rope_theta", 5e5))),
                rms_norm_eps=float(spec.get("rms_norm_eps", defaults.get("rms_norm_eps", 1e-5))),
                max_position_embeddings=max(2048, seq_len),
                bos_token_id=int(tok["bos_token_id"]), eos_token_id=int(tok["eos_token_id"]))
    return out


def pick_architecture(archs: dict[str, Architecture], wanted: str | None) -> Architecture:
    """The one asked for, else the largest (most parameters: the most memory)."""
    if wanted:
        if wanted not in archs:
            raise Skip(f"--fsdp-arch {wanted!r} is not an explicit shape of the config; "
                       f"known: {sorted(archs)}")
        return archs[wanted]
    if not archs:
        raise Skip("the config has no architecture with an explicit shape")
    return max(archs.values(), key=lambda a: (a.n_params_total, a.d_model))


def step_settings(settings: dict[str, Any], seq_len: int, micro: int) -> dict[str, Any]:
    """The file's settings as this one-GPU step runs them (see the module docstring)."""
    return {**settings, "parallel": "fsdp", "gpus": 1, "nodes": 1, "compile": False,
            "micro_batch_size": micro, "global_batch_tokens": micro * seq_len,
            "checkpoint_every_steps": 10 ** 9, "log_every_steps": 1, "seeds": [0]}


def run(ctx: Context, rec: Recorder) -> None:
    reason = fsdp_unavailable()
    if reason:
        raise Skip(reason)
    config = Path(ctx.options.get("config") or DEFAULT_CONFIG)
    study = read_study(config)
    arch = pick_architecture(explicit_architectures(study), ctx.options.get("fsdp_arch"))
    settings = training_settings(study, arch.name)
    seq_len = int(study["data"]["seq_len"])
    rec.update(device=device_facts(), config=str(config.relative_to(REPO)
                                                 if config.is_relative_to(REPO) else config),
               architecture={"name": arch.name, **arch.shape(),
                             "n_params_total": arch.n_params_total},
               file_settings={k: settings.get(k) for k in FILE_SETTINGS},
               plan_for_file_layout=plan_estimate(arch, settings, seq_len))
    if ctx.dry:
        arch = dataclasses.replace(arch, name=f"{arch.name}-tiny", vocab_size=DRY_SIZES["vocab"],
                                   bos_token_id=0, eos_token_id=1, **DRY_SHAPE)
        seq_len, settings["micro_batch_size"] = DRY_SIZES["seq_len"], DRY_SIZES["micro"]
    settings = step_settings(settings, seq_len, int(settings["micro_batch_size"]))
    plan = plan_estimate(arch, settings, seq_len) or {
        "skipped": f"archscale.costs has no {PLAN_FUNCTION} (the plan's per-GPU memory)"}
    rec.update(step={"architecture": arch.name, "seq_len": seq_len, "steps": STEPS, "ranks": 1,
                     **{k: settings.get(k) for k in STEP_SETTINGS}}, plan=plan)
    with PeakSampler(rec):
        measured = measure_step(ctx, arch, settings, seq_len)
    rec.update(measured=measured)
    if plan.get("allocated_gb") and measured.get("peak_allocated_gb"):
        rec.update(measured_over_plan=round(
            measured["peak_allocated_gb"] / plan["allocated_gb"], 3))


def measure_step(ctx: Context, arch: Architecture, settings: dict[str, Any], seq_len: int
                 ) -> dict[str, Any]:
    """Train STEPS steps with the trainer; the CUDA peak (allocated and reserved), or the
    peak at the failure if the step does not fit."""
    import torch

    from archscale.training.loop import run as train

    tokens = STEPS * settings["global_batch_tokens"]
    data = write_data(ctx.work_dir / "fsdp-data", tokens + seq_len + 1, arch.vocab_size)
    job = train_job(ctx.work_dir / "fsdp-run", arch, data, tokens, seq_len, settings)
    if device_is_gpu():
        torch.cuda.reset_peak_memory_stats()
    outcome: dict[str, Any] = {"outcome": "trained"}
    try:
        metrics = train(job)
        outcome.update(final_step_loss=metrics["final_step_loss"],
                       tokens_per_s=metrics["tokens_per_s"])
    except torch.OutOfMemoryError as exc:
        outcome.update(outcome="out of memory", error=str(exc).splitlines()[0])
    if not device_is_gpu():
        return {**outcome, "peak_allocated_gb": None,
                "note": "no CUDA peak on a CPU (dry run): the step ran, nothing was measured"}
    return {**outcome, "peak_allocated_gb": gb(torch.cuda.max_memory_allocated()),
            "peak_reserved_gb": gb(torch.cuda.max_memory_reserved())}


def plan_estimate(arch: Architecture, settings: dict[str, Any], seq_len: int
                  ) -> dict[str, Any] | None:
    """The plan's per-GPU memory (archscale.costs.training_gpu_memory) for these settings'
    ranks, in GB; None where archscale.costs has no such function."""
    from archscale import costs

    estimate = getattr(costs, PLAN_FUNCTION, None)
    if estimate is None:
        return None
    figure = estimate(arch, settings, seq_len)
    return {"function": f"archscale.costs.{PLAN_FUNCTION}", "gpus": settings.get("gpus"),
            "nodes": settings.get("nodes", 1), "allocated_gb": round(figure.allocated_gb, 2),
            "total_gb": round(figure.total_gb, 2),
            "breakdown_gb": {k: gb(v) for k, v in dataclasses.asdict(figure).items()}}


class PeakSampler:
    """Records the CUDA peak so far every few seconds while the step runs, so a part killed
    in the trainer's final checkpoint write (13 GB at 3B) still reports the steps' peak."""

    def __init__(self, rec: Recorder, every_s: float = 2.0) -> None:
        self.rec, self.every_s = rec, every_s
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        import torch

        start = time.monotonic()
        while not self.stop.wait(self.every_s):
            self.rec.update(peak_so_far={"allocated_gb": gb(torch.cuda.max_memory_allocated()),
                                         "at_s": round(time.monotonic() - start, 1)})

    def __enter__(self) -> "PeakSampler":
        if device_is_gpu():
            self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop.set()
