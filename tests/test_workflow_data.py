"""The foundation's targets through the real Snakemake CLI on the tiny study."""
import json

import numpy as np
import pandas as pd

from conftest import run_snakemake


def test_architectures_and_data_targets(tiny_workdir):
    targets = ["results/architectures.csv", "results/data/tiny/meta.json"]
    run_snakemake(tiny_workdir, "--cores", "2", *targets, check=True)
    table = pd.read_csv(tiny_workdir / "results/architectures.csv")
    assert list(table["name"]) == ["a1", "a2", "a3", "b1", "b2", "b3", "c1", "c2", "c3"]
    for column in ("n_params_non_embedding", "n_params_attention", "n_params_mlp",
                   "n_params_embedding", "r_mlp_attn", "d_over_sqrt_n", "gqa_group",
                   "kv_bytes_per_token_bf16"):
        assert column in table
    config = json.loads((tiny_workdir / "results/architectures/b3/config.json").read_text())
    assert config["num_attention_heads"] == 3 and config["head_dim"] == 32
    assert config["vocab_size"] == 512 and config["max_position_embeddings"] >= 64
    meta = json.loads((tiny_workdir / "results/data/tiny/meta.json").read_text())
    train = np.memmap(tiny_workdir / "results/data/tiny/train.bin", dtype=meta["dtype"], mode="r")
    assert train.size == meta["train_tokens"] > 10_000 and int(train.max()) < 512
    assert meta["provenance"]["settings"]["tokenizer"]["vocab_size"] == 512
    assert len(meta["corpus_sha256"]) == 64
    # nothing left to do: a second run schedules no job
    again = run_snakemake(tiny_workdir, "-n", "--cores", "2", *targets, check=True)
    assert "Nothing to be done" in again.stdout + again.stderr
