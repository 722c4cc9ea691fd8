"""The data stage: read a corpus, train or load a tokenizer, tokenize in shards, merge.

Layout under results/data/<corpus>/:
    tokenizer/            Hugging Face tokenizer files (AutoTokenizer.from_pretrained loads them)
    shards/<i>.train.bin  one shard's training tokens (flat, uint16 or uint32)
    shards/<i>.val.bin    one shard's held-out tokens
    shards/<i>.json       that shard's counts and corpus hash
    train.bin, val.bin    the merged flat token files (numpy.memmap(path, dtype=meta["dtype"]))
    meta.json             token counts, dtype, corpus sha256, tokenizer hash, provenance

Documents are separated by the EOS token. A document goes to the validation split when a hash of
its id falls below val_fraction, so the split does not depend on the number of shards.
"""
from __future__ import annotations

import glob
import hashlib
import json
import os
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from archscale.io import sha256_file, write_array, write_json

EOS_TOKEN = "<|endoftext|>"


class DataError(ValueError):
    """A corpus or tokenizer problem, with the fix in the message."""


@dataclass(frozen=True)
class Document:
    doc_id: str
    text: str


# ---------------------------------------------------------------------------------------------
# Corpus readers
# ---------------------------------------------------------------------------------------------

def _stable_fraction(key: str) -> float:
    """A number in [0, 1) from a string, the same on every machine and Python run."""
    return int.from_bytes(hashlib.sha1(key.encode()).digest()[:8], "big") / 2.0 ** 64


def stdlib_files() -> list[Path]:
    """The installed Python standard library's .py files, in a fixed pseudo-random order."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = [p for p in root.rglob("*.py")
             if "site-packages" not in p.parts and "dist-packages" not in p.parts and p.is_file()]
    return sorted(files, key=lambda p: hashlib.sha1(str(p.relative_to(root)).encode()).digest())


def _local_files(source: dict[str, Any]) -> list[Path]:
    files: list[Path] = []
    for pattern in source["paths"]:
        matches = sorted(glob.glob(os.path.expanduser(pattern), recursive=True))
        if not matches:
            raise DataError(f"data.source.paths: {pattern!r} matches no file; check the path "
                            "(relative paths are relative to the working directory)")
        files.extend(Path(m) for m in matches if Path(m).is_file())
    return files


def _read_text_file(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace")


def _rows_of(path: Path, fmt: str, field: str) -> Iterator[str]:
    if fmt == "jsonl":
        with open(path, encoding="utf-8") as handle:
            for line_no, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                row = json.loads(line)
                if field not in row:
                    raise DataError(f"{path}:{line_no}: no field {field!r}; set "
                                    "data.source.text_field to the field holding the text")
                yield row[field]
    elif fmt == "parquet":
        import pyarrow.parquet as pq
        table = pq.read_table(path)
        if field not in table.column_names:
            raise DataError(f"{path}: no column {field!r} (columns: {table.column_names}); "
                            "set data.source.text_field")
        yield from (t for t in table.column(field).to_pylist() if t)
    else:
        raise DataError(f"unknown data.source.format {fmt!r}")


def iter_documents(source: dict[str, Any], shard: int = 0, num_shards: int = 1
                   ) -> Iterator[Document]:
    """Yield this shard's documents. Every document belongs to exactly one shard.

    A `max_bytes` cap is split evenly across shards.
    """
    budget = source.get("max_bytes")
    budget = None if budget is None else budget // num_shards
    max_docs = source.get("max_documents")
    max_docs = None if max_docs is None else -(-max_docs // num_shards)
    used, count = 0, 0

    def docs() -> Iterator[Document]:
        kind = source["kind"]
        if kind == "python-stdlib":
            root = Path(sysconfig.get_paths()["stdlib"])
            for k, path in enumerate(stdlib_files()):
                if k % num_shards == shard:
                    yield Document(str(path.relative_to(root)), _read_text_file(path))
        elif kind == "files":
            fmt = source.get("format", "text")
            k = 0
            for path in _local_files(source):
                if fmt == "text":
                    if k % num_shards == shard:
                        yield Document(str(path), _read_text_file(path))
                    k += 1
                else:
                    for row_no, text in enumerate(_rows_of(path, fmt, source.get("text_field", "text"))):
                        if k % num_shards == shard:
                            yield Document(f"{path}#{row_no}", text)
                        k += 1
        elif kind == "hf":
            from datasets import load_dataset  # cluster users only; never in tests
            ds = load_dataset(source["dataset"], source.get("dataset_config"),
                              split=source.get("split", "train"), streaming=True)
            field = source.get("text_field", "text")
            for k, row in enumerate(ds):
                if k % num_shards == shard:
                    yield Document(f"{source['dataset']}#{k}", row[field])
        else:
            raise DataError(f"unknown data.source.kind {kind!r}")

    for doc in docs():
        if not doc.text:
            continue
        size = len(doc.text.encode("utf-8"))
        if budget is not None and used + size > budget and count > 0:
            break
        if max_docs is not None and count >= max_docs:
            break
        used += size
        count += 1
        yield doc


def is_heldout(doc: Document, val_fraction: float) -> bool:
    """Salted, so the split is independent of the stdlib reading order (also a sha1 of the id)."""
    return _stable_fraction("validation-split:" + doc.doc_id) < val_fraction


# ---------------------------------------------------------------------------------------------
# Tokenizer
# ---------------------------------------------------------------------------------------------

def train_tokenizer(source: dict[str, Any], tokenizer_cfg: dict[str, Any], num_shards: int,
                    out_dir: str | os.PathLike) -> dict[str, Any]:
    """Train a byte-level BPE on up to `train_bytes` of the corpus and save it in HF format."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    limit = tokenizer_cfg.get("train_bytes", 20_000_000)

    def sample() -> Iterator[str]:
        used = 0
        iterators = [iter_documents(source, s, num_shards) for s in range(num_shards)]
        while iterators and used < limit:
            for it in list(iterators):
                doc = next(it, None)
                if doc is None:
                    iterators.remove(it)
                    continue
                used += len(doc.text.encode("utf-8"))
                yield doc.text

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=tokenizer_cfg["vocab_size"],
                                  special_tokens=[EOS_TOKEN],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tokenizer.train_from_iterator(sample(), trainer=trainer)
    if tokenizer.get_vocab_size() == len(pre_tokenizers.ByteLevel.alphabet()) + 1:
        raise DataError("the corpus is empty: the tokenizer learned no merges; check "
                        "data.source (paths, max_bytes) points at text")
    eos_id = tokenizer.token_to_id(EOS_TOKEN)
    for key in ("bos_token_id", "eos_token_id"):
        if tokenizer_cfg.get(key, 0) != eos_id:
            raise DataError(f"data.tokenizer.{key} must be {eos_id} (the id of {EOS_TOKEN}) for a "
                            "trained BPE tokenizer")
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token=EOS_TOKEN,
                                   eos_token=EOS_TOKEN, unk_token=None, pad_token=EOS_TOKEN,
                                   model_max_length=1 << 30)
    _save_tokenizer_atomically(fast, out_dir)
    return tokenizer_summary(out_dir, tokenizer_cfg)


