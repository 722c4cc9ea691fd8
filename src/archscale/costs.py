"""What a study's jobs cost: memory, run time, the study plan, and a frontier check's budget.

One module so every estimate rests on the same assumptions:
- Training time = training FLOPs (3x forward, attention included, see architecture.py) over
  (the device preset's dense bf16 peak x ASSUMED_MFU). That MFU is a stated assumption, not a
  measurement: the GPU check measures it on your GPU (benchmarks/gpu_check.sh, part
  train_mfu). On a CPU study a training job is assumed to run CPU_TOKENS_PER_S_PER_THREAD
  tokens/s per thread.
- Host memory of a job: the process (torch, transformers, lm-eval) plus bytes per parameter,
  and on a CPU one micro-batch's activations.
- GPU memory of a training job (`training_gpu_memory`): model states (divided over the ranks
  under fsdp), activations and logits, per GPU: the plan's gpu_memory_gb column.
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
from archscale.devices import Device, get_device
from archscale.settings import TrainingSettings

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

PROCESS_MB = 1500  # host memory of one process with torch and transformers loaded


def training_memory_mb(arch: Architecture, settings: Mapping[str, Any], seq_len: int,
                       attempt: int = 1) -> int:
    """Host memory of a training job on one node (SLURM's --mem), doubled on each retry.

    CPU: one process, 24 bytes a parameter (float32 weights, gradients, two Adam moments, the
    resume copy) and one micro-batch's activations (attention probabilities and logits
    included). GPU: PROCESS_MB for each rank on the node, plus the host copies of the model:
    ddp the same 24 bytes a parameter (rank 0 writes and every rank reads state.pt); fsdp 4
    bytes (rank 0 gathers the float32 weights for the final checkpoint) and the node's shards
    of the resume state that DCP stages in host memory (12 bytes a parameter over the nodes).
    """
    settings = TrainingSettings.complete(settings)  # the schema's defaults, not ours
    n = arch.n_params_total
    if settings["gpus"] == 0:
        per_token = arch.n_layers * (12 * arch.d_model + 4 * arch.n_heads * arch.head_dim
                                     + 4 * arch.ffn_dim + 2 * arch.n_heads * seq_len) \
            + 4 * arch.vocab_size
        mb = PROCESS_MB + 24 * n / 1e6 \
            + 4 * per_token * settings["micro_batch_size"] * seq_len / 1e6
    elif settings["parallel"] == "fsdp":
        mb = settings["gpus"] * PROCESS_MB + (4 + 12 / settings["nodes"]) * n / 1e6
    else:
        mb = settings["gpus"] * PROCESS_MB + 24 * n / 1e6
    return int(mb * attempt)


# ---------------------------------------------------------------------------------------------
# GPU memory of a training job
# ---------------------------------------------------------------------------------------------

# the training settings the GPU memory estimate reads (the plan's params, for GPU studies)
GPU_MEMORY_SETTINGS = ("gpus", "nodes", "parallel", "activation_checkpointing",
                       "micro_batch_size", "dtype")
ALLOCATOR_HEADROOM = 1.10  # PyTorch's caching allocator: fragmentation over what is allocated
GPU_RUNTIME_GB = 2.0       # CUDA context, NCCL buffers, cuBLAS workspaces: never allocated


@dataclass(frozen=True)
class GpuMemory:
    """The peak memory of one GPU of a training job, in bytes, by what holds it."""

    model_states: float  # float32 weights, gradients and AdamW moments (and DDP's buckets)
    gathered: float      # fsdp: unsharded units and their gradients in flight
    activations: float   # what the backward pass keeps, one micro-batch
    logits: float        # the micro-batch's logits and loss

    @property
    def allocated_gb(self) -> float:
        """What torch.cuda.max_memory_allocated would report."""
        return (self.model_states + self.gathered + self.activations + self.logits) / 1e9

    @property
    def total_gb(self) -> float:
        """What the GPU must hold: allocated, fragmentation and the CUDA runtime."""
        return ALLOCATOR_HEADROOM * self.allocated_gb + GPU_RUNTIME_GB


def training_gpu_memory(arch: Architecture, settings: Mapping[str, Any], seq_len: int
                        ) -> GpuMemory:
    """Memory per GPU of a training job under its parallel mode, from the shape and settings.

    Assumptions (an estimate, at the peak of one micro-batch's backward):
    - ranks R = gpus x nodes; compute in bf16 unless training.dtype is float32 (c = 2 or 4
      bytes a value).
    - Model states, 16 bytes a parameter (float32 weights 4, gradients 4, AdamW moments 8):
      whole on every GPU under ddp, plus DDP's gradient buckets (4) when R > 1; divided by R
      under fsdp.
    - fsdp also holds gathered units: the root (embeddings, LM head, final norm) stays
      gathered from the forward to the backward and keeps its gradient through the backward,
      two decoder layers are gathered at a time (one computing, one prefetched), and one unit's
      gradient is cast to float32 for the reduce-scatter: c (2 root + 2 layer) + (c + 4) x the
      larger unit.
    - Activations, bytes per token and layer: the two RMSNorms keep float32 inputs and outputs
      (16 d); attention its normalised input, q, k and v after RoPE, its output and o_proj's
      input, c (d + 3 q + 2 kv) with q = heads x head_dim, kv = kv_heads x head_dim; the
      SwiGLU MLP its input, gate, up, SiLU and product, c (d + 4 ffn). Flash or
      memory-efficient attention keeps no seq_len^2 matrix. One more layer's worth for the
      gradients in flight. With activation checkpointing, each layer keeps only its input (the
      residual stream: float32 under ddp's autocast, c under fsdp), plus one layer recomputed
      and its gradients.
    - Logits: micro_batch_size x seq_len x vocab values of c + 12 bytes (the logits, their
      float32 copy, the float32 log-probabilities kept for the backward, their gradient).
    """
    settings = TrainingSettings.complete(settings)  # the schema's defaults, not ours
    ranks = max(1, int(settings["gpus"])) * int(settings["nodes"])
    fsdp = settings["parallel"] == "fsdp"
    c = 4 if settings["dtype"] == "float32" else 2
    n = arch.n_params_total
    layer = arch.n_params_non_embedding / arch.n_layers + 2 * arch.d_model
    root = n - arch.n_layers * layer
    if fsdp:
        model_states = 16 * n / ranks
        gathered = c * (2 * root + 2 * layer) + (c + 4) * max(root, layer)
    else:
        model_states = (16 + (4 if ranks > 1 else 0)) * n
        gathered = 0.0
    d, q, kv = arch.d_model, arch.n_heads * arch.head_dim, arch.n_kv_heads * arch.head_dim
    per_layer = 16 * d + c * (d + 3 * q + 2 * kv) + c * (d + 4 * arch.ffn_dim)
    tokens = int(settings["micro_batch_size"]) * seq_len
    if settings.get("activation_checkpointing"):
        residual = c if fsdp else 4
        activations = tokens * (arch.n_layers * residual * d + 2 * per_layer)
    else:
        activations = tokens * (arch.n_layers + 1) * per_layer
    logits = tokens * arch.vocab_size * (c + 12)
    return GpuMemory(model_states=model_states, gathered=gathered, activations=activations,
                     logits=logits)


def gpu_memory_settings(settings: Mapping[str, Any]) -> dict[str, Any] | None:
    """The settings training_gpu_memory reads, or None for a CPU study (training.gpus 0),
    whose jobs use host memory only."""
    if not settings["gpus"]:
        return None
    return {key: settings[key] for key in GPU_MEMORY_SETTINGS if key in settings}


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
        "gpu_memory_settings": {n: gpu_memory_settings(study.training_settings(n))
                                for n in study.architectures},
    }


def study_plan(study: "Study", mfu: float = ASSUMED_MFU, gpu: str = TRAINING_GPU
               ) -> "pd.DataFrame":
    """One row per architecture, and a final TOTAL row."""
    return study_plan_from_inputs(study_plan_inputs(study), mfu=mfu, gpu=gpu)


def loop_round_cost(plan: "pd.DataFrame", loop: Mapping[str, Any]) -> dict[str, Any]:
    """What one round of the closed loop (config section `loop`) may cost, from the study plan,
    before any run: a round trains at most `runs_per_round` runs, each priced later by the
    study's fitted costs; here each is priced as the study's own runs are. `typical` is a round
    of runs like the study's median run, `most` a round of its costliest; a run one size above
    the largest (twice its parameters at the same tokens per parameter) costs about four times
    the costliest. The loop never spends more than `budget_hours` in all."""
    rows = plan[plan.architecture != "TOTAL"]
    per_run = (rows["gpu_hours"] / rows["runs"]).astype(float)
    n = int(loop["runs_per_round"])
    return {"runs_per_round": n, "rounds": int(loop["rounds"]),
            "budget_hours": float(loop["budget_hours"]),
            "typical_round_hours": n * float(per_run.median()),
            "most_round_hours": n * float(per_run.max()),
            "new_size_run_hours": 4 * float(per_run.max())}


def study_plan_from_inputs(inputs: Mapping[str, Any], mfu: float = ASSUMED_MFU,
                           gpu: str = TRAINING_GPU) -> "pd.DataFrame":
    """The plan table from `study_plan_inputs` (so the Snakemake rule needs no full config).

    Disk counts the token files (2 or 4 bytes a token) and one bf16 checkpoint per run plus one
    float32 resume state (weights + 2 Adam moments). gpu_memory_gb is one GPU of a training
    job (`training_gpu_memory`, with the architecture's parallel mode and GPUs); empty on a CPU
    study, and the largest in the TOTAL row.
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
        memory_settings = inputs["gpu_memory_settings"][name]
        rows.append({
            "architecture": name,
            "n_params_non_embedding": arch.n_params_non_embedding,
            "runs": runs,
            "train_tokens": sum(budgets) * len(seeds),
            "train_flops": flops,
            "gpu_hours": training_seconds(flops, device, 1, mfu) / 3600,
            "checkpoint_disk_gb": runs * (arch.n_params_total * 2 / 1e9),  # bf16, one a run
            "resume_disk_gb": arch.n_params_total * 12 / 1e9,  # peak, while one run is live
            "gpu_memory_gb": float("nan") if memory_settings is None else
            training_gpu_memory(arch, memory_settings, seq_len).total_gb,
            "jobs": runs * 2 + engines + 1,  # train + evaluate per run, throughput, config
        })
    table = pd.DataFrame(rows)
    max_tokens = max(max(b) for b in inputs["token_budgets"].values())
    token_bytes = token_dtype(inputs["vocab_size"]).itemsize
    total = {"architecture": "TOTAL", **table.drop(columns="architecture").sum().to_dict()}
    total["n_params_non_embedding"] = float("nan")
    total["gpu_memory_gb"] = table["gpu_memory_gb"].max()
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
