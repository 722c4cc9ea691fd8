"""The trainer: one architecture, one token budget, one seed; resumable after kill -9.

A plain PyTorch loop over a flat token file (numpy.memmap): AdamW, warmup + cosine or WSD,
gradient clipping, gradient accumulation to a global batch given in tokens, bf16 autocast and
optional torch.compile on GPU, float32 on CPU, DDP or FSDP2 when launched by torchrun
(training.parallel, archscale.training.parallel), optional activation checkpointing.

What makes runs comparable and restartable:
- The token budget is met exactly: the run trains on ceil(tokens / seq_len) sequences and the
  last sequence's surplus targets are masked, so every run sees `tokens` predicted tokens
  (archscale.training.schedule.Schedule: the run's steps and batches).
- The data order is a pure function of (seed, sequence index): window k of epoch e is the k-th
  entry of a permutation seeded by (seed, e). The global batch is the same whatever the number
  of GPUs (ranks take interleaved slices of it), and a resumed run needs only the step number
  (archscale.training.schedule.DataOrder).
- The loss is summed over tokens and divided by the global batch's target count, so gradient
  accumulation, DDP and FSDP give the gradient of the global-batch mean.
- Every `checkpoint_every_steps` (and on SIGTERM) the full state (model, optimizer, step,
  losses, log, RNG) is written atomically to a resume folder outside the rule's outputs; a rerun
  picks it up when its fingerprint (everything that decides the result,
  archscale.training.job) matches, and the folder is removed on success
  (archscale.training.state; sharded through torch.distributed.checkpoint under fsdp,
  archscale.training.sharded_state, so it resumes on any number of ranks).

`run(job)` trains in this process, in steps: set-up (with activation checkpointing and, under
fsdp, sharding), restore, wrapping (DDP, compile), the train steps with their log rows and saved
states, the final weights, final metrics, clean-up. Launching a job, in-process or through
torchrun for several GPUs, is archscale.training.launch. This module holds only the run and its
steps; what they are made of sits below it: the job (job), the schedule and data order
(schedule), the device and process group (distributed), the optimizer (optimizer), the log file
(train_log) and the resume state (state, sharded_state).
"""
from __future__ import annotations

import contextlib
import json
import logging
import math
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from archscale.training.distributed import Dist, leaving_process_group, \
    select_device_and_dist, wait_for_rank_0
from archscale.training.job import DivergedError, TrainJob, result_settings
from archscale.training.optimizer import make_optimizer
from archscale.training.schedule import DataOrder, Schedule, learning_rate, lr_at, read_batch
from archscale.training.state import STATE_FILE, load_state, remove_state, save_state, \
    training_progress, training_state
from archscale.training.train_log import write_log_csv

if TYPE_CHECKING:
    import torch

log = logging.getLogger("archscale.training.loop")


def _compute_dtype(device: "torch.device", dtype_setting: str) -> str:
    """training.dtype resolved: auto is bfloat16 on GPU, float32 on CPU."""
    if dtype_setting == "bfloat16" or (dtype_setting == "auto" and device.type == "cuda"):
        return "bfloat16"
    return "float32"


def _autocast(device: "torch.device", compute_dtype: str):
    """bf16 autocast over the float32 weights (single process and DDP), or no context."""
    import torch

    if compute_dtype == "bfloat16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


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


# ---------------------------------------------------------------------------------------------
# run(job), in steps
# ---------------------------------------------------------------------------------------------

@dataclass
class Setup:
    """What one attempt at a run trains with (made once by _set_up)."""

    job: TrainJob
    device: "torch.device"
    dist: Dist
    arch: dict[str, Any]                # the model's config.json
    tokens: np.ndarray                  # train.bin (a numpy.memmap)
    schedule: Schedule
    order: DataOrder
    lr_info: dict[str, Any]             # learning_rate(): the peak lr and its derivation
    parallel: str                       # training.parallel: ddp or fsdp
    compute_dtype: str                  # bfloat16 or float32
    model: "torch.nn.Module"            # the HF model, sharded in place under fsdp (DDP and
    #                                     compile wrap it in _wrap: Wrapped)
    optimizer: "torch.optim.Optimizer"
    fingerprint: str                    # TrainJob.fingerprint(): a resume state must match it
    started: str                        # provenance start time
    wall0: float                        # time.perf_counter() when this attempt started

    @property
    def settings(self) -> dict[str, Any]:
        return self.job.settings

    @property
    def sharded(self) -> bool:
        """FSDP2: sharded parameters, and a sharded resume state (sharded_state)."""
        return self.parallel == "fsdp"


