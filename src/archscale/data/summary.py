"""The report's Data table: what the models were trained on, in one small CSV.

Why: a researcher reading the fits needs the corpus, its size in tokens and the tokenizer
beside them, without opening meta.json and the tokenizer's files.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping


def data_summary(meta: str | Path, tokenizer_config: str | Path,
                 data: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Rows (item, value) from the corpus's meta.json, the tokenizer's config and the config's
    data section."""
    info = json.loads(Path(meta).read_text())
    tok = json.loads(Path(tokenizer_config).read_text())
    source, tokenizer = data.get("source", {}), data.get("tokenizer", {})
    described = {k: v for k, v in source.items() if v is not None and k != "kind"}
    rows = [
        ("corpus", data.get("name")),
        ("source", f"{source.get('kind')} ({', '.join(f'{k} {v}' for k, v in described.items())})"),
        ("training documents", info.get("train_documents")),
        ("training tokens", info.get("train_tokens")),
        ("validation documents", info.get("val_documents")),
        ("validation tokens", info.get("val_tokens")),
        ("token dtype on disk", info.get("dtype")),
        ("tokenizer", tokenizer.get("kind") if tokenizer.get("kind") != "pretrained"
         else f"pretrained {tokenizer.get('path')}"),
        ("vocabulary size", tokenizer.get("vocab_size", tok.get("vocab_size"))),
        ("sequence length (tokens)", data.get("seq_len")),
        ("shards", len(info.get("shards", [])) or data.get("shards")),
        ("corpus sha256", info.get("corpus_sha256")),
    ]
    return [{"item": item, "value": value} for item, value in rows]
