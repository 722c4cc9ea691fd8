"""The model every stage trains and loads: Hugging Face `LlamaForCausalLM`, unmodified.

Using the stock class makes the trained checkpoint exactly what vLLM, SGLang and lm-eval load.
This module adds only what transformers lacks for a study: a seeded build from an
architecture's config.json with the study's init std, a checkpoint writer that puts the
tokenizer beside the weights (and keeps the config readable by older transformers, which vLLM
and SGLang environments often pin), and the FLOP accounting behind an MFU estimate.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from archscale.architecture import Architecture
from archscale.io import reporting_write_errors, write_json
from archscale.devices import PRESETS, preset_for_device_name
from archscale.hf_compat import allow_decoupled_head_dim


class ModelError(ValueError):
    """A missing input of a model build or save; the message says how to fix it."""


def read_hf_config(config: dict[str, Any] | str | os.PathLike) -> dict[str, Any]:
    """An HF config dict from a dict, a config.json path or its directory."""
    if isinstance(config, dict):
        return dict(config)
    path = Path(config)
    if path.is_dir():
        path = path / "config.json"
    if not path.exists():
        raise ModelError(f"{path} does not exist: build it first (snakemake "
                         "results/architectures/<arch>/config.json)")
    return json.loads(path.read_text())


def llama_config(config: dict[str, Any] | str | os.PathLike, init_std: float | None = None):
    """A transformers LlamaConfig for an architecture (head_dim may be decoupled from d_model:
    see archscale.hf_compat)."""
    from transformers import LlamaConfig

    allow_decoupled_head_dim()
    cfg = read_hf_config(config)
    if init_std is not None:
        cfg["initializer_range"] = float(init_std)
    return LlamaConfig(**cfg)


def build_model(config: dict[str, Any] | str | os.PathLike, seed: int,
                init_std: float | None = None) -> "torch.nn.Module":
    """A float32 LlamaForCausalLM, initialised N(0, init_std) from `seed` alone.

    The global RNG is left untouched, so the same seed gives the same weights whatever ran
    before (a resumed job, a benchmark, a test).
    """
    from transformers import LlamaForCausalLM

    cfg = llama_config(config, init_std)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        previous = torch.get_default_dtype()
        torch.set_default_dtype(torch.float32)
        try:
            model = LlamaForCausalLM(cfg)
        finally:
            torch.set_default_dtype(previous)
    return model


def unwrap(model: "torch.nn.Module") -> "torch.nn.Module":
    """The plain HF model inside DDP and/or torch.compile wrappers."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif isinstance(model, torch.nn.parallel.DistributedDataParallel):
            model = model.module
        else:
            return model


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "tokenizer.model", "vocab.json", "merges.txt", "added_tokens.json",
                   "chat_template.jinja")