@dataclass
class Progress:
    """Where the run stands: restored from a resume state, then advanced by every step."""

    losses: "torch.Tensor"              # per step (float64); global up to reduced_upto
    rows: list[dict[str, Any]] = field(default_factory=list)  # train_log.csv rows so far
    resumes: list[int] = field(default_factory=list)  # the step each attempt resumed from
    start_step: int = 0                 # the first step of this attempt
    prior_train_s: float = 0.0          # training and wall time of the earlier attempts
    prior_wall_s: float = 0.0
    reduced_upto: int = 0               # losses[:reduced_upto] are all-reduced over the ranks
    loop_t0: float = 0.0                # time.perf_counter() when this attempt's loop started
    # the logged loss averages the steps since the previous log row (restored on resume, so a
    # resumed run writes the same train_log.csv losses); the rate covers this process's steps
    interval_t0: float = 0.0
    interval_tokens0: int = 0
    interval_step0: int = 0


@dataclass
class Wrapped:
    """The model as trained: Setup.model inside DDP and/or torch.compile, and its precision."""

    train_model: "torch.nn.Module"
    ddp: Any                            # the DistributedDataParallel object, or None
    autocast: Any                       # a context manager (bf16 autocast or a null context)
    compute_dtype: str
    compiled: bool


def _set_up(job: TrainJob) -> Setup:
    """Device, process group, data, schedule, model and optimizer of a fresh attempt.

    The model is prepared in place before the optimizer sees its parameters: activation
    checkpointing, and under fsdp per-layer compile and FSDP2 sharding."""
    from archscale.data.corpus import load_tokens
    from archscale.provenance import now
    from archscale.training.model import build_model
    from archscale.training.parallel import (enable_activation_checkpointing, parallel_mode,
                                             shard_model)

    wall0 = time.perf_counter()
    started = now()
    settings = job.settings
    parallel = parallel_mode(settings)
    arch = json.loads(Path(job.arch_config).read_text())
    tokens = load_tokens(job.train_bin, job.meta)
    schedule = Schedule.make(int(job.tokens), int(job.seq_len), settings, len(tokens))
    order = DataOrder(schedule.n_windows, schedule.seq_len, int(job.seed))
    lr_info = learning_rate(settings, int(arch["hidden_size"]))
    device, dist = select_device_and_dist(job.threads, parallel)  # after the checks that may refuse
    compute_dtype = _compute_dtype(device, settings["dtype"])
    model = build_model(arch, seed=int(job.seed), init_std=settings["init_std"]).to(device)
    model.train()
    if settings["activation_checkpointing"]:
        enable_activation_checkpointing(model)
    if parallel == "fsdp":
        shard_model(model, device, dist.world, compute_dtype,
                    compile_layers=_compiles(settings, device))
    optimizer = make_optimizer(model, settings, lr_info, fused=device.type == "cuda")
    return Setup(job=job, device=device, dist=dist, arch=arch, tokens=tokens,
                 schedule=schedule, order=order, lr_info=lr_info, parallel=parallel,
                 compute_dtype=compute_dtype, model=model, optimizer=optimizer,
                 fingerprint=job.fingerprint(), started=started, wall0=wall0)


