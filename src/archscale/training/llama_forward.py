"""A saved checkpoint's forward pass in plain torch, for evaluation jobs.

Why: an evaluation job scores a model for about a second, but importing transformers'
`LlamaForCausalLM` pulls in torch's compiler, distributed tensors and sympy, which cost more
than the evaluation itself in every job (issue 26). The trained model is transformers'
`LlamaForCausalLM`, unmodified (archscale.training.model); this module computes the same
function from the same checkpoint files (config.json, model.safetensors) with torch's core
operators only. `tests/test_llama_forward.py` holds it to transformers' logits.

Covered: what this project trains and what LLaMA-style checkpoints commonly hold: RMSNorm,
rotary embeddings (default rope type), grouped-query attention with a head_dim that may differ
from hidden_size / heads, a SwiGLU MLP, optional attention/MLP biases, tied or separate output
weights. Anything else is refused by name, so a figure never comes from a different function.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F


class ForwardError(ValueError):
    """A checkpoint this forward pass does not compute; the message says what to use instead."""


def _rope_theta(config: dict[str, Any]) -> float:
    """The rotary base, from transformers 5's `rope_parameters` or the legacy `rope_theta`."""
    rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
    kind = rope.get("rope_type", rope.get("type", "default"))
    if kind != "default":
        raise ForwardError(f"rope type {kind!r} is not computed by archscale's evaluation "
                           "forward; set evaluation.harness_model: hf to evaluate through "
                           "transformers")
    theta = rope.get("rope_theta", config.get("rope_theta"))
    if theta is None:
        raise ForwardError("config.json names no rope_theta; re-save the checkpoint")
    return float(theta)


class LlamaForward:
    """Logits of a LLaMA checkpoint: `forward(input_ids [batch, seq]) -> [batch, seq, vocab]`.

    Causal over each row; rows are independent, so right padding leaves the real positions'
    logits unchanged (what lm-eval's batching relies on).
    """

    def __init__(self, config: dict[str, Any], weights: dict[str, torch.Tensor]):
        # a LLaMA shape whose hidden size its head count does not divide is saved as Mistral
        # without a sliding window, which is LLaMA (archscale.training.model.
        # stock_checkpoint_config)
        kind = config.get("model_type", "llama")
        if not (kind == "llama" or (kind == "mistral" and config.get("sliding_window") is None)):
            raise ForwardError(f"model_type {kind!r} is not LLaMA; set "
                               "evaluation.harness_model: hf")
        if config.get("hidden_act", "silu") != "silu":
            raise ForwardError(f"hidden_act {config['hidden_act']!r} is not SwiGLU's silu; set "
                               "evaluation.harness_model: hf")
        self.heads = int(config["num_attention_heads"])
        self.kv_heads = int(config.get("num_key_value_heads") or self.heads)
        self.head_dim = int(config.get("head_dim") or config["hidden_size"] // self.heads)
        self.layers = int(config["num_hidden_layers"])
        self.eps = float(config["rms_norm_eps"])
        self.w = weights
        if "lm_head.weight" not in weights:
            if not config.get("tie_word_embeddings", False):
                raise ForwardError("the checkpoint has no lm_head.weight and its config does "
                                   "not tie the embeddings; re-save it")
            self.w["lm_head.weight"] = weights["model.embed_tokens.weight"]
        dim = self.head_dim
        exponents = torch.arange(0, dim, 2, dtype=torch.int64).to(torch.float32) / dim
        self.inv_freq = 1.0 / (_rope_theta(config) ** exponents)

    @classmethod
    def load(cls, model_dir: str | os.PathLike, device: str = "cpu") -> "LlamaForward":
        """Read config.json and model.safetensors from a checkpoint directory, in float32."""
        from safetensors.torch import load_file

        folder = Path(model_dir)
        config_path, weights_path = folder / "config.json", folder / "model.safetensors"
        for path in (config_path, weights_path):
            if not path.is_file():
                raise ForwardError(f"{path} does not exist; train the run first (snakemake "
                                   f"{weights_path})")
        config = json.loads(config_path.read_text())
        try:
            stored = load_file(str(weights_path))
        except Exception as error:  # safetensors raises its own error types for a bad file
            raise ForwardError(
                f"{weights_path} cannot be read ({error}); it is damaged or truncated. Delete "
                f"{folder} and rerun, so the run trains again") from error
        missing = [name for name in ("model.embed_tokens.weight", "model.norm.weight")
                   if name not in stored]
        if missing:
            raise ForwardError(f"{weights_path} holds no {missing[0]}: it is not a LLaMA "
                               "checkpoint; set evaluation.harness_model: hf")
        weights = {name: tensor.to(device=device, dtype=torch.float32)
                   for name, tensor in stored.items()}
        return cls(config, weights)

    def _linear(self, x: torch.Tensor, name: str) -> torch.Tensor:
        return F.linear(x, self.w[f"{name}.weight"], self.w.get(f"{name}.bias"))

    def _rms_norm(self, x: torch.Tensor, name: str) -> torch.Tensor:
        scale = torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.w[f"{name}.weight"] * (x * scale)

    def _rotate(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        half = x.shape[-1] // 2
        rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
        return x * cos + rotated * sin

    def _attention(self, x: torch.Tensor, prefix: str, cos: torch.Tensor,
                   sin: torch.Tensor) -> torch.Tensor:
        batch, seq, _ = x.shape

        def heads(name: str, count: int) -> torch.Tensor:
            return self._linear(x, f"{prefix}.{name}").view(
                batch, seq, count, self.head_dim).transpose(1, 2)

        q = self._rotate(heads("q_proj", self.heads), cos, sin)
        k = self._rotate(heads("k_proj", self.kv_heads), cos, sin)
        v = heads("v_proj", self.kv_heads)
        group = self.heads // self.kv_heads
        if group > 1:  # each key/value head serves `group` consecutive query heads
            k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                             scale=self.head_dim ** -0.5)
        return self._linear(out.transpose(1, 2).reshape(batch, seq, -1), f"{prefix}.o_proj")

    def _mlp(self, x: torch.Tensor, prefix: str) -> torch.Tensor:
        gated = F.silu(self._linear(x, f"{prefix}.gate_proj")) * self._linear(
            x, f"{prefix}.up_proj")
        return self._linear(gated, f"{prefix}.down_proj")

    @torch.inference_mode()
    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Float32 logits for every position of every row."""
        device = self.w["model.embed_tokens.weight"].device
        input_ids = input_ids.to(device)
        positions = torch.arange(input_ids.shape[1], device=device, dtype=torch.float32)
        angles = positions[:, None] * self.inv_freq.to(device)[None, :]
        angles = torch.cat((angles, angles), dim=-1)
        cos, sin = angles.cos(), angles.sin()
        h = F.embedding(input_ids, self.w["model.embed_tokens.weight"])
        for i in range(self.layers):
            layer = f"model.layers.{i}"
            h = h + self._attention(self._rms_norm(h, f"{layer}.input_layernorm"),
                                    f"{layer}.self_attn", cos, sin)
            h = h + self._mlp(self._rms_norm(h, f"{layer}.post_attention_layernorm"),
                              f"{layer}.mlp")
        return self._linear(self._rms_norm(h, "model.norm"), "lm_head")

    __call__ = forward