def stock_checkpoint_config(config: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint's config.json as stock transformers 5 and vLLM load it, without
    archscale's validator patch (archscale.hf_compat).

    transformers 5's LlamaConfig refuses a hidden size its head count does not divide, even
    with head_dim given, which LLaMA's computation allows (the paper's Panda and Surefire shapes
    are such). MistralConfig accepts it, and with `sliding_window: null` Mistral's model is
    LLaMA's: the same weight names, RMSNorm, RoPE, GQA attention and SwiGLU MLP. Such a shape is
    therefore written as `MistralForCausalLM`; every other stays `LlamaForCausalLM`. Only the
    checkpoint's config changes: training builds LlamaForCausalLM from the architecture's
    config.json, and the weights are the same tensors.
    """
    heads = int(config["num_attention_heads"])
    if int(config["hidden_size"]) % heads == 0 or config.get("model_type") != "llama":
        return dict(config)
    if config.get("attention_bias") or config.get("mlp_bias"):
        raise ModelError("a shape whose hidden size its head count does not divide is saved as "
                         "MistralForCausalLM, which has no attention or MLP biases; this one "
                         "has biases, so stock transformers 5 cannot load it")
    out = {k: v for k, v in config.items() if k not in ("attention_bias", "mlp_bias",
                                                         "pretraining_tp")}
    out.update(architectures=["MistralForCausalLM"], model_type="mistral", sliding_window=None)
    return out


def save_checkpoint(model: "torch.nn.Module", out_dir: str | os.PathLike,
                    tokenizer_dir: str | os.PathLike,
                    state_dict: dict[str, torch.Tensor] | None = None) -> list[Path]:
    """Write a self-contained HF checkpoint (safetensors, config, tokenizer) into out_dir.

    `state_dict` replaces the model's own weights: an FSDP2 model's are shards, so its trainer
    passes the unsharded weights gathered on rank 0 (archscale.training.parallel).

    Files are written in a temporary folder beside out_dir and renamed in one by one, so a
    killed job never leaves a half-written weight file under its final name. Weights stay
    float32 (what was trained); engines cast to bf16 at load. config.json keeps `head_dim`
    explicit (vLLM and SGLang read it), names a model class stock transformers 5 loads
    (`stock_checkpoint_config`), and also gets the legacy
    `rope_theta` and `torch_dtype` keys, which transformers 4.x (pinned by many vLLM/SGLang
    builds) reads instead of `rope_parameters` and `dtype`.
    """
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # a tqdm bar per save clutters the rule's log
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    hf_model = unwrap(model)
    written: list[Path] = []
    # a killed earlier save of this run left its folder behind (SIGKILL skips the cleanup);
    # the run's folder is this job's alone (Snakemake's lock), so any such folder is stale
    for stale in out.parent.glob(".save.*"):
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
    with tempfile.TemporaryDirectory(prefix=".save.", dir=out.parent) as tmp:
        tmp_path = Path(tmp)
        with reporting_write_errors(out / "model.safetensors"):  # a full disk is named
            hf_model.save_pretrained(tmp_path, safe_serialization=True, state_dict=state_dict)
        cfg = json.loads((tmp_path / "config.json").read_text())
        rope = cfg.get("rope_parameters") or {}
        if "rope_theta" in rope:
            cfg.setdefault("rope_theta", rope["rope_theta"])
        for key in ("dtype", "torch_dtype"):  # the weights are the float32 master copy
            cfg[key] = "float32"
        write_json(tmp_path / "config.json", stock_checkpoint_config(cfg))
        tok_dir = Path(tokenizer_dir)
        copied = [name for name in TOKENIZER_FILES if (tok_dir / name).is_file()]
        if "tokenizer.json" not in copied and "tokenizer.model" not in copied:
            raise ModelError(f"{tok_dir} holds no tokenizer.json or tokenizer.model; build the "
                             "data stage's tokenizer first")
        for name in copied:
            shutil.copy2(tok_dir / name, tmp_path / name)
        for item in sorted(tmp_path.iterdir()):
            os.replace(item, out / item.name)
            written.append(out / item.name)
    return written


def load_model(model_dir: str | os.PathLike, device: str = "cpu",
               dtype: torch.dtype = torch.float32) -> "torch.nn.Module":
    """Load a saved checkpoint in eval mode (the same path lm-eval's HFLM takes)."""
    from transformers import AutoModelForCausalLM

    allow_decoupled_head_dim()
    try:
        model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=dtype)
    except Exception as error:  # safetensors' errors name no file
        weights = Path(model_dir) / "model.safetensors"
        raise ModelError(f"{weights} cannot be read ({error}); it is damaged or truncated: "
                         f"retrain it with `snakemake --cores 2 --force {weights}`") from error
    return model.to(device).eval()


# ---------------------------------------------------------------------------------------------
# FLOPs and MFU
# ---------------------------------------------------------------------------------------------

def training_flops_per_token(config: dict[str, Any] | str | os.PathLike, seq_len: int) -> float:
    """Forward + backward FLOPs per trained token (the accounting module's formula)."""
    arch = Architecture.from_hf_config(read_hf_config(config), name="model")
    return arch.training_flops_per_token(seq_len)


def gpu_peak_tflops(device_name: str) -> float | None:
    """Dense bf16 peak of the preset a CUDA device name belongs to (e.g. "NVIDIA H100 80GB
    HBM3" -> H100; archscale.devices matches the names), None when unknown."""

    preset = preset_for_device_name(device_name)
    return None if preset in (None, "cpu") else PRESETS[preset].peak_tflops


def mfu(tokens_per_s: float, flops_per_token: float, peak_tflops: float | None,
        n_devices: int = 1) -> float | None:
    """Model FLOPs utilisation: achieved training FLOP/s over the devices' dense peak."""
    if not peak_tflops or tokens_per_s <= 0:
        return None
    return tokens_per_s * flops_per_token / (peak_tflops * 1e12 * n_devices)