def _load_resume_state(s: Setup) -> dict[str, Any] | None:
    """The resume state's progress, with the model and optimizer loaded from it (state.pt, or
    the sharded state under fsdp); None when there is none for this run."""
    from archscale.training.model import unwrap
    from archscale.training.sharded_state import latest_step_folder, load_sharded_state

    if s.sharded:
        state = load_sharded_state(s.job, s.fingerprint, s.model, s.optimizer)
        other_kind = (Path(s.job.resume_dir) / STATE_FILE).exists()
    else:
        state = load_state(s.job, s.fingerprint, s.device)
        if state is not None:
            unwrap(s.model).load_state_dict(state["model"])
            s.optimizer.load_state_dict(state["optimizer"])
        other_kind = latest_step_folder(s.job) is not None
    if state is None and other_kind and s.dist.main:
        log.warning("%s holds a resume state of the other training.parallel mode, which this "
                    "%s run does not read: starting from step 0", s.job.resume_dir, s.parallel)
    return state


def _restore(s: Setup) -> Progress:
    """Step 0, or the job's resume state: model, optimizer, losses, log rows, times and RNG."""
    import torch

    state = _load_resume_state(s)
    p = Progress(losses=torch.zeros(s.schedule.steps, dtype=torch.float64, device=s.device))
    if state is not None:
        p.start_step = int(state["step"])
        p.losses[:p.start_step] = state["losses"][:p.start_step].to(s.device)
        p.rows = list(state["log_rows"])
        p.resumes = list(state["resumes"]) + [p.start_step]
        p.prior_train_s, p.prior_wall_s = float(state["train_s"]), float(state["wall_s"])
        torch.set_rng_state(state["rng_cpu"].cpu())
        if s.device.type == "cuda" and "rng_cuda" in state:
            torch.cuda.set_rng_state(state["rng_cuda"].cpu(), s.device)
        if s.dist.main:
            log.info("resuming from step %d of %d (%s)", p.start_step, s.schedule.steps,
                     s.job.resume_dir if s.sharded else Path(s.job.resume_dir) / STATE_FILE)
    p.reduced_upto = p.start_step
    return p


def _compiles(settings: dict[str, Any], device: "torch.device") -> bool:
    """torch.compile is used on GPU only (CPU runs stay eager and deterministic)."""
    return bool(settings["compile"] and device.type == "cuda")


def _wrap(s: Setup) -> Wrapped:
    """ddp: DDP wraps the model, then compile wraps DDP (so DDP's gradient buckets overlap the
    compiled backward); no_sync is taken from the DDP object itself. fsdp: the model was
    sharded (and its layers compiled) in _set_up, and FSDP2's mixed-precision policy casts the
    parameters to bf16, so there is nothing to wrap and no autocast."""
    import torch

    from archscale.training.parallel import replicate_model

    compiled = _compiles(s.settings, s.device)
    if s.sharded:
        return Wrapped(train_model=s.model, ddp=None, autocast=contextlib.nullcontext(),
                       compute_dtype=s.compute_dtype, compiled=compiled)
    train_model: torch.nn.Module = s.model
    ddp = None
    if s.dist.world > 1:
        ddp = train_model = replicate_model(s.model, s.device, s.dist.local_rank)
    if compiled:
        train_model = torch.compile(train_model)
    return Wrapped(train_model=train_model, ddp=ddp,
                   autocast=_autocast(s.device, s.compute_dtype),
                   compute_dtype=s.compute_dtype, compiled=compiled)


def _announce(s: Setup, w: Wrapped) -> None:
    if s.dist.main:
        sc = s.schedule
        log.info("training %s: %d steps x %d sequences of %d tokens (%d tokens, %.3f epochs), "
                 "micro-batch %d, %d rank(s) (%s%s), lr %.3g (%s), device %s, %s",
                 s.job.label.get("arch", Path(s.job.arch_config).parent.name), sc.steps,
                 sc.batch_seqs, sc.seq_len, sc.tokens, sc.epochs, sc.micro_batch_size,
                 s.dist.world, s.parallel,
                 ", activation checkpointing" if s.settings["activation_checkpointing"]
                 else "", s.lr_info["lr"], s.lr_info["formula"], s.device, w.compute_dtype)


def _flush_losses(s: Setup, p: Progress, upto: int) -> None:
    """Make losses[reduced_upto:upto] global (a collective: every rank calls it together)."""
    if s.dist.world > 1 and upto > p.reduced_upto:
        import torch.distributed as td

        pending = p.losses[p.reduced_upto:upto].clone()
        td.all_reduce(pending)
        p.losses[p.reduced_upto:upto] = pending
    p.reduced_upto = max(p.reduced_upto, upto)


