"""What a study's jobs cost: memory, run time, the study plan, and a frontier check's budget.

One module so every estimate rests on the same assumptions:
- Training time = training FLOPs (3x forward, attention included, see architecture.py) over
  (the device preset's dense bf16 peak x ASSUMED_MFU). That MFU is a stated assumption, not a
  measurement: benchmarks/gpu_train_mfu.py measures it on your GPU. On a CPU study a training
  job is assumed to run CPU_TOKENS_PER_S_PER_THREAD tokens/s per thread.
- Host memory of a job: the process (torch, transformers, lm-eval) plus bytes per parameter,
  and on a CPU one micro-batch's activations.
- The study plan (`study_plan`, results/plan.csv): GPU-hours, disk and job counts before
  anything is submitted.
- The frontier check (search.validation) prices shapes with `FittedJobCosts`, a cost model
  fitted on the study's own finished jobs, not on these assumptions: there the study has
  already run, so its measured durations are the better guide.
"""
from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterable, Mapping

import numpy as np

from archscale.architecture import SHAPE_FIELDS, Architecture
from archscale.data.corpus import token_dtype
from archscale.throughput.devices import Device, get_device

if TYPE_CHECKING:
    import pandas as pd

    from archscale.config import Study

ASSUMED_MFU = 0.35                  # model FLOPs utilisation assumed for GPU training time
TRAINING_GPU = "H100"               # the preset a training job's time limit assumes
CPU_TOKENS_PER_S_PER_THREAD = 3000  # CPU training speed assumed for the time limit
RUNTIME_SAFETY = 2.0                # a time limit is this many times the estimate ...
RUNTIME_STARTUP_MIN = 20            # ... plus this many minutes of start-up


class CostError(ValueError):
    """An estimate that cannot be made as asked; the message says what to change."""


# ---------------------------------------------------------------------------------------------
# Training time
# ---------------------------------------------------------------------------------------------

def training_seconds(flops: float, device: Device, n_devices: int = 1,
                     mfu: float = ASSUMED_MFU) -> float:
    """Seconds to compute `flops` on `n_devices` of `device` at an assumed MFU."""
    if not 0 < mfu <= 1:
        raise CostError(f"--mfu must be in (0, 1], got {mfu}")
    return flops / (device.peak_flops * mfu * max(1, n_devices))


def training_runtime_minutes(arch: Architecture, settings: Mapping[str, Any], tokens: int,
                             seq_len: int) -> int:
    """A training job's time limit (SLURM `runtime`, minutes): the estimate on TRAINING_GPU,
    or at CPU_TOKENS_PER_S_PER_THREAD on a CPU study, times RUNTIME_SAFETY, plus start-up.
    A run that still hits the limit resumes from results/resume/ when it is rerun."""
    if settings["gpus"] > 0:
        seconds = training_seconds(arch.training_flops_per_token(seq_len) * tokens,
                                   get_device(TRAINING_GPU), settings["gpus"])
    else:
        seconds = tokens / (CPU_TOKENS_PER_S_PER_THREAD * settings["threads"])
    return int(RUNTIME_STARTUP_MIN + RUNTIME_SAFETY * seconds / 60)


# ---------------------------------------------------------------------------------------------
# Host memory
# ---------------------------------------------------------------------------------------------

def training_memory_mb(arch: Architecture, settings: Mapping[str, Any], seq_len: int,
                       attempt: int = 1) -> int:
    """Host memory of a training job: ~1.5 GB for torch + transformers, 24 bytes a parameter
    (float32 weights, gradients, two Adam moments, the resume copy) and, on CPU, one
    micro-batch's activations (attention probabilities and logits included); doubled on each
    retry."""
    mb = 1500 + 24 * arch.n_params_total / 1e6
    if settings["gpus"] == 0:
        per_token = arch.n_layers * (12 * arch.d_model + 4 * arch.n_heads * arch.head_dim
                                     + 4 * arch.ffn_dim + 2 * arch.n_heads * seq_len) \
            + 4 * arch.vocab_size
        mb += 4 * per_token * settings["micro_batch_size"] * seq_len / 1e6
    return int(mb * attempt)


def evaluation_memory_mb(arch: Architecture, attempt: int = 1) -> int:
    """Host memory of an evaluation job: ~2 GB for torch, transformers and lm-eval, plus float32
    weights; doubled on each retry."""
    return int((2000 + 8 * arch.n_params_total / 1e6) * attempt)


# ---------------------------------------------------------------------------------------------
# The study plan (results/plan.csv, `archscale plan`)
# ---------------------------------------------------------------------------------------------

def study_plan_inputs(study: "Study") -> dict[str, Any]:
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


def study_plan(study: "Study", mfu: float = ASSUMED_MFU, gpu: str = TRAINING_GPU
               ) -> "pd.DataFrame":
    """One row per architecture, and a final TOTAL row."""
    return study_plan_from_inputs(study_plan_inputs(study), mfu=mfu, gpu=gpu)


