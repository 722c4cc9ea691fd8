"""What the training parts share: the model, synthetic data, trainer settings and jobs, device
facts.

The data are synthetic (nothing can be downloaded on the lent machine): a noisy walk over a
small alphabet of token ids, so a model's loss falls fast (a wrong gradient would show in a
few steps) while throughput does not depend on the content.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np

from archscale.architecture import Architecture

# The 124M LLaMA the training parts run (d_model 768, 12 layers, 12 heads of 64, SwiGLU 2048,
# vocab 50304 tied: N = 84.9M non-embedding, 123.6M parameters in all).
SHAPE: dict[str, int] = dict(d_model=768, n_layers=12, n_heads=12, n_kv_heads=12, head_dim=64,
                             ffn_dim=2048)
VOCAB = 50304

# The trainer's settings for a benchmark run (the schema's defaults, spelled out, with
# checkpoints off: a resume state is not what is measured). threads counts on a CPU only,
# where one thread keeps a dry run from fighting other jobs for the cores.
BASE_SETTINGS: dict[str, Any] = {
    "lr": 3e-4, "lr_rule": {"kind": "constant"}, "schedule": "cosine",
    "warmup_fraction": 0.0, "decay_fraction": 0.2, "min_lr_ratio": 0.1,
    "weight_decay": 0.1, "beta1": 0.9, "beta2": 0.95, "grad_clip": 1.0,
    "init_std": 0.02, "dtype": "auto", "compile": False, "allow_repeats": True,
    "checkpoint_every_steps": 10 ** 9, "log_every_steps": 1, "threads": 1, "gpus": 1,
    "seeds": [0],
}


def synthetic_tokens(n: int, vocab: int, seed: int = 0, alphabet: int = 256,
                     restart: float = 0.1) -> np.ndarray:
    """n token ids: a walk along a random cycle of `alphabet` ids that jumps to a random
    point with probability `restart` (learnable: the loss floor is about restart * ln(alphabet)
    plus the jump's entropy)."""
    rng = np.random.default_rng(seed)
    cycle = rng.choice(np.arange(1, vocab), size=min(alphabet, vocab - 1), replace=False)
    jumps = rng.random(n) < restart
    jumps[0] = True
    segment = np.cumsum(jumps) - 1
    starts = np.flatnonzero(jumps)
    offset = np.arange(n) - starts[segment]
    origin = rng.integers(0, len(cycle), size=len(starts))
    return cycle[(origin[segment] + offset) % len(cycle)]


def write_tokenizer(folder: Path) -> None:
    """A one-token tokenizer: the trainer's checkpoint copies one, nothing reads it."""
    from tokenizers import Tokenizer, models

    folder.mkdir(parents=True, exist_ok=True)
    Tokenizer(models.WordLevel({"<|endoftext|>": 0}, unk_token="<|endoftext|>")).save(
        str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": "<|endoftext|>"}))


def write_data(root: Path, n_tokens: int, vocab: int, seed: int = 0) -> Path:
    """train.bin (in the dtype the data stage would use for `vocab`), meta.json, tokenizer/."""
    from archscale.data.corpus import token_dtype

    root.mkdir(parents=True, exist_ok=True)
    dtype = token_dtype(vocab)
    synthetic_tokens(n_tokens, vocab, seed).astype(dtype).tofile(root / "train.bin")
    (root / "meta.json").write_text(json.dumps({"dtype": dtype.name, "train_tokens": n_tokens,
                                                "corpus_sha256": f"synthetic-{seed}"}))
    write_tokenizer(root / "tokenizer")
    return root


def architecture(name: str, shape: dict[str, int], vocab: int, seq_len: int,
                 **extra: Any) -> Architecture:
    """A tied-embedding LLaMA shape as the study would write it."""
    return Architecture(name=name, **shape, vocab_size=vocab, tie_word_embeddings=True,
                        max_position_embeddings=max(seq_len, 2048), **extra)


def train_job(root: Path, arch: Architecture, data: Path, tokens: int, seq_len: int,
              settings: dict[str, Any]):
    """A TrainJob writing under root/, with the architecture's config.json beside it."""
    from archscale.training.job import TrainJob

    (root / "arch").mkdir(parents=True, exist_ok=True)
    (root / "arch" / "config.json").write_text(json.dumps(arch.hf_config()))
    return TrainJob(arch_config=str(root / "arch" / "config.json"),
                    train_bin=str(data / "train.bin"), meta=str(data / "meta.json"),
                    tokenizer_dir=str(data / "tokenizer"), model_dir=str(root / "model"),
                    log_csv=str(root / "train_log.csv"),
                    metrics_json=str(root / "metrics.json"),
                    resume_dir=str(root / "resume"), tokens=tokens, seed=0, seq_len=seq_len,
                    settings=settings, threads=int(settings.get("threads", 1)),
                    label={"arch": arch.name})


def log_rows(job) -> list[dict[str, float]]:
    """train_log.csv as numbers."""
    with open(job.log_csv) as handle:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(handle)]


def device_facts() -> dict[str, Any]:
    """The device this process computes on, and the versions that decide the numbers."""
    import torch
    import transformers

    facts: dict[str, Any] = {"torch": torch.__version__, "transformers": transformers.__version__,
                             "cuda": torch.version.cuda}
    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        facts.update(device=props.name, device_memory_gb=round(props.total_memory / 1e9, 1))
    else:
        from archscale.provenance import device_name

        facts.update(device=device_name(), device_memory_gb=None)
    return facts


def peak_tflops(device: str) -> float | None:
    """The dense bf16 peak of the device's preset (None on a CPU or an unknown GPU)."""
    from archscale.training.model import gpu_peak_tflops

    return gpu_peak_tflops(device) if device_is_gpu() else None


def device_is_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


def fsdp_unavailable() -> str | None:
    """Why the trainer cannot run training.parallel: fsdp here, or None when it can."""
    import importlib

    for module, name, what in (
            ("torch.distributed.fsdp", "fully_shard", "this torch has no FSDP2"),
            ("archscale.training.parallel", "shard_model", "the trainer has no fsdp mode yet")):
        try:
            getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError) as exc:
            return f"{what} ({module}.{name}: {exc})"
    from archscale.training.parallel import parallel_mode

    try:
        parallel_mode({"parallel": "fsdp"})
    except ValueError as exc:
        return f"the trainer refuses training.parallel: fsdp ({exc})"
    return None


def gb(n_bytes: float) -> float:
    return round(n_bytes / 1e9, 2)
