"""Architecture accounting against the paper's Table 1 and hand-computed values."""
import math

import numpy as np
import pytest

from archscale.architecture import (Architecture, ArchitectureError, ShapeTargets,
                                    kv_bytes_per_token, non_embedding_params, solve_shape)

V = 128256
SHAPES = {  # d, L, h, h_kv, d_h, f  (DESIGN.md and issue 2)
    "llama-3.2-1b": (2048, 16, 32, 8, 64, 8192),
    "llama-3.2-3b": (3072, 28, 24, 8, 128, 8192),
    "panda-1b": (2560, 16, 72, 18, 64, 4096),
    "surefire-1b": (2560, 16, 36, 4, 64, 6144),
}


def make(name: str) -> Architecture:
    return Architecture(name, *SHAPES[name], vocab_size=V, tie_word_embeddings=True)


@pytest.mark.parametrize("name,r,x", [("llama-3.2-1b", 4.80, 0.066), ("llama-3.2-3b", 3.0, 0.058),
                                      ("panda-1b", 1.07, 0.082), ("surefire-1b", 3.6, 0.082)])
def test_table1_ratios(name, r, x):
    arch = make(name)
    assert round(arch.r_mlp_attn, 2) == pytest.approx(r)
    assert round(arch.d_over_sqrt_n, 3) == pytest.approx(x)


def test_llama_1b_counts_by_hand():
    arch = make("llama-3.2-1b")
    attn = 2048 * 32 * 64 + 2 * 2048 * 8 * 64 + 32 * 64 * 2048
    mlp = 3 * 2048 * 8192
    assert arch.n_params_attention == 16 * attn
    assert arch.n_params_mlp == 16 * mlp
    assert arch.n_params_non_embedding == 973_078_528  # 973.1M, Table 1
    assert arch.n_params_embedding == V * 2048          # tied
    assert arch.gqa_group == 4
    # K and V, 16 layers, 8 kv heads, 64 dims, 2 bytes
    assert arch.kv_bytes_per_token() == 2 * 16 * 8 * 64 * 2 == 32768
    # total with norms matches the published 1.24B of LLaMA-3.2-1B
    assert arch.n_params_total == pytest.approx(1.2358e9, rel=1e-3)


def test_untied_embeddings_count_twice():
    tied = make("llama-3.2-1b")
    untied = Architecture("u", *SHAPES["llama-3.2-1b"], vocab_size=V, tie_word_embeddings=False)
    assert untied.n_params_embedding == 2 * tied.n_params_embedding
    assert untied.n_params_non_embedding == tied.n_params_non_embedding


def test_flops_by_hand():
    arch = Architecture("t", d_model=8, n_layers=2, n_heads=2, n_kv_heads=1, head_dim=4,
                        ffn_dim=16, vocab_size=10)
    n = 2 * (2 * 8 * 2 * 4 + 2 * 8 * 1 * 4 + 3 * 8 * 16)
    assert arch.n_params_non_embedding == n
    assert arch.forward_flops_per_token(5) == 2 * (n + 80) + 4 * 2 * 2 * 4 * 5
    assert arch.prefill_flops(3) == 2 * (n + 80) * 3 + 4 * 2 * 2 * 4 * 6


def test_formulas_vectorise():
    d = np.array([2048, 2560])
    n = non_embedding_params(d, 16, np.array([32, 72]), np.array([8, 18]), 64,
                             np.array([8192, 4096]))
    assert n.tolist() == [make("llama-3.2-1b").n_params_non_embedding,
                          make("panda-1b").n_params_non_embedding]
    assert kv_bytes_per_token(16, np.array([8, 4]), 64).tolist() == [32768, 16384]


def test_hf_config_round_trip():
    arch = make("surefire-1b")
    again = Architecture.from_hf_config(arch.hf_config(), name="surefire-1b")
    assert again == arch


def test_hf_config_loads_in_transformers():
    """Panda-1B's 72 heads do not divide d_model 2560; LLaMA allows it with explicit head_dim."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from archscale.hf_compat import allow_decoupled_head_dim
    allow_decoupled_head_dim()
    cfg = LlamaConfig(**make("panda-1b").hf_config())
    assert cfg.head_dim == 64 and cfg.num_key_value_heads == 18 and cfg.tie_word_embeddings
    small = Architecture("p", d_model=40, n_layers=1, n_heads=3, n_kv_heads=1, head_dim=32,
                         ffn_dim=64, vocab_size=100, tie_word_embeddings=True)
    model = LlamaForCausalLM(LlamaConfig(**small.hf_config()))
    counted = sum(p.numel() for n, p in model.named_parameters()
                  if ".layers." in n and "norm" not in n)
    assert counted == small.n_params_non_embedding
    assert sum(p.numel() for p in model.parameters()) == small.n_params_total
    # the relaxed validator still rejects what LLaMA cannot run
    with pytest.raises(Exception, match="num_key_value_heads"):
        LlamaConfig(hidden_size=64, num_attention_heads=6, num_key_value_heads=4, head_dim=32)


@pytest.mark.parametrize("kwargs,field", [
    (dict(n_heads=6, n_kv_heads=4), "not divisible by n_kv_heads"),
    (dict(d_model=-8), "d_model must be a positive integer"),
    (dict(head_dim=33), "head_dim"),
])
def test_invalid_shapes_name_the_field(kwargs, field):
    base = dict(name="bad", d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=32,
                ffn_dim=128, vocab_size=512)
    base.update(kwargs)
    with pytest.raises(ArchitectureError, match="'bad'") as err:
        Architecture(**base)
    assert field in str(err.value)


def test_solve_shape_recovers_llama_proportions():
    shape = solve_shape(ShapeTargets(n_params=973.1e6, d_over_sqrt_n=0.066, r_mlp_attn=4.8,
                                     gqa_group=4, n_layers=16, head_dim=64))
    arch = Architecture("solved", **shape, vocab_size=V)
    assert arch.n_params_non_embedding == pytest.approx(973.1e6, rel=0.02)
    assert arch.d_over_sqrt_n == pytest.approx(0.066, rel=0.02)
    assert arch.r_mlp_attn == pytest.approx(4.8, rel=0.02)
    assert arch.gqa_group == 4 and shape["ffn_dim"] % 64 == 0


def test_solve_shape_rejects_unreachable_target():
    with pytest.raises(ArchitectureError, match="no integer shape meets the targets"):
        # one layer of head_dim 512 cannot make a 20k-parameter model with r = 1
        solve_shape(ShapeTargets(n_params=2e4, d_over_sqrt_n=0.1, r_mlp_attn=1.0, gqa_group=1,
                                 n_layers=1, head_dim=512), name="tiny")
