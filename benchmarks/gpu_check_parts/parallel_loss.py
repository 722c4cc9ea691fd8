"""Part 3: the trainer's ddp and fsdp modes on one GPU give the same losses.

Why on a GPU: the CPU tests (tests/test_train_parallel.py) compare the modes over gloo in
float32; here both run as a one-rank torchrun job would (WORLD_SIZE=1, an nccl group) in bf16,
where FSDP2 computes with bf16 copies of the parameters and reduces in float32 while ddp mode
autocasts around float32 weights. The two round differently, so the losses agree to a bf16
tolerance, not exactly; the data are learnable (common.synthetic_tokens), so the loss falls by
much more than that tolerance over the steps and a wrong gradient would not pass.
With one rank the trainer's ddp mode needs no DistributedDataParallel wrapper (it wraps only
when there are several ranks), so the ddp run is the model under autocast in an nccl group.
"""
from __future__ import annotations

import os
import socket
from typing import Any

from gpu_check_parts.common import (BASE_SETTINGS, SHAPE, VOCAB, architecture, device_facts,
                                    device_is_gpu, fsdp_unavailable, log_rows, train_job,
                                    write_data)
from gpu_check_parts.runner import Context, Recorder, Skip

MODES = ("ddp", "fsdp")
TINY_SHAPE = dict(d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=16, ffn_dim=128)
# lr: the loss falls fast without warm-up and stays stable (a spike would amplify the modes'
# rounding differences); the tiny dry model takes a larger one
REAL = dict(shape=SHAPE, vocab=VOCAB, seq_len=1024, micro=8, batch_seqs=16, steps=10, lr=1e-3)
DRY = dict(shape=TINY_SHAPE, vocab=512, seq_len=64, micro=2, batch_seqs=8, steps=10, lr=1e-2)
# Relative difference allowed between the modes' step losses: bf16 keeps 8 bits of mantissa
# (0.4 %), and the two modes round in different places (autocast keeps a float32 residual
# stream, FSDP2's bf16 parameters a bf16 one); a fall of the loss of over 5 x this shows the
# check would see a wrong gradient.
LOSS_RTOL = 1e-2


def join_as_one_rank() -> None:
    """The environment torchrun gives a one-process job, so the trainer joins an nccl (gloo
    on CPU) group of one rank through env://, in both modes."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    os.environ.update(WORLD_SIZE="1", RANK="0", LOCAL_RANK="0", LOCAL_WORLD_SIZE="1",
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))


def run(ctx: Context, rec: Recorder) -> None:
    reason = fsdp_unavailable()
    if reason:
        raise Skip(reason)
    size = DRY if ctx.dry else REAL
    arch = architecture("llama-124m" if not ctx.dry else "llama-tiny", size["shape"],
                        size["vocab"], size["seq_len"])
    tokens = size["steps"] * size["batch_seqs"] * size["seq_len"]
    data = write_data(ctx.work_dir / "parallel-data", tokens + size["seq_len"] + 1,
                      size["vocab"])
    rec.update(device=device_facts(), backend="nccl" if device_is_gpu() else "gloo",
               world_size=1, dtype="bfloat16", steps=size["steps"], lr=size["lr"],
               micro_batch_size=size["micro"],
               global_batch_tokens=size["batch_seqs"] * size["seq_len"])
    losses = {}
    for mode in MODES:
        losses[mode] = train_losses(ctx, mode, arch, data, size, tokens)
        rec.update(**{f"{mode}_losses": losses[mode]})
    rec.update(**compare(losses["ddp"], losses["fsdp"]))


def train_losses(ctx: Context, mode: str, arch, data, size: dict[str, Any], tokens: int
                 ) -> list[float]:
    """The per-step losses of the trainer in `mode` (bf16, eager: compile is result-free)."""
    from archscale.training.loop import run as train

    settings = {**BASE_SETTINGS, "parallel": mode, "dtype": "bfloat16", "lr": size["lr"],
                "global_batch_tokens": size["batch_seqs"] * size["seq_len"],
                "micro_batch_size": size["micro"], "log_every_steps": 1}
    job = train_job(ctx.work_dir / f"parallel-{mode}", arch, data, tokens, size["seq_len"],
                    settings)
    join_as_one_rank()  # a fresh port: the last run's store may still hold its own
    train(job)
    return [row["loss"] for row in log_rows(job)]


def compare(ddp: list[float], fsdp: list[float]) -> dict[str, Any]:
    """The largest relative step-loss difference, the loss's fall over the run, and whether
    the modes agree within LOSS_RTOL."""
    worst = max(abs(a - b) / abs(a) for a, b in zip(ddp, fsdp))
    fall = (ddp[0] - ddp[-1]) / ddp[0]
    return {"max_relative_difference": worst, "tolerance": LOSS_RTOL,
            "relative_loss_fall": fall, "same_loss": worst <= LOSS_RTOL and len(ddp) == len(fsdp),
            "fall_exceeds_tolerance": fall > 5 * LOSS_RTOL}
