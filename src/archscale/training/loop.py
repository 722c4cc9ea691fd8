"""The trainer: one architecture, one token budget, one seed; resumable after kill -9.

A plain PyTorch loop over a flat token file (numpy.memmap): AdamW, warmup + cosine or WSD,
gradient clipping, gradient accumulation to a global batch given in tokens, bf16 autocast and
optional torch.compile on GPU, float32 on CPU, DDP when launched by torchrun.

What makes runs comparable and restartable:
- The token budget is met exactly: the run trains on ceil(tokens / seq_len) sequences and the
  last sequence's surplus targets are masked, so every run sees `tokens` predicted tokens.
- The data order is a pure function of (seed, sequence index): window k of epoch e is the k-th
  entry of a permutation seeded by (seed, e). The global batch is the same whatever the number
  of GPUs (ranks take interleaved slices of it), and a resumed run needs only the step number.
- The loss is summed over tokens and divided by the global batch's target count, so gradient
  accumulation and DDP give the gradient of the global-batch mean.
- Every `checkpoint_every_steps` (and on SIGTERM) the full state (model, optimizer, step,
  losses, log, RNG) is written atomically to a resume folder outside the rule's outputs; a rerun
  picks it up when its fingerprint (everything that decides the result) matches, and the folder
  is removed on success.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import math
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("archscale.training.loop")

# Training settings that change speed or bookkeeping but not the trained model: they are not
# Snakemake params, so changing them never reruns training (see rules/train.smk).
RESULT_FREE_SETTINGS = frozenset({"seeds", "threads", "gpus", "checkpoint_every_steps",
                                  "compile"})
STATE_FILE = "state.pt"
RESUME_DIR = "results/resume/{arch}/{tokens}/seed{seed}"  # not a rule output: see docs/training.md
STATE_VERSION = 1


class TrainError(ValueError):
    """A training setup that cannot run as configured; the message says what to change."""


def resume_dir(arch: str, tokens: int, seed: int) -> str:
    """Where a run keeps its resume state (relative to the workflow directory)."""
    return RESUME_DIR.format(arch=arch, tokens=tokens, seed=seed)


def result_settings(settings: dict[str, Any]) -> dict[str, Any]:
    """The training settings that decide the result (the rule's params)."""
    return {k: v for k, v in settings.items() if k not in RESULT_FREE_SETTINGS}


# ---------------------------------------------------------------------------------------------
# Learning rate
# ---------------------------------------------------------------------------------------------

def learning_rate(settings: dict[str, Any], d_model: int) -> dict[str, Any]:
    """The peak learning rate for a width under training.lr_rule, with its derivation.

    inverse_width: lr * (base_d_model / d_model) ** exponent; exponent 1 (the default) is the
    muP scaling of hidden-layer Adam learning rates, so a wide and a narrow variant at one N are
    each trained near their own optimum; constant: the same lr for every width.
    docs/training.md explains why this matters for the d/sqrt(N) curve.
    """
    rule = settings.get("lr_rule") or {}
    kind = rule.get("kind", "inverse_width")
    base_lr = float(settings["lr"])
    base_d = int(rule.get("base_d_model", 64))
    exponent = float(rule.get("exponent", 1.0))
    if kind == "constant":
        lr, exponent = base_lr, 0.0
        formula = "lr"
    elif kind == "mup":
        lr = base_lr * (base_d / d_model) ** exponent
        formula = (f"hidden matrices lr * ({base_d} / d_model) ** {exponent:g}; embeddings and "
                   "norms lr")
    elif kind == "inverse_width":
        lr = base_lr * (base_d / d_model) ** exponent
        formula = f"lr * {base_d} / d_model" if exponent == 1.0 else \
            f"lr * ({base_d} / d_model) ** {exponent:g}"
    else:
        raise TrainError(f"training.lr_rule.kind: unknown rule {kind!r}; use constant, "
                         "inverse_width or mup")
    return {"lr": lr, "rule": kind, "formula": formula, "base_lr": base_lr,
            "base_d_model": base_d, "exponent": exponent, "d_model": int(d_model),
            "embedding_lr": base_lr if kind == "mup" else lr}


def lr_at(step: int, steps: int, peak: float, settings: dict[str, Any]) -> float:
    """Learning rate for 0-based `step` of `steps`: linear warmup, then cosine or WSD decay.

    Decay ends at min_lr_ratio * peak on the last step.
    """
    warmup = int(round(settings.get("warmup_fraction", 0.05) * steps))
    floor = settings.get("min_lr_ratio", 0.1) * peak
    if step < warmup:
        return peak * (step + 1) / warmup
    schedule = settings.get("schedule", "cosine")
    if schedule == "cosine":
        span = steps - warmup
        progress = (step - warmup + 1) / span if span > 0 else 1.0
        return floor + (peak - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))
    if schedule == "wsd":
        decay = max(1, int(round(settings.get("decay_fraction", 0.2) * steps)))
        start = max(warmup, steps - decay)
        if step < start:
            return peak
        progress = (step - start + 1) / (steps - start)
        return peak - (peak - floor) * progress
    raise TrainError(f"training.schedule: unknown schedule {schedule!r}; use cosine or wsd")


