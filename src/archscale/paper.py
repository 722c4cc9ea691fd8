"""The paper's Table 1 architectures and measured gains, for checks and benchmarks.

At 1B and 3B: LLaMA-3.2 (the baseline) and the two shapes the paper's search found, Panda (the
most accurate) and Surefire (the fastest at the baseline's loss), all with LLaMA-3.2's
vocabulary and tied embeddings. Table 1 gives Panda and Surefire as d_model, GQA and r; at 3B the
integer shapes here are the ones with those values at LLaMA-3.2-3B's N (28 layers, head_dim 128).
Source: Bian et al., "Scaling Laws Meet Model Architecture", ICLR 2026, Table 1.
"""
from __future__ import annotations

PAPER_1B_VOCAB = 128256

PAPER_1B_SHAPES: dict[str, dict[str, int]] = {
    "LLaMA-3.2-1B": dict(d_model=2048, n_layers=16, n_heads=32, n_kv_heads=8, head_dim=64,
                         ffn_dim=8192),
    "Surefire-1B": dict(d_model=2560, n_layers=16, n_heads=36, n_kv_heads=4, head_dim=64,
                        ffn_dim=6144),
    "Panda-1B": dict(d_model=2560, n_layers=16, n_heads=72, n_kv_heads=18, head_dim=64,
                     ffn_dim=4096),
}

PAPER_3B_SHAPES: dict[str, dict[str, int]] = {
    "LLaMA-3.2-3B": dict(d_model=3072, n_layers=28, n_heads=24, n_kv_heads=8, head_dim=128,
                         ffn_dim=8192),
    "Surefire-3B": dict(d_model=4096, n_layers=28, n_heads=42, n_kv_heads=6, head_dim=128,
                        ffn_dim=4096),
    "Panda-3B": dict(d_model=4096, n_layers=28, n_heads=36, n_kv_heads=12, head_dim=128,
                     ffn_dim=4096),
}

#: Table 1's measured inference-throughput gains over LLaMA-3.2 of the same size, on H200
#: (relative: 0.21 is +21 %); None where the paper gives no figure.
PAPER_MEASURED_GAINS: dict[str, dict[str, float | None]] = {
    "Surefire-1B": {"vllm": 0.21, "sglang": 0.47},
    "Panda-1B": {"vllm": -0.33, "sglang": None},
    "Surefire-3B": {"vllm": 0.12, "sglang": 0.17},
    "Panda-3B": {"vllm": -0.23, "sglang": None},
}
