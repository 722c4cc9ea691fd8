"""Benchmark: MFU of the archscale trainer on one GPU, a ~125M LLaMA in bf16.

Why: the cluster studies' cost (archscale plan) assumes an MFU; this measures the real trainer
(archscale.training.loop.run: bf16 autocast, fused AdamW, torch.compile, the same loop the workflow
runs) against the dense bf16 datasheet peak, 989 TFLOP/s for H100/H200 SXM. Goal: >= 35 %.
It also times an 8192-cube bf16 matmul, the practical ceiling (about 790 TFLOP/s on H100/H200).

    python benchmarks/gpu_train_mfu.py                  # ~3-4 min on an H100, compile included
    python benchmarks/gpu_train_mfu.py --no-compile --steps 20

Needs only torch and transformers (no install: the package is imported from src/). Data are
random tokens written to a temporary folder (MFU does not depend on the text). The model:
d_model 768, 12 layers, 12 heads of 64, SwiGLU 2048, vocab 50304 tied, seq_len 2048: N = 84.9M
non-embedding, 123.6M parameters in all, 0.855 GFLOP per trained token.
FLOPs per token are the accounting module's: 3 x forward, the LM head and causal attention
included. Throughput is the median over the logged intervals after the first two (compile and
warm-up excluded).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

DENSE_BF16_PEAK_TFLOPS = 989.0
SHAPE = dict(d_model=768, n_layers=12, n_heads=12, n_kv_heads=12, head_dim=64, ffn_dim=2048)
VOCAB = 50304


def matmul_tflops(n: int = 8192, iters: int = 20) -> float:
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


def synthetic_data(root: Path, n_tokens: int, seed: int = 0) -> None:
    """Random uint16 tokens, a meta.json and a minimal tokenizer (the checkpoint needs one)."""
    import numpy as np
    from tokenizers import Tokenizer, models

    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rng.integers(1, VOCAB, n_tokens, dtype=np.uint16).tofile(root / "train.bin")
    (root / "meta.json").write_text(json.dumps({"dtype": "uint16", "train_tokens": n_tokens,
                                                "corpus_sha256": "synthetic"}))
    tok_dir = root / "tokenizer"
    tok_dir.mkdir(exist_ok=True)
    Tokenizer(models.WordLevel({"<|endoftext|>": 0}, unk_token="<|endoftext|>")).save(
        str(tok_dir / "tokenizer.json"))
    (tok_dir / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": "<|endoftext|>"}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--seq-len", type=int, default=2048)
    parser.add_argument("--batch-tokens", type=int, default=256 * 2048)
    parser.add_argument("--micro-batch", type=int, default=16)
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--peak", type=float, default=DENSE_BF16_PEAK_TFLOPS,
                        help="dense bf16 peak, TFLOP/s (989: H100/H200 SXM)")
    args = parser.parse_args()

    import torch

    if not torch.cuda.is_available():
        sys.exit("gpu_train_mfu.py needs a CUDA GPU: torch.cuda.is_available() is False on this "
                 "machine. Run it on a GPU node (e.g. srun --gpus=1 python "
                 "benchmarks/gpu_train_mfu.py); on CPU use benchmarks/bench_trainer.py")
    import transformers

    from archscale.architecture import Architecture
    from archscale.training.job import TrainJob
    from archscale.training.loop import run

    device = torch.cuda.get_device_name(0)
    print(f"device {device}, torch {torch.__version__}, transformers {transformers.__version__}")
    mm = matmul_tflops()
    print(f"bf16 8192^3 matmul: {mm:.0f} TFLOP/s ({mm / args.peak:.0%} of the {args.peak:.0f} "
          "peak)")

    arch = Architecture(name="llama-125m", **SHAPE, vocab_size=VOCAB, tie_word_embeddings=True,
                        max_position_embeddings=args.seq_len)
    flops = arch.training_flops_per_token(args.seq_len)
    settings = {"global_batch_tokens": args.batch_tokens, "micro_batch_size": args.micro_batch,
                "lr": 3e-4, "lr_rule": {"kind": "constant"}, "schedule": "cosine",
                "warmup_fraction": 0.05, "decay_fraction": 0.2, "min_lr_ratio": 0.1,
                "weight_decay": 0.1, "beta1": 0.9, "beta2": 0.95, "grad_clip": 1.0,
                "init_std": 0.02, "dtype": "bfloat16", "compile": not args.no_compile,
                "allow_repeats": True, "checkpoint_every_steps": 10 ** 9, "log_every_steps": 2,
                "threads": 4, "gpus": 1, "seeds": [0]}
    batch = args.batch_tokens // args.seq_len * args.seq_len
    tokens = batch * args.steps
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        synthetic_data(root / "data", n_tokens=tokens + args.seq_len + 1)
        (root / "arch").mkdir()
        (root / "arch" / "config.json").write_text(json.dumps(arch.hf_config()))
        job = TrainJob(arch_config=str(root / "arch" / "config.json"),
                       train_bin=str(root / "data" / "train.bin"),
                       meta=str(root / "data" / "meta.json"),
                       tokenizer_dir=str(root / "data" / "tokenizer"),
                       model_dir=str(root / "run" / "model"),
                       log_csv=str(root / "run" / "train_log.csv"),
                       metrics_json=str(root / "run" / "metrics.json"),
                       resume_dir=str(root / "run" / "resume"), tokens=tokens, seed=0,
                       seq_len=args.seq_len, settings=settings, threads=4,
                       label={"arch": arch.name})
        print(f"model: N {arch.n_params_non_embedding / 1e6:.1f}M non-embedding, "
              f"{arch.n_params_total / 1e6:.1f}M total; {flops / 1e9:.2f} GFLOP per trained "
              f"token; batch {batch} tokens, micro-batch {args.micro_batch} x {args.seq_len}, "
              f"{args.steps} steps, compile {not args.no_compile}")
        start = time.perf_counter()
        metrics = run(job)
        elapsed = time.perf_counter() - start
        import csv

        with open(root / "run" / "train_log.csv") as handle:
            rows = list(csv.DictReader(handle))
    rates = [float(r["tokens_per_s"]) for r in rows[2:]] or [float(r["tokens_per_s"])
                                                             for r in rows]
    steady = statistics.median(rates)
    mfu = steady * flops / (args.peak * 1e12)
    own = metrics.get("mfu")
    print(f"whole run {elapsed:.0f} s; metrics.json MFU (all steps, compile included): "
          + (f"{own:.1%}" if own is not None else f"none (no preset matches {device!r})"))
    print(f"steady state: {steady:,.0f} tokens/s = {steady * flops / 1e12:.0f} TFLOP/s")
    print(f"MFU vs {args.peak:.0f} TFLOP/s dense bf16 peak: {mfu:.1%}   (goal >= 35 %)")
    print(f"MFU vs the measured matmul ceiling ({mm:.0f}): {steady * flops / (mm * 1e12):.1%}")
    print(f"final loss {metrics['train_loss']:.3f} (random tokens: ln {VOCAB} = 10.83)")


if __name__ == "__main__":
    main()