# ---------------------------------------------------------------------------------------------
# Batch geometry and data order
# ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Plan:
    """How a token budget becomes steps of sequences."""

    tokens: int            # predicted tokens to train on (the budget)
    seq_len: int
    batch_seqs: int        # sequences per optimizer step (global, all ranks)
    micro_batch_size: int  # sequences per forward pass per rank
    total_seqs: int        # ceil(tokens / seq_len)
    steps: int
    n_windows: int         # distinct seq_len+1 windows in train.bin (one epoch)
    train_tokens: int      # tokens in train.bin

    @classmethod
    def make(cls, tokens: int, seq_len: int, settings: dict[str, Any], train_tokens: int
             ) -> "Plan":
        if tokens < 1:
            raise TrainError(f"token budget must be positive, got {tokens}")
        batch_seqs = settings["global_batch_tokens"] // seq_len
        if batch_seqs < 1:
            raise TrainError(f"training.global_batch_tokens ({settings['global_batch_tokens']}) "
                             f"is smaller than one sequence (data.seq_len {seq_len}); raise it")
        n_windows = (train_tokens - 1) // seq_len
        if n_windows < 1:
            raise TrainError(f"train.bin holds {train_tokens} tokens, fewer than one sequence "
                             f"of {seq_len + 1}; point data.source at more text")
        total_seqs = -(-tokens // seq_len)
        if total_seqs > n_windows and not settings.get("allow_repeats", True):
            raise TrainError(
                f"the token budget {tokens:,} needs {total_seqs:,} sequences but train.bin "
                f"has {n_windows:,} (one epoch = {n_windows * seq_len:,} tokens) and "
                "training.allow_repeats is false; lower the budget, add data, or allow repeats")
        return cls(tokens=tokens, seq_len=seq_len, batch_seqs=batch_seqs,
                   micro_batch_size=int(settings["micro_batch_size"]), total_seqs=total_seqs,
                   steps=-(-total_seqs // batch_seqs), n_windows=n_windows,
                   train_tokens=train_tokens)

    def step_sequences(self, step: int) -> range:
        """Global sequence indices of one optimizer step."""
        first = step * self.batch_seqs
        return range(first, min(first + self.batch_seqs, self.total_seqs))

    def targets_in(self, seqs: range) -> int:
        """Predicted (unmasked) tokens in a range of global sequence indices."""
        return max(0, min(seqs.stop * self.seq_len, self.tokens) - seqs.start * self.seq_len)

    def tokens_after(self, steps_done: int) -> int:
        return min(steps_done * self.batch_seqs * self.seq_len, self.tokens)

    @property
    def epochs(self) -> float:
        return self.tokens / self.train_tokens


class DataOrder:
    """Window start offsets for global sequence indices: a fresh permutation per epoch."""

    def __init__(self, n_windows: int, seq_len: int, seed: int) -> None:
        self.n_windows, self.seq_len, self.seed = n_windows, seq_len, seed
        self._cache: dict[int, np.ndarray] = {}

    def _perm(self, epoch: int) -> np.ndarray:
        if epoch not in self._cache:
            self._cache = {epoch: np.random.default_rng([self.seed, epoch]).permutation(
                self.n_windows)}
        return self._cache[epoch]

    def starts(self, indices: np.ndarray) -> np.ndarray:
        out = np.empty(len(indices), dtype=np.int64)
        epochs = indices // self.n_windows
        for epoch in np.unique(epochs):
            mask = epochs == epoch
            out[mask] = self._perm(int(epoch))[indices[mask] % self.n_windows] * self.seq_len
        return out


def read_batch(tokens: np.ndarray, order: DataOrder, plan: Plan, indices: np.ndarray
               ) -> tuple["torch.Tensor", "torch.Tensor"]:
    """Inputs and targets (int64) for global sequence indices; surplus targets set to -100."""
    import torch

    starts = order.starts(indices)
    width = plan.seq_len + 1
    block = np.stack([tokens[s:s + width] for s in starts]).astype(np.int64)
    x = torch.from_numpy(block[:, :-1])
    y = torch.from_numpy(block[:, 1:].copy())
    surplus = (indices + 1) * plan.seq_len - plan.tokens
    for row in np.nonzero(surplus > 0)[0]:
        y[row, plan.seq_len - int(surplus[row]):] = -100
    return x, y


# ---------------------------------------------------------------------------------------------
# The job
# ---------------------------------------------------------------------------------------------

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


@dataclass
class Dist:
    """This process's place in a (possibly single-process) DDP job."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def _init_distributed(use_cuda: bool) -> Dist:
    """Join the process group when launched by torchrun (WORLD_SIZE set), else a single process."""
    import torch
    import torch.distributed as td

    if "WORLD_SIZE" not in os.environ:
        return Dist()
    dist = Dist(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]),
                int(os.environ.get("LOCAL_RANK", 0)))
    if use_cuda:
        torch.cuda.set_device(dist.local_rank)
    td.init_process_group(backend="nccl" if use_cuda else "gloo")
    return dist


def _autocast(device: "torch.device", dtype_setting: str):
    import torch

    if dtype_setting == "bfloat16" or (dtype_setting == "auto" and device.type == "cuda"):
        return torch.autocast(device.type, dtype=torch.bfloat16), "bfloat16"
    return contextlib.nullcontext(), "float32"


def _optimizer(model: "torch.nn.Module", settings: dict[str, Any], lr_info: dict[str, Any],
               fused: bool):
    """AdamW with weight decay on matrices and embeddings only (not on norm gains).

    Each group carries `lr_scale`, its learning rate relative to the schedule's peak `lr`:
    1 except under the mup rule, where embeddings and norms keep the base lr.
    """
    import torch

    embeddings = {id(p) for m in model.modules() if isinstance(m, torch.nn.Embedding)
                  for p in m.parameters()}
    params = [p for p in model.parameters() if p.requires_grad]
    hidden = [p for p in params if p.dim() >= 2 and id(p) not in embeddings]
    embed = [p for p in params if id(p) in embeddings]
    norms = [p for p in params if p.dim() < 2]
    other_scale = lr_info["embedding_lr"] / lr_info["lr"]
    decay = float(settings["weight_decay"])
    groups = [{"params": hidden, "weight_decay": decay, "lr_scale": 1.0},
              {"params": embed, "weight_decay": decay, "lr_scale": other_scale},
              {"params": norms, "weight_decay": 0.0, "lr_scale": other_scale}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=lr_info["lr"],
                             betas=(settings["beta1"], settings["beta2"]), eps=1e-8,
                             fused=fused)


def _load_state(job: TrainJob, fingerprint: str, device: "torch.device") -> dict | None:
    import torch

    path = Path(job.resume_dir) / STATE_FILE
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:  # a state from another torch version, or a foreign file
        log.warning("ignoring unreadable resume state %s (%s); starting from step 0", path, exc)
        return None
    if state.get("fingerprint") != fingerprint:
        log.warning("resume state %s belongs to other settings (fingerprint %s, this run %s); "
                    "starting from step 0", path, state.get("fingerprint"), fingerprint)
        return None
    return state


def _save_state(job: TrainJob, state: dict[str, Any]) -> None:
    import torch

    from archscale.io import atomic_path

    with atomic_path(Path(job.resume_dir) / STATE_FILE) as tmp:
        torch.save(state, tmp)


LOG_COLUMNS = ("step", "tokens", "loss", "lr", "tokens_per_s")


def write_log_csv(path: str | os.PathLike, rows: list[dict[str, Any]]) -> None:
    """train_log.csv, atomically (csv module: GPU nodes may lack pandas)."""
    import csv
    import io as _io

    from archscale.io import write_text

    buffer = _io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=LOG_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: row[k] for k in LOG_COLUMNS} for row in rows)
    write_text(path, buffer.getvalue())


class _StopOnSigterm:
    """Turn SIGTERM (SLURM's time-limit or preemption warning) into 'save state after this
    step, then exit', so a resumed run loses no steps. Single-process runs only: under DDP the
    ranks would see the signal at different steps, so they rely on the periodic states."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled and threading.current_thread() is threading.main_thread()
        self.requested = False
        self._previous = None

    def __enter__(self) -> "_StopOnSigterm":
        if self.enabled:
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        if self.enabled:
            signal.signal(signal.SIGTERM, self._previous)

    def _handle(self, signum, frame) -> None:
        self.requested = True


def _select_device() -> "torch.device":
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")



def _remove_empty_parents(folder: Path, stop_after: int) -> None:
    """Remove results/resume/{arch}/{tokens}/ folders left empty (at most `stop_after` levels)."""
    for _ in range(stop_after):
        try:
            folder.rmdir()  # only succeeds when empty; another run's state is never touched
        except OSError:
            return
        folder = folder.parent


def run(job: TrainJob) -> dict[str, Any] | None:
    """Train to the token budget, save the checkpoint, log and metrics; rank 0 returns metrics."""
    import torch
    import torch.distributed as td
    import torch.nn.functional as F

    from archscale.data.corpus import load_tokens
    from archscale.training.model import build_model, gpu_peak_tflops, mfu, save_checkpoint, \
        training_flops_per_token, unwrap
    from archscale.provenance import now, provenance

    wall0 = time.perf_counter()
    started = now()
    settings = job.settings
    device = _select_device()
    dist = _init_distributed(device.type == "cuda")
    if device.type == "cuda":
        device = torch.device("cuda", dist.local_rank)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    else:
        torch.set_num_threads(max(1, int(job.threads)))
        torch.use_deterministic_algorithms(True, warn_only=True)

    arch = json.loads(Path(job.arch_config).read_text())
    tokens = load_tokens(job.train_bin, job.meta)
    plan = Plan.make(int(job.tokens), int(job.seq_len), settings, len(tokens))
    order = DataOrder(plan.n_windows, plan.seq_len, int(job.seed))
    lr_info = learning_rate(settings, int(arch["hidden_size"]))
    peak = lr_info["lr"]

    model = build_model(arch, seed=int(job.seed), init_std=settings["init_std"]).to(device)
    model.train()
    optimizer = _optimizer(model, settings, lr_info, fused=device.type == "cuda")
    fingerprint = job.fingerprint()
    state = _load_state(job, fingerprint, device)
    losses = torch.zeros(plan.steps, dtype=torch.float64, device=device)
    rows: list[dict[str, Any]] = []
    resumes: list[int] = []
    start_step, prior_train_s, prior_wall_s = 0, 0.0, 0.0
    if state is not None:
        unwrap(model).load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start_step = int(state["step"])
        losses[:start_step] = state["losses"][:start_step].to(device)
        rows = list(state["log_rows"])
        resumes = list(state["resumes"]) + [start_step]
        prior_train_s, prior_wall_s = float(state["train_s"]), float(state["wall_s"])
        torch.set_rng_state(state["rng_cpu"].cpu())
        if device.type == "cuda" and "rng_cuda" in state:
            torch.cuda.set_rng_state(state["rng_cuda"].cpu(), device)
        if dist.main:
            log.info("resuming from step %d of %d (%s)", start_step, plan.steps,
                     Path(job.resume_dir) / STATE_FILE)
    # DDP wraps the model, then compile wraps DDP (so DDP's gradient buckets overlap the
    # compiled backward); no_sync is taken from the DDP object itself
    train_model: torch.nn.Module = model
    ddp = None
    if dist.world > 1:
        from torch.nn.parallel import DistributedDataParallel

        ddp = train_model = DistributedDataParallel(
            model, device_ids=[dist.local_rank] if device.type == "cuda" else None)
    if settings.get("compile") and device.type == "cuda":
        train_model = torch.compile(train_model)
    autocast, compute_dtype = _autocast(device, settings.get("dtype", "auto"))
    vocab = int(arch["vocab_size"])
    clip = float(settings.get("grad_clip", 0.0))
    log_every = int(settings["log_every_steps"])
    ckpt_every = int(settings["checkpoint_every_steps"])
    reduced_upto = start_step

    def flush_losses(upto: int) -> None:
        """Make losses[reduced_upto:upto] global (a collective: every rank calls it together)."""
        nonlocal reduced_upto
        if dist.world > 1 and upto > reduced_upto:
            pending = losses[reduced_upto:upto].clone()
            td.all_reduce(pending)
            losses[reduced_upto:upto] = pending
        reduced_upto = max(reduced_upto, upto)

    if dist.main:
        log.info("training %s: %d steps x %d sequences of %d tokens (%d tokens, %.3f epochs), "
                 "micro-batch %d, %d rank(s), lr %.3g (%s), device %s, %s",
                 job.label.get("arch", Path(job.arch_config).parent.name), plan.steps,
                 plan.batch_seqs, plan.seq_len, plan.tokens, plan.epochs,
                 plan.micro_batch_size, dist.world, peak, lr_info["formula"], device,
                 compute_dtype)
    loop_t0 = time.perf_counter()
    # the logged loss averages the steps since the previous log row (restored on resume, so a
    # resumed run writes the same train_log.csv losses); the rate covers this process's steps
    interval_t0, interval_tokens0 = loop_t0, plan.tokens_after(start_step)
    interval_step0 = int(rows[-1]["step"]) if rows else 0
    with _StopOnSigterm(enabled=dist.world == 1) as stop:
        for step in range(start_step, plan.steps):
            lr = lr_at(step, plan.steps, peak, settings)
            for group in optimizer.param_groups:
                group["lr"] = lr * group["lr_scale"]
            seqs = plan.step_sequences(step)
            n_targets = plan.targets_in(seqs)
            mine = np.arange(seqs.start, seqs.stop, dtype=np.int64)[dist.rank::dist.world]
            chunks = [mine[i:i + plan.micro_batch_size]
                      for i in range(0, len(mine), plan.micro_batch_size)]
            scale = dist.world / n_targets
            if not chunks:  # fewer sequences than ranks on the last step: join the all-reduce
                chunks, scale = [np.array([seqs.start], dtype=np.int64)], 0.0
            step_loss = torch.zeros((), dtype=torch.float64, device=device)
            for i, chunk in enumerate(chunks):
                x, y = read_batch(tokens, order, plan, chunk)
                x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
                sync = ddp is None or i == len(chunks) - 1
                context = contextlib.nullcontext() if sync else ddp.no_sync()
                with context:
                    with autocast:
                        logits = train_model(input_ids=x, use_cache=False).logits
                    loss_sum = F.cross_entropy(logits.float().view(-1, vocab), y.view(-1),
                                               ignore_index=-100, reduction="sum")
                    (loss_sum * scale).backward()
                step_loss += loss_sum.detach().double()
            if clip > 0:
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            losses[step] = step_loss * (scale / dist.world)
            done = step + 1
            is_last = done == plan.steps
            if done % log_every == 0 or is_last:
                flush_losses(done)
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                t = time.perf_counter()
                tok_done = plan.tokens_after(done)
                rate = (tok_done - interval_tokens0) / max(t - interval_t0, 1e-9)
                row = {"step": done, "tokens": tok_done,
                       "loss": float(losses[interval_step0:done].mean()), "lr": lr,
                       "tokens_per_s": round(rate, 1)}
                rows.append(row)
                if dist.main:
                    eta = (plan.tokens - tok_done) / rate if rate > 0 else float("nan")
                    log.info("step %d/%d tokens %d/%d loss %.4f lr %.3g %.0f tok/s ETA %.0fs",
                             done, plan.steps, tok_done, plan.tokens, row["loss"], lr, rate, eta)
                interval_t0, interval_tokens0, interval_step0 = t, tok_done, done
            if (done % ckpt_every == 0 or stop.requested) and not is_last:
                flush_losses(done)
                if dist.main:
                    _save_state(job, {
                        "version": STATE_VERSION, "fingerprint": fingerprint, "step": done,
                        "model": unwrap(model).state_dict(), "optimizer": optimizer.state_dict(),
                        "losses": losses[:done].cpu(), "log_rows": rows, "resumes": resumes,
                        "train_s": prior_train_s + time.perf_counter() - loop_t0,
                        "wall_s": prior_wall_s + time.perf_counter() - wall0,
                        "rng_cpu": torch.get_rng_state(),
                        **({"rng_cuda": torch.cuda.get_rng_state(device)}
                           if device.type == "cuda" else {})})
                if dist.world > 1:
                    td.barrier()
                if stop.requested:
                    log.warning("SIGTERM: state saved at step %d of %d in %s; exiting (a rerun "
                                "resumes from it)", done, plan.steps, job.resume_dir)
                    raise SystemExit(128 + signal.SIGTERM)
    flush_losses(plan.steps)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    train_s = prior_train_s + time.perf_counter() - loop_t0
    metrics = None
    if dist.main:
        save_checkpoint(model, job.model_dir, job.tokenizer_dir)
        from archscale.io import write_json

        write_log_csv(job.log_csv, rows)
        all_losses = losses.cpu().numpy()
        tail = max(1, int(round(0.1 * plan.steps)))
        tokens_per_s = plan.tokens / train_s if train_s > 0 else None
        flops = training_flops_per_token(arch, plan.seq_len)
        device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
        peak_tflops = gpu_peak_tflops(device_name) if device.type == "cuda" else None
        metrics = {
            "arch": job.label.get("arch", Path(job.arch_config).parent.name),
            "tokens_budget": plan.tokens, "tokens_seen": plan.tokens, "seed": int(job.seed),
            "steps": plan.steps, "seq_len": plan.seq_len,
            "global_batch_tokens": plan.batch_seqs * plan.seq_len,
            "micro_batch_size": plan.micro_batch_size,
            "grad_accum_steps": -(-plan.batch_seqs // (plan.micro_batch_size * dist.world)),
            "world_size": dist.world,
            "epochs": plan.epochs, "train_bin_tokens": plan.train_tokens,
            "train_loss": float(all_losses[-tail:].mean()),
            "train_loss_steps": tail,
            "final_step_loss": float(all_losses[-1]),
            "wall_s": round(prior_wall_s + time.perf_counter() - wall0, 3),
            "train_s": round(train_s, 3),
            "tokens_per_s": round(tokens_per_s, 1) if tokens_per_s else None,
            "flops_per_token": flops,
            "peak_tflops": peak_tflops,
            "mfu": mfu(tokens_per_s or 0.0, flops, peak_tflops, dist.world),
            "device": device_name, "compute_dtype": compute_dtype,
            "compiled": bool(settings.get("compile") and device.type == "cuda"),
            "threads": int(job.threads) if device.type == "cpu" else None,
            "lr": lr_info, "schedule": settings.get("schedule", "cosine"),
            "resumed_from_steps": resumes,
            "provenance": provenance(
                settings={"training": result_settings(settings), "tokens": plan.tokens,
                          "seed": int(job.seed), "seq_len": plan.seq_len, **job.label},
                inputs=[job.arch_config, job.meta,
                        str(Path(job.tokenizer_dir) / "tokenizer.json")],
                started=started, packages=("numpy", "torch", "transformers", "safetensors")),
        }
        write_json(job.metrics_json, metrics)
        shutil.rmtree(job.resume_dir, ignore_errors=True)
        _remove_empty_parents(Path(job.resume_dir).parent, stop_after=3)
        log.info("done: train loss %.4f, %.0f tok/s, %.1f s", metrics["train_loss"],
                 metrics["tokens_per_s"] or 0, metrics["wall_s"])
    if dist.world > 1:
        td.barrier()
        td.destroy_process_group()
    return metrics


# ---------------------------------------------------------------------------------------------
# Launching: in-process, or through torchrun for several GPUs
# ---------------------------------------------------------------------------------------------

def launch_torchrun(job: TrainJob, nproc: int, timeout: float | None = None) -> None:
    """Run the job as `nproc` DDP processes through torchrun (one node, free port)."""
    spec = Path(job.resume_dir) / "job.json"
    from archscale.io import write_text

    write_text(spec, job.to_json())
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc_per_node={nproc}", "-m", "archscale.training.loop", "--job", str(spec)]
    log.info("launching: %s", " ".join(cmd))
    sys.stdout.flush()
    sys.stderr.flush()
    package_root = str(Path(__file__).resolve().parents[2])  # ranks import this very package
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (package_root, os.environ.get("PYTHONPATH")) if p))
    proc = subprocess.run(cmd, stdout=sys.stdout, stderr=sys.stderr, timeout=timeout, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"torchrun exited with status {proc.returncode}; the per-rank "
                           "tracebacks are above in this log. The resume state in "
                           f"{job.resume_dir} is kept, so rerunning continues from it")


def execute(job: TrainJob, gpus: int = 0) -> None:
    """Train in this process, or through torchrun when a job has more than one GPU."""
    if gpus > 1:
        launch_torchrun(job, gpus)
    else:
        run(job)


def main(argv: list[str] | None = None) -> int:
    """`python -m archscale.training.loop --job job.json` (what torchrun runs on every rank)."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--job", required=True, help="a TrainJob as JSON (TrainJob.to_json)")
    args = parser.parse_args(argv)
    root = logging.getLogger("archscale")
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        rank = os.environ.get("RANK")
        prefix = f"[rank {rank}] " if rank is not None else ""
        handler.setFormatter(logging.Formatter(f"%(asctime)s {prefix}%(message)s"))
        root.addHandler(handler)
        root.setLevel(logging.INFO)
    run(TrainJob.from_json(Path(args.job).read_text()))
    return 0


if __name__ == "__main__":
    sys.exit(main())

