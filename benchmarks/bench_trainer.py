"""Benchmark: the archscale trainer's tokens/s against a bare PyTorch loop, same model and batch.

Why: the trainer adds data reading from a memmap, the learning-rate schedule, loss bookkeeping,
logging and periodic atomic resume checkpoints around the optimisation step. This measures what
that costs. The bare loop does the same optimisation math (forward, summed cross-entropy,
backward, gradient clipping, AdamW with the same parameter groups) on one batch already in
memory, and nothing else. Goal: trainer / bare >= 0.95.

    python benchmarks/bench_trainer.py                      # the default study's n64-base shape
    python benchmarks/bench_trainer.py --arch results/architectures/n64-x55/config.json

Needs the default study's data (snakemake --cores 2 results/data/stdlib/meta.json). Both loops
run in this process with the same thread count, alternating, `--repeats` times each; the
figures are the medians. Checkpoints are written at the study's cadence (every
training.checkpoint_every_steps from config.yaml) into a temporary folder.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))


def bare_loop(arch_config: Path, settings: dict, seq_len: int, batch_seqs: int, steps: int,
              seed: int) -> float:
    """Tokens/s of the minimal loop: one fixed batch, the same model, optimizer and clipping."""
    import torch
    import torch.nn.functional as F

    from archscale.training.schedule import learning_rate
    from archscale.training.model import build_model

    model = build_model(arch_config, seed=seed, init_std=settings["init_std"])
    model.train()
    vocab = model.config.vocab_size
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    lr = learning_rate(settings, model.config.hidden_size)["lr"]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": settings["weight_decay"]},
         {"params": no_decay, "weight_decay": 0.0}],
        lr=lr, betas=(settings["beta1"], settings["beta2"]), eps=1e-8)
    generator = torch.Generator().manual_seed(seed)
    batch = torch.randint(0, vocab, (batch_seqs, seq_len + 1), generator=generator)
    x, y = batch[:, :-1].contiguous(), batch[:, 1:].contiguous()
    start = time.perf_counter()
    for _ in range(steps):
        logits = model(input_ids=x, use_cache=False).logits
        loss = F.cross_entropy(logits.view(-1, vocab), y.view(-1), reduction="sum") / y.numel()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), settings["grad_clip"])
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    float(loss.detach())
    return steps * batch_seqs * seq_len / (time.perf_counter() - start)


def trainer_loop(arch_config: Path, data: Path, settings: dict, seq_len: int, steps: int,
                 seed: int, workdir: Path) -> float:
    """Tokens/s of archscale.training.loop.run over its training loop (setup and final save excluded)."""
    from archscale.training.job import TrainJob
    from archscale.training.loop import run

    batch_tokens = settings["global_batch_tokens"] // seq_len * seq_len
    out = Path(tempfile.mkdtemp(dir=workdir))
    job = TrainJob(arch_config=str(arch_config), train_bin=str(data / "train.bin"),
                   meta=str(data / "meta.json"), tokenizer_dir=str(data / "tokenizer"),
                   model_dir=str(out / "model"), log_csv=str(out / "train_log.csv"),
                   metrics_json=str(out / "metrics.json"), resume_dir=str(out / "resume"),
                   tokens=steps * batch_tokens, seed=seed, seq_len=seq_len, settings=settings,
                   threads=settings["threads"], label={"arch": arch_config.parent.name})
    metrics = run(job)
    return metrics["tokens_per_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=str(REPO / "config.yaml"))
    parser.add_argument("--arch", default=str(REPO / "results/architectures/n64-base/config.json"))
    parser.add_argument("--data", default=None, help="default: results/data/<corpus>")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="default: training.threads")
    parser.add_argument("--batch-tokens", type=int, default=None,
                        help="default: training.global_batch_tokens (micro-batch = the batch)")
    args = parser.parse_args()

    import logging

    import torch

    from archscale.config import load_study

    logging.getLogger("archscale").setLevel(logging.WARNING)
    study = load_study(args.config)
    settings = dict(study.config["training"])
    if args.threads:
        settings["threads"] = args.threads
    if args.batch_tokens:
        settings["global_batch_tokens"] = args.batch_tokens
        settings["micro_batch_size"] = max(1, args.batch_tokens // study.config["data"]["seq_len"])
    seq_len = study.config["data"]["seq_len"]
    data = Path(args.data or REPO / "results" / "data" / study.config["data"]["name"])
    arch = Path(args.arch)
    for needed in (data / "train.bin", data / "meta.json", data / "tokenizer", arch):
        if not needed.exists():
            sys.exit(f"{needed} is missing: build the default study's data and architectures "
                     "first (snakemake --cores 2 results/data/stdlib/meta.json "
                     "results/architectures.csv)")
    torch.set_num_threads(settings["threads"])
    batch_seqs = settings["global_batch_tokens"] // seq_len
    if settings["micro_batch_size"] < batch_seqs:
        print(f"note: micro_batch_size {settings['micro_batch_size']} < {batch_seqs} sequences "
              "a step; the trainer accumulates, the bare loop runs one batch")
    trainer, bare = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeats):
            trainer.append(trainer_loop(arch, data, settings, seq_len, args.steps, 0, Path(tmp)))
            bare.append(bare_loop(arch, settings, seq_len, batch_seqs, args.steps, 0))
    t, b = statistics.median(trainer), statistics.median(bare)
    print(f"model {arch.parent.name}: batch {batch_seqs} x {seq_len} tokens, {args.steps} steps, "
          f"{settings['threads']} thread(s), checkpoint every "
          f"{settings['checkpoint_every_steps']} steps, torch {torch.__version__}")
    print(f"trainer   tokens/s: {t:10.0f}   (runs: {', '.join(f'{v:.0f}' for v in trainer)})")
    print(f"bare loop tokens/s: {b:10.0f}   (runs: {', '.join(f'{v:.0f}' for v in bare)})")
    print(f"ratio trainer/bare: {t / b:.3f}   (goal >= 0.95)")


if __name__ == "__main__":
    main()