def load_pretrained_tokenizer(tokenizer_cfg: dict[str, Any], out_dir: str | os.PathLike
                              ) -> dict[str, Any]:
    """Copy a pretrained tokenizer (local directory, or hub name on a cluster) into out_dir."""
    from transformers import AutoTokenizer

    path = tokenizer_cfg["path"]
    try:
        tok = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as exc:
        raise DataError(f"data.tokenizer.path: cannot load a tokenizer from {path!r} ({exc}); "
                        "give a local directory holding tokenizer.json, or a hub name on a "
                        "machine with hub access") from exc
    if len(tok) > tokenizer_cfg["vocab_size"]:
        raise DataError(f"data.tokenizer.vocab_size ({tokenizer_cfg['vocab_size']}) is smaller "
                        f"than the tokenizer's {len(tok)} tokens; set it to at least {len(tok)}")
    _save_tokenizer_atomically(tok, out_dir)
    return tokenizer_summary(out_dir, tokenizer_cfg)


def _save_tokenizer_atomically(tokenizer: Any, out_dir: str | os.PathLike) -> None:
    """save_pretrained into a temporary folder beside out_dir, then rename each file into
    place: a kill leaves no half-written tokenizer.json under its final name."""
    import tempfile

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".tokenizer.", dir=out.parent) as tmp:
        tokenizer.save_pretrained(tmp)
        for file in sorted(Path(tmp).iterdir()):
            os.replace(file, out / file.name)


def tokenizer_summary(tokenizer_dir: str | os.PathLike, tokenizer_cfg: dict[str, Any]
                      ) -> dict[str, Any]:
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    path = Path(tokenizer_dir) / "tokenizer.json"
    return {"tokenizer_vocab_size": len(tok), "vocab_size": tokenizer_cfg["vocab_size"],
            "eos_token_id": tok.eos_token_id, "bos_token_id": tok.bos_token_id,
            "tokenizer_sha256": sha256_file(path) if path.exists() else None}


def token_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16) if vocab_size <= 1 << 16 else np.dtype(np.uint32)


