"""Which library modules each workflow stage runs, and a hash of their code.

Rules pass `code_version(stage)` as a param, so editing a stage's own modules reruns that stage
(and what reads it) and nothing else: a README edit or another stage's change does not.
Bookkeeping modules (io, provenance, config, workflow/, cli/) are in no list on purpose: they
change no number in a result. The lists are kept by hand; tests/test_reruns.py follows every
rule's imports and fails when a module a rule runs is hashed by neither it nor an upstream rule,
so a new module is added to the stage that runs it (docs/architecture.md).
"""
from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[1]  # src/archscale

STAGE_MODULES: dict[str, tuple[str, ...]] = {
    "architecture": ("architecture.py",),
    "data": ("data/corpus.py",),
    "train": ("architecture.py", "hf_compat.py", "training/model.py",
              "training/job.py", "training/schedule.py", "training/distributed.py",
              "training/optimizer.py", "training/train_log.py", "training/loop.py",
              "training/state.py", "training/launch.py", "training/parallel.py",
              "training/sharded_state.py"),
    "evaluate": ("hf_compat.py", "training/model.py", "training/evaluate.py",
                 "training/llama_forward.py", "training/harness_lm.py", "data/mc_task.py"),
    "throughput": ("architecture.py", "hf_compat.py", "throughput/engines",
                   "throughput/engine_defaults.py", "throughput/measure.py"),
    "throughput_model": ("architecture.py", "throughput/model.py", "devices.py",
                         "throughput/engine_defaults.py", "throughput/calibrate.py"),
    "fit": ("fit", "figures.py"),
    "search": ("architecture.py", "search/frontier.py", "search/study.py", "search/outputs.py",
               "search/plots.py", "throughput/model.py", "devices.py",
               "throughput/engine_defaults.py", "fit"),
    "plan": ("architecture.py", "config.py", "data/corpus.py", "costs.py",
             "devices.py"),
    "validation": ("architecture.py", "costs.py", "search/frontier_check.py"),
    "gqa": ("architecture.py", "costs.py", "search/gqa_search.py"),
    "optimum_check": ("architecture.py", "search/optimum_plan.py"),
    "proposals": ("architecture.py", "costs.py", "devices.py", "data/corpus.py",
                  "search/proposals.py", "fit"),
    "report": ("figures.py", "training/plots.py", "throughput/plots.py",
               "data/summary.py", "tables.py"),
}


@cache
def code_version(stage: str) -> str:
    """sha256 (first 16 hex digits) over the stage's module files, in a fixed order."""
    if stage not in STAGE_MODULES:
        raise KeyError(f"unknown stage {stage!r}; known: {sorted(STAGE_MODULES)}")
    digest = hashlib.sha256()
    for entry in STAGE_MODULES[stage]:
        path = PACKAGE_DIR / entry
        files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
        for file in files:
            if file.exists():
                digest.update(str(file.relative_to(PACKAGE_DIR)).encode() + b"\0")
                digest.update(file.read_bytes())
    return digest.hexdigest()[:16]