def study_plan_from_inputs(inputs: Mapping[str, Any], mfu: float = ASSUMED_MFU,
                           gpu: str = TRAINING_GPU) -> "pd.DataFrame":
    """The plan table from `study_plan_inputs` (so the Snakemake rule needs no full config).

    Disk counts the token files (2 or 4 bytes a token) and one bf16 checkpoint per run plus one
    float32 resume state (weights + 2 Adam moments).
    """
    import pandas as pd

    if not 0 < mfu <= 1:
        raise CostError(f"--mfu must be in (0, 1], got {mfu}")
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
        rows.append({
            "architecture": name,
            "n_params_non_embedding": arch.n_params_non_embedding,
            "runs": runs,
            "train_tokens": sum(budgets) * len(seeds),
            "train_flops": flops,
            "gpu_hours": training_seconds(flops, device, 1, mfu) / 3600,
            "checkpoint_disk_gb": runs * (arch.n_params_total * 2 / 1e9),  # bf16, one a run
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


# ---------------------------------------------------------------------------------------------
# The frontier check's budget: a cost model fitted on the study's own jobs
# ---------------------------------------------------------------------------------------------

def duration_s(record: Mapping[str, Any]) -> float:
    """Wall seconds between a result's provenance `started` and `finished` timestamps."""
    prov = record.get("provenance") or {}
    try:
        start = _dt.datetime.fromisoformat(prov["started"])
        end = _dt.datetime.fromisoformat(prov["finished"])
    except (KeyError, TypeError, ValueError):
        return float("nan")
    return (end - start).total_seconds()


def training_flops(row: Mapping[str, Any], seq_len: int) -> float:
    """Training FLOPs per token of the shape in `row` (runs.csv or pareto.csv columns)."""
    return architecture_of(row, name=str(row.get("name", "shape"))).training_flops_per_token(seq_len)


def architecture_of(row: Mapping[str, Any], name: str, **extra: Any) -> Architecture:
    """The Architecture of a table row holding the shape columns and vocab_size."""
    shape = {f: int(row[f]) for f in SHAPE_FIELDS}
    return Architecture(name=name, **shape, vocab_size=int(row["vocab_size"]), **extra)


COST_FORMULA = ("hours = ((fixed_s + s_per_flop * train_flops) * train_devices + eval_s * "
                "eval_devices + measure_s * measure_devices) / 3600")


@dataclass(frozen=True)
class FittedJobCosts:
    """Device-hours of checking one frontier shape (train at `tokens`, evaluate, measure with
    one engine), from the study's own jobs: training wall time is a straight line in training
    FLOPs (wall_s = a + b * FLOPs, non-negative least squares over runs.csv); evaluation and
    measurement take the median duration of the study's own evaluate and throughput jobs."""

    fixed_s: float            # a: start-up seconds of a training job
    s_per_flop: float         # b: seconds per training FLOP
    eval_s: float             # median evaluate job
    measure_s: float          # median throughput job of the checking engine
    train_devices: int        # GPUs of a training job (its threads on a CPU study)
    eval_devices: int
    measure_devices: int

    @classmethod
    def fit(cls, runs: "pd.DataFrame", seq_len: int, eval_seconds: Iterable[float],
            measure_seconds: Iterable[float], train_devices: int, eval_devices: int,
            measure_devices: int) -> "FittedJobCosts":
        """Fit the training line on runs.csv (its wall_s and shapes), take median durations."""
        from scipy.optimize import nnls

        if runs.empty:
            raise CostError("runs.csv has no run to estimate validation costs from")
        flops = np.array([training_flops(row, seq_len) * float(row["tokens"])
                          for _, row in runs.iterrows()])
        wall = runs["wall_s"].to_numpy(float)
        if np.ptp(flops) > 0:
            (fixed, per_flop), _ = nnls(np.column_stack([np.ones_like(flops), flops]), wall)
        else:
            fixed, per_flop = 0.0, float(np.median(wall / flops))
        return cls(fixed_s=float(fixed), s_per_flop=float(per_flop),
                   eval_s=_median(eval_seconds, "evaluate"),
                   measure_s=_median(measure_seconds, "throughput"),
                   train_devices=int(train_devices), eval_devices=int(eval_devices),
                   measure_devices=int(measure_devices))

    @classmethod
    def from_study(cls, runs: "pd.DataFrame", settings: Mapping[str, Any],
                   eval_records: Iterable[Mapping[str, Any]],
                   measure_records: Iterable[Mapping[str, Any]]) -> "FittedJobCosts":
        """`fit` on a finished study: runs.csv, the eval.json and measurement records (their
        provenance times), and a checkpoint's params (seq_len and the three device counts)."""
        return cls.fit(runs, settings["seq_len"],
                       eval_seconds=[duration_s(r) for r in eval_records],
                       measure_seconds=[duration_s(r) for r in measure_records],
                       train_devices=settings["train_devices"],
                       eval_devices=settings["eval_devices"],
                       measure_devices=settings["measure_devices"])

    def describe(self) -> dict[str, Any]:
        """The fitted constants and the formula, as a plan file records them."""
        return {**self.__dict__, "formula": COST_FORMULA}

    def train_seconds(self, flops: float) -> float:
        return self.fixed_s + self.s_per_flop * flops

    def hours(self, flops: float) -> float:
        """Device-hours (GPU-hours; CPU thread-hours on a CPU study) of training (FLOPs),
        evaluating and measuring one shape: what the budget is spent in."""
        seconds = (self.train_seconds(flops) * self.train_devices
                   + self.eval_s * self.eval_devices + self.measure_s * self.measure_devices)
        return seconds / 3600.0

    def wall_hours(self, flops: float) -> float:
        """Wall-clock hours of the three jobs run one after the other."""
        return (self.train_seconds(flops) + self.eval_s + self.measure_s) / 3600.0


def _median(values: Iterable[float], what: str) -> float:
    finite = [v for v in values if v == v and v >= 0]
    if not finite:
        raise CostError(f"no {what} job of the study records its start and end time; "
                        f"rebuild them (snakemake --forcerun {what})")
    return float(np.median(finite))