# ---------------------------------------------------------------------------------------------
# Tokenizing shards and merging
# ---------------------------------------------------------------------------------------------

def tokenize_shard(source: dict[str, Any], tokenizer_dir: str | os.PathLike, shard: int,
                   num_shards: int, val_fraction: float, vocab_size: int,
                   train_out: str | os.PathLike, val_out: str | os.PathLike,
                   batch_docs: int = 256) -> dict[str, Any]:
    """Tokenize one shard with the tokenizer's batch encoding; EOS after each document."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(Path(tokenizer_dir) / "tokenizer.json"))
    eos_id = tokenizer.token_to_id(EOS_TOKEN)
    if eos_id is None:
        from transformers import AutoTokenizer
        eos_id = AutoTokenizer.from_pretrained(tokenizer_dir).eos_token_id
    dtype = token_dtype(vocab_size)
    parts: dict[str, list[np.ndarray]] = {"train": [], "val": []}
    counts = {"train": 0, "val": 0}
    docs = {"train": 0, "val": 0}
    corpus_hash = hashlib.sha256()
    batch: list[Document] = []

    def flush() -> None:
        encodings = tokenizer.encode_batch([d.text for d in batch], add_special_tokens=False)
        for doc, enc in zip(batch, encodings):
            split = "val" if is_heldout(doc, val_fraction) else "train"
            ids = np.empty(len(enc.ids) + 1, dtype=dtype)
            ids[:-1] = enc.ids
            ids[-1] = eos_id
            parts[split].append(ids)
            counts[split] += len(ids)
            docs[split] += 1
        batch.clear()

    for doc in iter_documents(source, shard, num_shards):
        corpus_hash.update(doc.doc_id.encode() + b"\0" + doc.text.encode("utf-8") + b"\0")
        batch.append(doc)
        if len(batch) >= batch_docs:
            flush()
    if batch:
        flush()
    for split, out in (("train", train_out), ("val", val_out)):
        array = np.concatenate(parts[split]) if parts[split] else np.empty(0, dtype=dtype)
        if array.size and int(array.max()) >= vocab_size:
            raise DataError(f"token id {int(array.max())} >= data.tokenizer.vocab_size "
                            f"{vocab_size}; raise vocab_size")
        write_array(out, array)
    return {"shard": shard, "num_shards": num_shards, "dtype": dtype.name,
            "train_tokens": counts["train"], "val_tokens": counts["val"],
            "train_documents": docs["train"], "val_documents": docs["val"],
            "corpus_sha256": corpus_hash.hexdigest()}


def merge_shards(shard_files: list[tuple[str, str, str]], train_out: str | os.PathLike,
                 val_out: str | os.PathLike, seq_len: int) -> dict[str, Any]:
    """Concatenate shard token files (in shard order) into train.bin and val.bin.

    shard_files: (train.bin, val.bin, summary.json) per shard.
    """
    summaries = [json.loads(Path(s).read_text()) for _, _, s in shard_files]
    dtype = np.dtype(summaries[0]["dtype"])
    totals: dict[str, int] = {}
    for split, out, index in (("train", train_out, 0), ("val", val_out, 1)):
        arrays = [np.fromfile(files[index], dtype=dtype) for files in shard_files]
        merged = np.concatenate(arrays) if arrays else np.empty(0, dtype=dtype)
        if merged.size < seq_len + 1:
            raise DataError(
                f"the {split} split has {merged.size} tokens, fewer than one sequence "
                f"(data.seq_len {seq_len} + 1): the corpus is empty or too small; point "
                f"data.source at more text{' or raise data.val_fraction' if split == 'val' else ''}")
        write_array(out, merged)
        totals[split] = int(merged.size)
    combined = hashlib.sha256("".join(s["corpus_sha256"] for s in summaries).encode())
    return {"dtype": dtype.name, "train_tokens": totals["train"], "val_tokens": totals["val"],
            "train_documents": sum(s["train_documents"] for s in summaries),
            "val_documents": sum(s["val_documents"] for s in summaries),
            "corpus_sha256": combined.hexdigest(), "shards": summaries}


def load_tokens(path: str | os.PathLike, meta_path: str | os.PathLike | None = None
                ) -> np.memmap:
    """Open a flat token file read-only with the dtype recorded in meta.json."""
    path = Path(path)
    meta_path = Path(meta_path) if meta_path else path.parent / "meta.json"
    dtype = json.loads(meta_path.read_text())["dtype"] if meta_path.exists() else "uint16"
    return np.memmap(path, dtype=dtype, mode="r")


def write_meta(path: str | os.PathLike, meta: dict[str, Any]) -> None:
    write_json(path, meta)