def _train(s: Setup, p: Progress, w: Wrapped) -> float:
    """Steps start_step.. to the end, with log rows and resume states; returns train_s (all
    attempts). SIGTERM saves the state after the current step and exits with 143."""
    import torch

    steps = s.schedule.steps
    log_every = int(s.settings["log_every_steps"])
    ckpt_every = int(s.settings["checkpoint_every_steps"])
    p.loop_t0 = p.interval_t0 = time.perf_counter()
    p.interval_tokens0 = s.schedule.tokens_after(p.start_step)
    p.interval_step0 = int(p.rows[-1]["step"]) if p.rows else 0
    with _StopOnSigterm(enabled=s.dist.world == 1) as stop:
        for step in range(p.start_step, steps):
            lr = _train_step(s, p, w, step)
            done = step + 1
            is_last = done == steps
            if done % log_every == 0 or is_last:
                _log_row(s, p, done, lr)
            if (done % ckpt_every == 0 or stop.requested) and not is_last:
                _save(s, p, done)
                if stop.requested:
                    log.warning("SIGTERM: state saved at step %d of %d in %s; exiting (a rerun "
                                "resumes from it)", done, steps, s.job.resume_dir)
                    raise SystemExit(128 + signal.SIGTERM)
    _flush_losses(s, p, steps)
    if s.device.type == "cuda":
        torch.cuda.synchronize(s.device)
    return p.prior_train_s + time.perf_counter() - p.loop_t0


