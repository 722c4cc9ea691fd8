"""Estimate a study's cost before anything is submitted: GPU-hours, disk, job counts.

Training time = training FLOPs (3x forward, attention included, see architecture.py) divided by
(device dense bf16 peak x an assumed MFU). That MFU is a stated assumption, not a measurement:
benchmarks/gpu_train_mfu.py measures it on your GPU. Disk counts the token files (2 or 4 bytes a
token) and one bf16 checkpoint per run plus one float32 resume state (weights + 2 Adam moments).
"""
from __future__ import annotations

from typing import Any

import pandas as pd

from archscale.architecture import Architecture
from archscale.config import Study
from archscale.data.corpus import token_dtype
from archscale.throughput.devices import get_device


def plan_inputs(study: Study) -> dict[str, Any]:
    """Exactly the study fields the plan reads (the plan rule's params: nothing else reruns it)."""
    cfg = study.config
    return {
        "architectures": {n: a.to_dict() for n, a in study.architectures.items()},
        "token_budgets": {n: study.token_budgets(n) for n in study.architectures},
        "seeds": {n: list(study.training_settings(n)["seeds"]) for n in study.architectures},
        "seq_len": cfg["data"]["seq_len"],
        "shards": cfg["data"]["shards"],
        "vocab_size": cfg["data"]["tokenizer"]["vocab_size"],
        "engines": list(cfg["throughput"]["engines"]),
        "gpus": dict(cfg["throughput"].get("gpus") or {}),
    }


def plan_study(study: Study, mfu: float = 0.35, gpu: str = "H100") -> pd.DataFrame:
    """One row per architecture, and a final TOTAL row."""
    return plan_from_inputs(plan_inputs(study), mfu=mfu, gpu=gpu)


def plan_from_inputs(inputs: dict[str, Any], mfu: float = 0.35, gpu: str = "H100"
                     ) -> pd.DataFrame:
    """The plan table from `plan_inputs` (so the Snakemake rule needs no full config)."""
    if not 0 < mfu <= 1:
        raise ValueError(f"--mfu must be in (0, 1], got {mfu}")
    device = get_device(gpu, inputs["gpus"])
    seq_len = inputs["seq_len"]
    engines = len(inputs["engines"])
    rows = []
    for name, spec in inputs["architectures"].items():
        arch = Architecture(**spec)
        budgets = inputs["token_budgets"][name]
        seeds = inputs["seeds"][name]
        flops = sum(arch.training_flops_per_token(seq_len) * t for t in budgets) * len(seeds)
        runs = len(budgets) * len(seeds)
        ckpt_gb = arch.n_params_total * 2 / 1e9
        rows.append({
            "architecture": name,
            "n_params_non_embedding": arch.n_params_non_embedding,
            "runs": runs,
            "train_tokens": sum(budgets) * len(seeds),
            "train_flops": flops,
            "gpu_hours": flops / (device.peak_tflops * 1e12 * mfu) / 3600,
            "checkpoint_disk_gb": runs * ckpt_gb,
            "resume_disk_gb": arch.n_params_total * 12 / 1e9,  # peak, while one run is live
            "jobs": runs * 2 + engines + 1,  # train + evaluate per run, throughput, config
        })
    table = pd.DataFrame(rows)
    max_tokens = max(max(b) for b in inputs["token_budgets"].values())
    token_bytes = token_dtype(inputs["vocab_size"]).itemsize
    total = {"architecture": "TOTAL", **table.drop(columns="architecture").sum().to_dict()}
    total["n_params_non_embedding"] = float("nan")
    total["token_disk_gb_at_least"] = max_tokens * token_bytes / 1e9
    total["jobs"] = int(total["jobs"]) + inputs["shards"] + 2 + 6  # data, fits, search
    table = pd.concat([table, pd.DataFrame([total])], ignore_index=True)
    table.insert(1, "gpu", device.name)
    table.insert(2, "assumed_mfu", mfu)
    return table
