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

from archscale.settings import TrainingSettings

# Training settings that change speed or bookkeeping but not the trained model: the fields of
# the training section that declare no "train" stage (archscale.settings, where each says why).
# They are not Snakemake params, so changing them never reruns training (see rules/train.smk
# and docs/reruns.md).
RESULT_FREE_SETTINGS = frozenset(TrainingSettings.field_names()) - frozenset(
    TrainingSettings.changing("train"))

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


def job_settings(result: dict[str, Any], speed: dict[str, Any]) -> dict[str, Any]:
    """A job's whole training settings: the result-deciding ones from the rule's params, the
    speed and bookkeeping knobs (threads, gpus, nodes, checkpoint cadence...) from `speed`,
    whose result-deciding keys are ignored: a job never decides its result from the config."""
    return {**{k: v for k, v in speed.items() if k in RESULT_FREE_SETTINGS}, **result}


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

    def __post_init__(self) -> None:
        # the schema's defaults for what a library caller left out (a study's are complete):
        # the trainer then reads every setting by its key, with no default of its own
        self.settings = TrainingSettings.complete(self.settings)

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
