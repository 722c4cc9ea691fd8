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


STOCK_LOGITS = """
import json, sys
import torch
from transformers import AutoModelForCausalLM
model = AutoModelForCausalLM.from_pretrained(sys.argv[1], dtype=torch.float32).eval()
ids = torch.tensor(json.loads(sys.argv[2]))
with torch.no_grad():
    logits = model(input_ids=ids).logits
    greedy = model.generate(ids[:1], max_new_tokens=8, do_sample=False)[0, ids.shape[1]:]
print(json.dumps({"class": type(model).__name__, "logits": logits.tolist(),
                  "greedy": greedy.tolist()}))
"""


def test_a_shape_its_heads_do_not_divide_is_saved_so_stock_transformers_loads_it(tmp_path):
    """hidden 30 over 4 heads of 8: stock transformers 5 refuses it as LlamaConfig, so the
    checkpoint names MistralForCausalLM without a sliding window, which a process with no
    archscale import loads and computes exactly as the trained LlamaForCausalLM does."""
    import subprocess
    import sys

    from tokenizers import Tokenizer, models

    from archscale.training.model import save_checkpoint

    config = {**BASE, "hidden_size": 30, "num_attention_heads": 4, "num_key_value_heads": 2}
    model = build_model(config, seed=5, init_std=0.2).eval()
    tokenizer_dir = tmp_path / "tokenizer"
    tokenizer_dir.mkdir()
    Tokenizer(models.WordLevel({"[UNK]": 0, "a": 1}, unk_token="[UNK]")).save(
        str(tokenizer_dir / "tokenizer.json"))
    save_checkpoint(model, tmp_path / "model", tokenizer_dir)
    saved = json.loads((tmp_path / "model" / "config.json").read_text())
    assert saved["architectures"] == ["MistralForCausalLM"] and saved["sliding_window"] is None
    ids = torch.randint(0, config["vocab_size"], (2, 20), generator=torch.Generator().manual_seed(2))
    stock = subprocess.run([sys.executable, "-c", STOCK_LOGITS, str(tmp_path / "model"),
                            json.dumps(ids.tolist())], capture_output=True, text=True)
    assert stock.returncode == 0, stock.stderr[-3000:]
    answer = json.loads(stock.stdout.strip().splitlines()[-1])
    assert answer["class"] == "MistralForCausalLM"
    with torch.no_grad():
        expected = model(input_ids=ids).logits
        greedy = model.generate(ids[:1], max_new_tokens=8, do_sample=False)[0, 20:]
    torch.testing.assert_close(torch.tensor(answer["logits"]), expected, atol=1e-5, rtol=0)
    assert answer["greedy"] == greedy.tolist()
    # the evaluation's own forward reads the same checkpoint
    torch.testing.assert_close(LlamaForward.load(tmp_path / "model")(ids), expected,
                               atol=1e-5, rtol=0)
    # a shape its heads divide stays LLaMA
    divided = build_model(BASE, seed=5)
    save_checkpoint(divided, tmp_path / "divided", tokenizer_dir)
    assert json.loads((tmp_path / "divided" / "config.json").read_text())["model_type"] == "llama"


def test_a_truncated_checkpoint_is_named_by_transformers_loader_too(tmp_path):
    """The hf evaluation path (archscale.training.model.load_model) names the damaged file and
    the command that retrains it; safetensors' own message names no file."""
    from archscale.training.model import ModelError, load_model

    build_model(BASE, seed=0).save_pretrained(tmp_path, safe_serialization=True)
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(ModelError, match=rf"{weights}.*damaged or truncated.*--force {weights}"):
        load_model(tmp_path)