def _micro_batches(s: Setup, step: int) -> tuple[list[tuple[np.ndarray, bool]], float]:
    """This rank's micro-batches of one step (global sequence indices, and whether they count)
    and the loss scale (world / the global batch's target count).

    Every rank runs as many micro-batches as rank 0, which holds the most sequences: FSDP2
    gathers parameters in every forward and DDP all-reduces in the last backward, so the ranks
    must run the same number of passes. A rank short of sequences (a small last step) repeats
    one with weight 0."""
    seqs = s.schedule.step_sequences(step)
    n_targets = s.schedule.targets_in(seqs)
    mine = np.arange(seqs.start, seqs.stop, dtype=np.int64)[s.dist.rank::s.dist.world]
    size = s.schedule.micro_batch_size
    rank_0_seqs = -(-len(seqs) // s.dist.world)
    n_passes = -(-rank_0_seqs // size)
    chunks = [(mine[i:i + size], True) for i in range(0, len(mine), size)]
    chunks += [(np.array([seqs.start], dtype=np.int64), False)] * (n_passes - len(chunks))
    return chunks, s.dist.world / n_targets


def _train_step(s: Setup, p: Progress, w: Wrapped, step: int) -> float:
    """One optimizer step (gradient accumulation over the micro-batches, DDP syncing on the
    last, FSDP2 on each: archscale.training.parallel.gradient_sync); records this rank's loss
    in losses[step] and returns the step's lr."""
    import torch
    import torch.nn.functional as F

    from archscale.training.parallel import gradient_sync

    lr = lr_at(step, s.schedule.steps, s.lr_info["lr"], s.settings)
    for group in s.optimizer.param_groups:
        group["lr"] = lr * group["lr_scale"]
    chunks, scale = _micro_batches(s, step)
    vocab = int(s.arch["vocab_size"])
    step_loss = torch.zeros((), dtype=torch.float64, device=s.device)
    for i, (chunk, counts) in enumerate(chunks):
        x, y = read_batch(s.tokens, s.order, s.schedule, chunk)
        x, y = x.to(s.device, non_blocking=True), y.to(s.device, non_blocking=True)
        with gradient_sync(w.ddp, last_micro_batch=i == len(chunks) - 1):
            with w.autocast:
                logits = w.train_model(input_ids=x, use_cache=False).logits
            loss_sum = F.cross_entropy(logits.float().view(-1, vocab), y.view(-1),
                                       ignore_index=-100, reduction="sum")
            (loss_sum * (scale if counts else 0.0)).backward()
        if counts:
            step_loss += loss_sum.detach().double()
    clip = float(s.settings["grad_clip"])
    if clip > 0:
        torch.nn.utils.clip_grad_norm_(s.model.parameters(), clip)
    s.optimizer.step()
    s.optimizer.zero_grad(set_to_none=True)
    p.losses[step] = step_loss * (scale / s.dist.world)
    return lr


def _log_row(s: Setup, p: Progress, done: int, lr: float) -> None:
    """Append the train_log.csv row after `done` steps (a collective) and log it on rank 0."""
    import torch

    _flush_losses(s, p, done)
    if s.device.type == "cuda":
        torch.cuda.synchronize(s.device)
    t = time.perf_counter()
    sc = s.schedule
    tok_done = sc.tokens_after(done)
    rate = (tok_done - p.interval_tokens0) / max(t - p.interval_t0, 1e-9)
    row = {"step": done, "tokens": tok_done,
           "loss": float(p.losses[p.interval_step0:done].mean()), "lr": lr,
           "tokens_per_s": round(rate, 1)}
    _check_finite(s, row["loss"], p.interval_step0, done)
    p.rows.append(row)
    if s.dist.main:
        eta = (sc.tokens - tok_done) / rate if rate > 0 else float("nan")
        log.info("step %d/%d tokens %d/%d loss %.4f lr %.3g %.0f tok/s ETA %.0fs",
                 done, sc.steps, tok_done, sc.tokens, row["loss"], lr, rate, eta)
    p.interval_t0, p.interval_tokens0, p.interval_step0 = t, tok_done, done


def _check_finite(s: Setup, loss: float, first: int, done: int) -> None:
    """Stop a diverged run. Checked on each log row's mean loss, which _log_row reads anyway
    (a per-step check would sync the GPU every step); every step lies in one row's interval
    and the last step always logs, so no NaN step reaches metrics.json, and the ranks, which
    hold the same reduced losses, stop together. A diverged run's losses would otherwise be
    written as nulls and fail the fits far downstream."""
    if math.isfinite(loss):
        return
    job = s.job
    raise DivergedError(
        f"training diverged: the loss is {loss} in steps {first + 1}-{done} of "
        f"{s.schedule.steps} for architecture "
        f"{job.label.get('arch', Path(job.arch_config).parent.name)!r}, {s.schedule.tokens:,} "
        f"tokens, seed {job.seed} (peak lr {s.lr_info['lr']:.3g}, {s.lr_info['formula']}); "
        "no model or metrics.json is written. Lower training.lr (or this architecture's "
        "training.lr override), or raise training.warmup_fraction, and rerun")


def _save(s: Setup, p: Progress, done: int) -> None:
    """Write the resume state after `done` steps (a collective: every rank calls it): rank 0
    writes state.pt, or under fsdp every rank its shards (sharded_state)."""
    from archscale.training.model import unwrap
    from archscale.training.sharded_state import save_sharded_state

    _flush_losses(s, p, done)
    progress = dict(fingerprint=s.fingerprint, step=done, losses=p.losses[:done],
                    log_rows=p.rows, resumes=p.resumes,
                    train_s=p.prior_train_s + time.perf_counter() - p.loop_t0,
                    wall_s=p.prior_wall_s + time.perf_counter() - s.wall0, device=s.device)
    if s.sharded:
        save_sharded_state(s.job, training_progress(**progress), s.model, s.optimizer, s.dist)
        return
    if s.dist.main:
        save_state(s.job, training_state(model=unwrap(s.model), optimizer=s.optimizer,
                                         **progress))
    if s.dist.world > 1:
        import torch.distributed as td

        td.barrier()


def _final_metrics(s: Setup, p: Progress, w: Wrapped, train_s: float) -> dict[str, Any]:
    """metrics.json of a finished run (rank 0, after the whole loss vector is global)."""
    import torch

    from archscale.provenance import provenance
    from archscale.training.model import gpu_peak_tflops, mfu, training_flops_per_token

    job, sc, dist, device, settings = s.job, s.schedule, s.dist, s.device, s.settings
    all_losses = p.losses.cpu().numpy()
    tail = max(1, int(round(0.1 * sc.steps)))
    tokens_per_s = sc.tokens / train_s if train_s > 0 else None
    flops = training_flops_per_token(s.arch, sc.seq_len)
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    peak_tflops = gpu_peak_tflops(device_name) if device.type == "cuda" else None
    return {
        "arch": job.label.get("arch", Path(job.arch_config).parent.name),
        "tokens_budget": sc.tokens, "tokens_seen": sc.tokens, "seed": int(job.seed),
        "steps": sc.steps, "seq_len": sc.seq_len,
        "global_batch_tokens": sc.batch_seqs * sc.seq_len,
        "micro_batch_size": sc.micro_batch_size,
        "grad_accum_steps": -(-sc.batch_seqs // (sc.micro_batch_size * dist.world)),
        "world_size": dist.world,
        "epochs": sc.epochs, "train_bin_tokens": sc.train_tokens,
        "train_loss": float(all_losses[-tail:].mean()),
        "train_loss_steps": tail,
        "final_step_loss": float(all_losses[-1]),
        "wall_s": round(p.prior_wall_s + time.perf_counter() - s.wall0, 3),
        "train_s": round(train_s, 3),
        "tokens_per_s": round(tokens_per_s, 1) if tokens_per_s else None,
        "flops_per_token": flops,
        "peak_tflops": peak_tflops,
        "mfu": mfu(tokens_per_s or 0.0, flops, peak_tflops, dist.world),
        "device": device_name, "compute_dtype": w.compute_dtype,
        "compiled": w.compiled, "parallel": s.parallel,
        "activation_checkpointing": bool(settings["activation_checkpointing"]),
        "threads": int(job.threads) if device.type == "cpu" else None,
        "lr": s.lr_info, "schedule": settings["schedule"],
        "resumed_from_steps": p.resumes,
        "provenance": provenance(
            settings={"training": result_settings(settings), "tokens": sc.tokens,
                      "seed": int(job.seed), "seq_len": sc.seq_len, **job.label},
            inputs=[job.arch_config, job.meta,
                    str(Path(job.tokenizer_dir) / "tokenizer.json")],
            started=s.started, packages=("numpy", "torch", "transformers", "safetensors")),
    }


def _final_weights(s: Setup) -> dict[str, "torch.Tensor"] | None:
    """Under fsdp, the unsharded weights on rank 0 (a collective: every rank calls it); else
    None, and the checkpoint is written from the model itself."""
    from archscale.training.parallel import full_state_dict

    return full_state_dict(s.model) if s.sharded else None


def _write_outputs(s: Setup, p: Progress, w: Wrapped, train_s: float,
                   weights: dict[str, "torch.Tensor"] | None) -> dict[str, Any]:
    """Rank 0: the checkpoint, train_log.csv and metrics.json; then the resume folder goes."""
    from archscale.io import write_json
    from archscale.training.model import save_checkpoint

    save_checkpoint(s.model, s.job.model_dir, s.job.tokenizer_dir, state_dict=weights)
    write_log_csv(s.job.log_csv, p.rows)
    metrics = _final_metrics(s, p, w, train_s)
    write_json(s.job.metrics_json, metrics)
    remove_state(s.job)
    log.info("done: train loss %.4f, %.0f tok/s, %.1f s", metrics["train_loss"],
             metrics["tokens_per_s"] or 0, metrics["wall_s"])
    return metrics


def run(job: TrainJob) -> dict[str, Any] | None:
    """Train to the token budget, save the checkpoint, log and metrics; rank 0 returns metrics.

    Resumes from the job's resume state when one matches (archscale.training.state); under
    torchrun every rank calls it (archscale.training.launch)."""
    setup = _set_up(job)
    with leaving_process_group(setup.dist):
        progress = _restore(setup)
        wrapped = _wrap(setup)
        _announce(setup, wrapped)
        train_s = _train(setup, progress, wrapped)
        weights = _final_weights(setup)
        metrics = _write_outputs(setup, progress, wrapped, train_s, weights) \
            if setup.dist.main else None
        wait_for_rank_0(setup.dist)
    return metrics
