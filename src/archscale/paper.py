"""The paper's three 1B-scale architectures, for checks and benchmarks against its figures.

LLaMA-3.2-1B (the baseline) and the two shapes its search found: Panda-1B (the most accurate)
and Surefire-1B (the fastest at the baseline's loss), all with LLaMA-3.2's vocabulary and tied
embeddings (the paper's Table 1; ../shared/DESIGN.md of this project's design notes).
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
