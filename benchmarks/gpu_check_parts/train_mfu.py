"""Part 1: the trainer's MFU on a 124M LLaMA, bf16 and compiled, against a bare PyTorch loop.

Why the bare loop: an MFU below the plan's assumption (archscale.costs.ASSUMED_MFU) is either
the hardware and model (the bare loop is as slow) or the trainer's own overhead (data reads,
loss bookkeeping, logging; the bare loop is faster). Both run the same model
(archscale.training.model.build_model), the same micro-batch and global batch, bf16 autocast,
torch.compile and fused AdamW with gradient clipping; the bare loop reads its tokens from a
tensor already on the device. Throughput is the median interval rate after the first two
intervals (compile and warm-up), the same statistic for both.
"""
from __future__ import annotations

import contextlib
import statistics
import time
from typing import Any

from gpu_check_parts.common import (BASE_SETTINGS, SHAPE, VOCAB, architecture, device_facts,
                                    device_is_gpu, log_rows, peak_tflops, train_job, write_data)
from gpu_check_parts.runner import Context, Recorder

TINY_SHAPE = dict(d_model=64, n_layers=2, n_heads=4, n_kv_heads=4, head_dim=16, ffn_dim=128)
# steps and log interval: 2 intervals of warm-up (compile), 3 measured intervals
REAL = dict(shape=SHAPE, vocab=VOCAB, seq_len=2048, micro=16, batch_seqs=64, steps=20,
            log_every=4)
DRY = dict(shape=TINY_SHAPE, vocab=512, seq_len=64, micro=4, batch_seqs=8, steps=10,
           log_every=2)


def matmul_tflops(n: int = 8192, iters: int = 20) -> float:
    """TFLOP/s of an n-cube bf16 matmul: the practical ceiling the MFU is read against (about
    790 on an H100 or H200, against the 989 of the datasheet)."""
    import torch

    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        a @ b
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(iters):
        a @ b
    torch.cuda.synchronize()
    return 2 * n ** 3 * iters / (time.perf_counter() - start) / 1e12


def steady_rate(rates: list[float]) -> float:
    """The median interval rate without the first two intervals (compile, warm-up)."""
    return statistics.median(rates[2:] if len(rates) > 2 else rates[-1:])


def mfu(tokens_per_s: float, flops_per_token: float, peak: float | None) -> float | None:
    return tokens_per_s * flops_per_token / (peak * 1e12) if peak else None


def run(ctx: Context, rec: Recorder) -> None:
    size = DRY if ctx.dry else REAL
    facts = device_facts()
    arch = architecture("llama-124m" if not ctx.dry else "llama-tiny", size["shape"],
                        size["vocab"], size["seq_len"])
    flops = arch.training_flops_per_token(size["seq_len"])
    peak = peak_tflops(facts["device"])
    rec.update(device=facts, model={**arch.shape(), "vocab_size": arch.vocab_size,
                                    "n_params_total": arch.n_params_total,
                                    "flops_per_token": flops},
               batch={"seq_len": size["seq_len"], "micro_batch_size": size["micro"],
                      "global_batch_tokens": size["batch_seqs"] * size["seq_len"],
                      "steps": size["steps"], "log_every_steps": size["log_every"]},
               peak_tflops=peak, compiled=device_is_gpu(),
               matmul_tflops=round(matmul_tflops(), 1) if device_is_gpu() else None)
    tokens = size["steps"] * size["batch_seqs"] * size["seq_len"]
    data = write_data(ctx.work_dir / "mfu-data", tokens + size["seq_len"] + 1, size["vocab"])
    trainer = trainer_rate(ctx, arch, data, size, tokens)
    trainer["mfu"] = mfu(trainer["tokens_per_s"], flops, peak)
    rec.update(trainer=trainer)
    bare = bare_rate(arch, size)
    bare["mfu"] = mfu(bare["tokens_per_s"], flops, peak)
    rec.update(bare=bare, trainer_over_bare=trainer["tokens_per_s"] / bare["tokens_per_s"])


def trainer_rate(ctx: Context, arch, data, size: dict[str, Any], tokens: int
                 ) -> dict[str, Any]:
    """archscale.training.loop.run on the synthetic data; its logged interval rates."""
    from archscale.training.loop import run as train

    settings = {**BASE_SETTINGS, "global_batch_tokens": size["batch_seqs"] * size["seq_len"],
                "micro_batch_size": size["micro"], "compile": device_is_gpu(),
                "log_every_steps": size["log_every"]}
    job = train_job(ctx.work_dir / "mfu-trainer", arch, data, tokens, size["seq_len"], settings)
    start = time.perf_counter()
    metrics = train(job)
    rates = [row["tokens_per_s"] for row in log_rows(job)]
    return {"tokens_per_s": steady_rate(rates), "interval_tokens_per_s": rates,
            "whole_run_s": round(time.perf_counter() - start, 1),
            "compiled": metrics["compiled"], "compute_dtype": metrics["compute_dtype"],
            "final_step_loss": metrics["final_step_loss"]}


def bare_rate(arch, size: dict[str, Any]) -> dict[str, Any]:
    """A plain forward/backward/step loop on the same model and batch; its interval rates."""
    import torch

    from archscale.training.model import build_model

    gpu = device_is_gpu()
    device = torch.device("cuda" if gpu else "cpu")
    if gpu:  # what the trainer sets on a GPU
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    model = build_model(arch.hf_config(), seed=0, init_std=0.02).to(device)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4, betas=(0.9, 0.95),
                                  weight_decay=0.1, fused=gpu)
    forward = torch.compile(model) if gpu else model
    accum = size["batch_seqs"] // size["micro"]
    tokens = torch.randint(1, arch.vocab_size, (accum, size["micro"], size["seq_len"] + 1),
                           device=device, generator=torch.Generator(device).manual_seed(0))
    # contiguous, like the trainer's batches: other strides would compile another graph
    batches = list(zip(tokens[..., :-1].contiguous(), tokens[..., 1:].contiguous()))
    step_s = [timed_step(forward, model, optimizer, batches, gpu)
              for _ in range(size["steps"])]
    every = size["log_every"]
    step_tokens = size["batch_seqs"] * size["seq_len"]
    rates = [every * step_tokens / sum(step_s[i:i + every])
             for i in range(0, len(step_s) - every + 1, every)]
    return {"tokens_per_s": steady_rate(rates), "interval_tokens_per_s": rates,
            "compiled": gpu, "compute_dtype": "bfloat16" if gpu else "float32"}


def timed_step(forward, model, optimizer, batches, gpu: bool) -> float:
    """One optimizer step over the micro-batches (summed token loss over the batch's targets),
    clipped at 1.0 as the trainer does; its wall time with the device synchronised."""
    import torch
    import torch.nn.functional as F

    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if gpu else \
        contextlib.nullcontext()
    n_targets = sum(y.numel() for _, y in batches)
    if gpu:
        torch.cuda.synchronize()
    start = time.perf_counter()
    for x, y in batches:
        with autocast:
            logits = forward(input_ids=x, use_cache=False).logits
        loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1),
                               reduction="sum") / n_targets
        loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    if gpu:
        torch.cuda.synchronize()
    return time.perf_counter() - start
