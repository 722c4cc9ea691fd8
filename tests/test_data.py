"""The data stage as a library: corpus readers, tokenizer, shards, merge."""
import json

import numpy as np
import pytest

from archscale.data.corpus import (DataError, iter_documents, merge_shards, tokenize_shard,
                                   train_tokenizer)

TEXTS = [f"def function_{i}(x):\n    return x * {i} + {i * i}  # document {i}\n" * 20
         for i in range(60)]


@pytest.fixture
def jsonl_source(tmp_path):
    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(json.dumps({"text": t, "id": i}) + "\n" for i, t in enumerate(TEXTS)))
    return {"kind": "files", "paths": [str(path)], "format": "jsonl", "text_field": "text"}


def build(source, tmp_path, shards=2, vocab=300, val_fraction=0.2):
    tok_cfg = {"kind": "bpe", "vocab_size": vocab, "bos_token_id": 0, "eos_token_id": 0,
               "train_bytes": 10**6}
    tok_dir = tmp_path / "tokenizer"
    summary = train_tokenizer(source, tok_cfg, shards, tok_dir)
    triples = []
    for i in range(shards):
        files = tuple(str(tmp_path / f"{i}.{k}") for k in ("train.bin", "val.bin", "json"))
        shard = tokenize_shard(source, tok_dir, i, shards, val_fraction, vocab, *files[:2])
        (tmp_path / f"{i}.json").write_text(json.dumps(shard))
        triples.append(files)
    meta = merge_shards(triples, tmp_path / "train.bin", tmp_path / "val.bin", seq_len=16)
    return tok_dir, summary, meta


def eos_documents(ids: list[int], decode, eos: int = 0) -> list[str]:
    """The documents of a token stream whose documents each end in EOS, decoded."""
    docs, current = [], []
    for t in ids:
        if t == eos:
            docs.append(decode(current))
            current = []
        else:
            current.append(t)
    return docs


def test_every_document_in_exactly_one_shard(jsonl_source):
    seen = [d.doc_id for s in range(3) for d in iter_documents(jsonl_source, s, 3)]
    assert sorted(seen) == sorted(f"{jsonl_source['paths'][0]}#{i}" for i in range(60))


def test_round_trip_and_meta(jsonl_source, tmp_path):
    from transformers import AutoTokenizer
    tok_dir, summary, meta = build(jsonl_source, tmp_path)
    assert summary["tokenizer_vocab_size"] <= 300 and summary["eos_token_id"] == 0
    tok = AutoTokenizer.from_pretrained(tok_dir)
    train = np.memmap(tmp_path / "train.bin", dtype=meta["dtype"], mode="r")
    val = np.memmap(tmp_path / "val.bin", dtype=meta["dtype"], mode="r")
    assert meta["train_tokens"] == train.size and meta["val_tokens"] == val.size
    assert meta["train_documents"] + meta["val_documents"] == 60 and meta["val_documents"] > 0
    # documents are separated by EOS and decode back to the exact text
    docs = eos_documents(np.concatenate([train, val]).tolist(), tok.decode)
    assert sorted(docs) == sorted(TEXTS)


def test_split_and_tokens_deterministic(jsonl_source, tmp_path):
    _, _, meta_a = build(jsonl_source, tmp_path / "a")
    _, _, meta_b = build(jsonl_source, tmp_path / "b")
    assert meta_a["corpus_sha256"] == meta_b["corpus_sha256"]
    for name in ("train.bin", "val.bin"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    # the validation split does not depend on the number of shards
    _, _, meta_c = build(jsonl_source, tmp_path / "c", shards=3)
    assert meta_c["val_tokens"] == meta_a["val_tokens"]


def test_empty_corpus_is_a_clear_error(tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    source = {"kind": "files", "paths": [str(empty)], "format": "jsonl"}
    with pytest.raises(DataError, match="corpus is empty"):
        train_tokenizer(source, {"kind": "bpe", "vocab_size": 300}, 1, tmp_path / "tok")


def test_missing_corpus_names_the_path(tmp_path):
    source = {"kind": "files", "paths": [str(tmp_path / "nope/*.txt")], "format": "text"}
    with pytest.raises(DataError, match="matches no file"):
        list(iter_documents(source))


def test_missing_text_field(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text('{"body": "x"}\n')
    source = {"kind": "files", "paths": [str(path)], "format": "jsonl", "text_field": "text"}
    with pytest.raises(DataError, match="text_field"):
        list(iter_documents(source))


def test_stdlib_corpus_is_real_and_capped():
    docs = list(iter_documents({"kind": "python-stdlib", "max_bytes": 200_000}, 0, 2))
    size = sum(len(d.text.encode()) for d in docs)
    assert 50_000 < size <= 100_000 and any("def " in d.text for d in docs)
