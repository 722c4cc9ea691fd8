"""One training run as data: `TrainJob` (paths, budget, seed, settings) and its fingerprint.

The fingerprint is what makes a run restartable without risk: a resume state is used only when
it was written by a job with the same fingerprint, which hashes everything that decides the
result (the architecture, the budget, the seed, the data and `result_settings`) and nothing
that only changes speed or bookkeeping (`RESULT_FREE_SETTINGS`). The rule's params are the same
`result_settings`, so Snakemake reruns a job exactly when its fingerprint changes.

The job's errors live here too: every module of the trainer raises them.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

# Training settings that change speed or bookkeeping but not the trained model: they are not
# Snakemake params, so changing them never reruns training (see rules/train.smk and
# docs/reruns.md). micro_batch_size is one: gradient accumulation sums the same sequences'
# gradients whatever the split, so only float rounding changes (as with threads or gpus;
# tests/test_train.py checks the losses agree). parallel (ddp or fsdp) and
# activation_checkpointing are too: the same global batch's gradient, computed with sharded
# weights or recomputed activations, differs by float rounding only
# (tests/test_train_parallel.py).
RESULT_FREE_SETTINGS = frozenset({"seeds", "threads", "gpus", "nodes", "checkpoint_every_steps",
                                  "compile", "micro_batch_size", "parallel",
                                  "activation_checkpointing"})

# The format of the resume state (archscale.training.state writes it into every state). It is
# part of the fingerprint, so a state of an older format is never loaded: raise it whenever
# what a state holds changes.
STATE_VERSION = 1


class TrainError(ValueError):
    """A training setup that cannot run as configured; the message says what to change."""


class DivergedError(TrainError):
    """The training loss became NaN or infinite: the run stops and writes no result."""


def result_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """The training settings that decide the result (the rule's params)."""
    return {k: v for k, v in settings.items() if k not in RESULT_FREE_SETTINGS}


@dataclass
class TrainJob:
    """Everything one training run needs: paths, budget, seed and the resolved settings."""

    arch_config: str
    train_bin: str
    meta: str
    tokenizer_dir: str
    model_dir: str
    log_csv: str
    metrics_json: str
    resume_dir: str
    tokens: int
    seed: int
    seq_len: int
    settings: dict[str, Any]
    threads: int = 1
    label: dict[str, Any] = field(default_factory=dict)  # arch name etc., for metrics.json

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> "TrainJob":
        return cls(**json.loads(text))

    def fingerprint(self) -> str:
        """Hash of what decides the result; a resume state must match it to be used."""
        arch = json.loads(Path(self.arch_config).read_text())
        meta = json.loads(Path(self.meta).read_text())
        key = {"arch": arch, "tokens": self.tokens, "seed": self.seed, "seq_len": self.seq_len,
               "settings": result_settings(self.settings),
               "data": [meta.get("corpus_sha256"), meta.get("train_tokens"),
                        meta.get("tokenizer_sha256")],
               "state_version": STATE_VERSION}
        return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
