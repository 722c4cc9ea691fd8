"""Nothing wrong goes into the data silently (issue 31): one text never lands on both sides of
the split, and a token file that is not the one meta.json describes stops whoever reads it.

Each test builds a real corpus with the data stage's own functions and checks the real token
files, decoded back to text.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from test_data import eos_documents

from archscale.data.corpus import (DataError, corpus_files, iter_documents, load_tokens,
                                   merge_shards, tokenize_shard, train_tokenizer, write_meta)

VOCAB = 300


def _text(i: int) -> str:
    return f"def document_{i}(x):\n    return x * {i} + {i * i}  # text number {i}\n" * 12


def build(source: dict, root: Path, shards: int = 2, val_fraction: float = 0.5) -> dict:
    """The data stage as the rules run it: tokenizer, shards, merge, meta.json."""
    tok_cfg = {"kind": "bpe", "vocab_size": VOCAB, "bos_token_id": 0, "eos_token_id": 0,
               "train_bytes": 10**6}
    root.mkdir(parents=True, exist_ok=True)
    train_tokenizer(source, tok_cfg, shards, root / "tokenizer")
    triples = []
    for i in range(shards):
        files = tuple(str(root / f"{i}.{k}") for k in ("train.bin", "val.bin", "json"))
        summary = tokenize_shard(source, root / "tokenizer", i, shards, val_fraction, VOCAB,
                                 *files[:2])
        Path(files[2]).write_text(json.dumps(summary))
        triples.append(files)
    meta = merge_shards(triples, root / "train.bin", root / "val.bin", seq_len=16)
    write_meta(root / "meta.json", meta)
    return meta


def decoded_documents(root: Path, split: str) -> list[str]:
    """The documents of one split, decoded from its token file (EOS-separated)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(root / "tokenizer")
    return eos_documents(load_tokens(root / f"{split}.bin", root / "meta.json").tolist(),
                         tok.decode)


def test_a_symlink_loop_gives_each_file_once_and_leaks_nothing(tmp_path):
    """The issue's case: 40 files and `ln -s . loop` under a `**` glob gave 1,640 documents,
    the same text on both sides of the split."""
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i in range(40):
        (corpus / f"doc{i:02d}.txt").write_text(_text(i))
    plain = {"kind": "files", "paths": [str(corpus / "**" / "*.txt")], "format": "text"}
    reference = build(plain, tmp_path / "plain")
    os.symlink(".", corpus / "loop")
    stats: dict[str, int] = {}
    docs = [d for s in range(2) for d in iter_documents(plain, s, 2, stats if s == 0 else None)]
    assert len(docs) == 40 and len({d.text for d in docs}) == 40
    assert stats["paths_through_symlinks"] == 1  # the loop, reached and not followed
    meta = build(plain, tmp_path / "looped")
    assert meta["train_documents"] + meta["val_documents"] == 40
    assert meta["duplicates"]["paths_through_symlinks"] == stats["paths_through_symlinks"]
    for name in ("train.bin", "val.bin"):  # the same tokens as without the loop
        assert (tmp_path / "looped" / name).read_bytes() == (tmp_path / "plain" / name).read_bytes()
    assert meta["train_sha256"] == reference["train_sha256"]
    train, val = (decoded_documents(tmp_path / "looped", s) for s in ("train", "val"))
    assert val and not set(train) & set(val)


def test_identical_files_under_other_names_land_on_one_side(tmp_path):
    """Copies (not links) of 30 files: every copy takes its first copy's split. At
    val_fraction 0.5, splitting by name would put some text on both sides (all but surely)."""
    corpus = tmp_path / "corpus"
    for sub in ("a", "b_copy"):
        (corpus / sub).mkdir(parents=True)
        for i in range(30):
            (corpus / sub / f"{i:02d}.txt").write_text(_text(i))
    (corpus / "unique.txt").write_text(_text(99))
    source = {"kind": "files", "paths": [str(corpus / "**" / "*.txt")], "format": "text"}
    meta = build(source, tmp_path / "data")
    assert meta["duplicates"]["duplicate_documents"] == 30
    train, val = (decoded_documents(tmp_path / "data", s) for s in ("train", "val"))
    assert sorted(train + val) == sorted([_text(i) for i in range(30)] * 2 + [_text(99)])
    assert val and train and not set(train) & set(val)
    # a file named twice (two patterns, a file symlink) is read once
    os.symlink(corpus / "unique.txt", corpus / "alias.txt")
    twice = corpus_files([str(corpus / "*.txt"), str(corpus / "unique.txt")])
    assert [p.name for p in twice.paths] == ["alias.txt"] and twice.same_file == 2


