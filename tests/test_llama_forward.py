"""The evaluation forward (archscale.training.llama_forward) against transformers' own
LlamaForCausalLM on the same checkpoint files: grouped-query, multi-query and multi-head
attention, head_dim decoupled from hidden_size / heads, tied and separate output weights,
biases; and what it refuses."""
from __future__ import annotations

import json

import pytest
import torch

from archscale.training.llama_forward import ForwardError, LlamaForward
from archscale.training.model import build_model

BASE = {"model_type": "llama", "architectures": ["LlamaForCausalLM"], "vocab_size": 97,
        "hidden_size": 24, "intermediate_size": 40, "num_hidden_layers": 2,
        "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 8,
        "max_position_embeddings": 256, "rms_norm_eps": 1e-5, "hidden_act": "silu",
        "rope_theta": 10000.0, "tie_word_embeddings": True, "bos_token_id": 0,
        "eos_token_id": 0}

SHAPES = {
    "gqa, decoupled head_dim, tied": {},
    "multi-query, separate lm_head": {"num_key_value_heads": 1, "tie_word_embeddings": False},
    "multi-head with biases": {"num_key_value_heads": 4, "head_dim": 6,
                               "attention_bias": True, "mlp_bias": True},
}


@pytest.mark.parametrize("name", sorted(SHAPES))
def test_logits_match_transformers(name, tmp_path):
    config = {**BASE, **SHAPES[name]}
    model = build_model(config, seed=3, init_std=0.2)
    with torch.no_grad():  # non-zero biases and norm weights, so each one is exercised
        for param_name, param in model.named_parameters():
            if param_name.endswith("bias") or "norm" in param_name:
                param.add_(torch.randn_like(param) * 0.1)
    model.save_pretrained(tmp_path, safe_serialization=True)
    ids = torch.randint(0, config["vocab_size"], (3, 50), generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        expected = model.eval()(input_ids=ids, use_cache=False).logits
    got = LlamaForward.load(tmp_path)(ids)
    assert got.shape == expected.shape and got.dtype == torch.float32
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)
    # causal: a row's logits do not depend on what follows it (lm-eval right-pads batches)
    torch.testing.assert_close(LlamaForward.load(tmp_path)(ids[:, :20]), got[:, :20],
                               atol=1e-5, rtol=0)


def test_unsupported_checkpoints_are_refused_with_the_fix(tmp_path):
    model = build_model(BASE, seed=0)
    model.save_pretrained(tmp_path, safe_serialization=True)
    config = json.loads((tmp_path / "config.json").read_text())
    config["rope_parameters"] = {"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0}
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(ForwardError, match="harness_model: hf"):
        LlamaForward.load(tmp_path)
    with pytest.raises(ForwardError, match="config.json does not exist.*snakemake .*model.safetensors"):
        LlamaForward.load(tmp_path / "elsewhere")
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])  # a write cut short
    with pytest.raises(ForwardError, match="model.safetensors cannot be read.*Delete"):
        LlamaForward.load(tmp_path)