def test_repeated_jsonl_rows_land_on_one_side(tmp_path):
    rows = [_text(i % 25) for i in range(75)]  # each text three times
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps({"text": t}) + "\n" for t in rows))
    source = {"kind": "files", "paths": [str(path)], "format": "jsonl"}
    meta = build(source, tmp_path / "data", shards=3)
    assert meta["duplicates"]["duplicate_documents"] == 50
    train, val = (decoded_documents(tmp_path / "data", s) for s in ("train", "val"))
    assert len(train) + len(val) == 75 and val and not set(train) & set(val)


def test_a_glob_that_only_reaches_files_through_a_symlink_says_so(tmp_path):
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "a.txt").write_text("text")
    (tmp_path / "view").mkdir()
    os.symlink(tmp_path / "real", tmp_path / "view" / "link")
    with pytest.raises(DataError, match="directory symlink, which is not followed"):
        corpus_files([str(tmp_path / "view" / "*" / "*.txt")])
    # a folder the pattern names itself is the user's choice, symlink or not
    assert len(corpus_files([str(tmp_path / "view" / "link" / "*.txt")]).paths) == 1


# ---------------------------------------------------------------------------------------------
# Token files against meta.json
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tokens")
    path = root / "rows.jsonl"
    path.write_text("".join(json.dumps({"text": _text(i)}) + "\n" for i in range(60)))
    build({"kind": "files", "paths": [str(path)], "format": "jsonl"}, root / "data",
          val_fraction=0.2)
    return root / "data"


def damaged_copy(built: Path, tmp_path: Path) -> Path:
    data = tmp_path / "data"
    shutil.copytree(built, data)
    return data


def test_intact_token_files_load(built):
    meta = json.loads((built / "meta.json").read_text())
    assert len(load_tokens(built / "train.bin", built / "meta.json")) == meta["train_tokens"]
    assert len(load_tokens(built / "val.bin")) == meta["val_tokens"]


def test_a_token_file_truncated_to_whole_tokens_names_both_lengths_and_the_fix(built, tmp_path):
    data = damaged_copy(built, tmp_path)
    meta = json.loads((data / "meta.json").read_text())
    tokens = np.fromfile(data / "train.bin", dtype=meta["dtype"])
    tokens[: len(tokens) // 100].tofile(data / "train.bin")  # the 1 % slice
    with pytest.raises(DataError) as err:
        load_tokens(data / "train.bin", data / "meta.json")
    message = str(err.value)
    for needle in (str(data / "train.bin"), f"{len(tokens) // 100:,} tokens",
                   f"says {meta['train_tokens']:,} tokens", "--forcerun merge_shards"):
        assert needle in message, message


def test_a_token_file_short_of_a_whole_token_names_the_file(built, tmp_path):
    data = damaged_copy(built, tmp_path)
    with open(data / "val.bin", "r+b") as handle:
        handle.truncate((data / "val.bin").stat().st_size - 3)
    with pytest.raises(DataError, match="not a whole number of uint16 tokens") as err:
        load_tokens(data / "val.bin", data / "meta.json")
    assert str(data / "val.bin") in str(err.value) and "--forcerun merge_shards" in str(err.value)


def test_a_token_file_with_other_tokens_fails_its_hash(built, tmp_path):
    data = damaged_copy(built, tmp_path)
    meta = json.loads((data / "meta.json").read_text())
    tokens = np.fromfile(data / "train.bin", dtype=meta["dtype"])
    tokens[::-1].tofile(data / "train.bin")
    with pytest.raises(DataError, match="sha256 .* the file was changed after the data stage"):
        load_tokens(data / "train.bin", data / "meta.json")


def test_a_missing_meta_json_is_an_error_not_a_guess(built, tmp_path):
    data = damaged_copy(built, tmp_path)
    (data / "meta.json").unlink()
    with pytest.raises(DataError, match="meta.json is missing"):
        load_tokens(data / "train.bin")


def test_a_truncated_shard_stops_the_merge(built, tmp_path):
    data = damaged_copy(built, tmp_path)
    with open(data / "1.train.bin", "r+b") as handle:
        handle.truncate(100)
    triples = [tuple(str(data / f"{i}.{k}") for k in ("train.bin", "val.bin", "json"))
               for i in range(2)]
    with pytest.raises(DataError, match="1.train.bin holds 100 bytes, but .*1.json counts"
                                        ".*--forcerun tokenize_shard"):
        merge_shards(triples, data / "train.bin", data / "val.bin", seq_len=16)


def test_training_on_a_truncated_train_bin_stops_before_any_output(built, tmp_path):
    from test_train import tiny_job, write_arch

    data = damaged_copy(built, tmp_path)
    meta = json.loads((data / "meta.json").read_text())
    np.fromfile(data / "train.bin", dtype=meta["dtype"])[:2000].tofile(data / "train.bin")
    out = tmp_path / "run"
    job = tiny_job(data, out, arch=write_arch(out / "arch" / "config.json", vocab=VOCAB))
    from archscale.training.loop import run

    with pytest.raises(DataError, match="train.bin holds 2,000 tokens"):
        run(job)
    assert not (out / "metrics.json").exists() and not (out / "model").exists()
