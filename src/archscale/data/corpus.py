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

One text never lands on both sides of the split: a glob does not follow directory symlinks, a
file reached twice (its real path) is read once, and a document whose text an earlier document
already has (identical files, repeated rows) takes that first copy's split (`Document.split_id`).
Unique documents keep the split of their own id, so a corpus without repeats tokenizes exactly as
before. meta.json's `duplicates` says how many paths were skipped and documents repeated.
"""
from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import re
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from archscale.io import sha256_file, write_array, write_json

EOS_TOKEN = "<|endoftext|>"


class DataError(ValueError):
    """A corpus or tokenizer problem, with the fix in the message."""


@dataclass(frozen=True)
class Document:
    doc_id: str
    text: str
    split_id: str | None = None  # the id whose hash decides the split: the first document with
    #                              this text (None: the document's own id)


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


_WILDCARD = re.compile(r"[*?[]")


@dataclass(frozen=True)
class CorpusFiles:
    """The files data.source.paths selects, in order, and the glob matches skipped."""

    paths: list[Path]
    through_symlinks: int = 0  # directory symlinks a wildcard reached, not followed
    same_file: int = 0         # matches whose real path an earlier match already has


def _entries(folder: str) -> list[os.DirEntry]:
    """A folder's entries; none when it cannot be read."""
    try:
        with os.scandir(folder or os.curdir) as it:
            return list(it)
    except OSError:
        return []


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()
    except OSError:
        return False


def _pattern_files(pattern: str) -> tuple[list[str], list[str]]:
    """The files `glob.glob(pattern, recursive=True)` lists (as often as it lists them), except
    those under a directory symlink at or after the pattern's first wildcard part; and those
    symlinks, which are never entered.

    glob itself follows directory symlinks, and a tree with two links back up (`/usr/lib/
    llvm-14/build/Release` and `Debug+Asserts` both point to `/usr/lib/llvm-14`) makes
    `/usr/**/*.py` list ~2^40 paths: it never ends. This walks the pattern's parts with
    glob's rules (`*`, `?` and `[...]` skip names starting with '.' unless the part does; `**`
    is zero or more folders, none hidden; a literal part is looked up as named) and so lists
    the same strings, in the folders the pattern names itself followed as given (the user's
    choice, symlink or not)."""
    parts = pattern.split(os.sep)
    fixed = next((i for i, part in enumerate(parts) if _WILDCARD.search(part)), len(parts))
    if fixed == len(parts):  # no wildcard: the path itself
        return ([pattern] if os.path.isfile(pattern) else []), []
    base = os.sep.join(parts[:fixed]) or (os.sep if fixed else "")
    rest = [p for p in parts[fixed:-1] if p] + [parts[-1]]  # glob collapses '//'
    files: list[str] = []
    links: dict[str, None] = {}

    def descend(path: str, here: str, is_link: bool, i: int) -> None:
        """Into a folder the pattern reaches; a symlinked one is recorded, never entered."""
        if is_link:
            links[here] = None
        else:
            walk(path, here, i)

    def walk(folder: str, shown: str, i: int) -> None:
        part, last = rest[i], i == len(rest) - 1
        if not part:  # a trailing separator: glob lists folders only
            return
        if not _WILDCARD.search(part):  # a literal part is looked up as named
            path, here = os.path.join(folder, part), os.path.join(shown, part)
            if last and os.path.isfile(path):
                files.append(here)
            elif not last and os.path.isdir(path):
                descend(path, here, os.path.islink(path), i + 1)
            return
        recursive = part == "**"
        if recursive and not last:
            walk(folder, shown, i + 1)  # zero folders
        for entry in _entries(folder):
            if entry.name.startswith(".") and (recursive or not part.startswith(".")):
                continue
            if not recursive and not fnmatch.fnmatch(entry.name, part):
                continue
            here = os.path.join(shown, entry.name)
            if (recursive or not last) and _is_dir(entry):
                descend(entry.path, here, entry.is_symlink(), i if recursive else i + 1)
            elif last and os.path.isfile(entry.path):
                files.append(here)

    walk(base, base, 0)
    return files, list(links)


def corpus_files(patterns: list[str]) -> CorpusFiles:
    """The files the glob patterns match, sorted within each pattern, patterns in order.

    Directory symlinks that a wildcard reaches are not followed (`_pattern_files`), and a file
    matched again (another name, the same real path) is kept once, at its first match. Raises
    DataError naming a pattern that matches no file."""
    files: list[Path] = []
    real_paths: set[str] = set()
    through_symlinks = same_file = 0
    for pattern in patterns:
        matches, links = _pattern_files(os.path.expanduser(pattern))
        through_symlinks += len(links)
        for match in sorted(matches):
            real = os.path.realpath(match)
            if real in real_paths:
                same_file += 1
                continue
            real_paths.add(real)
            files.append(Path(match))
        if not matches:
            hint = ""
            if links:
                hint = (f" (it reaches {links[0]}, a directory symlink, which is not followed: "
                        "name the folder it points to)" if len(links) == 1 else
                        f" (it reaches {len(links)} directory symlinks such as {links[0]}, "
                        "which are not followed: name the folders they point to)")
            raise DataError(f"data.source.paths: {pattern!r} matches no file{hint}; check the "
                            "path (relative paths are relative to the working directory)")
    return CorpusFiles(files, through_symlinks, same_file)


def _first_copies(paths: list[Path]) -> dict[int, int]:
    """{index: index of the first file with the same bytes} for every repeated file in
    `paths`. Only files that share a non-zero size with another are read (two files can hold
    the same bytes only then), so a corpus of distinct files costs one stat per file."""
    by_size: dict[int, list[int]] = {}
    for k, path in enumerate(paths):
        size = path.stat().st_size
        if size:
            by_size.setdefault(size, []).append(k)
    first: dict[int, int] = {}
    for group in by_size.values():
        if len(group) < 2:
            continue
        seen: dict[bytes, int] = {}
        for k in group:  # ascending: the first copy is the earliest in `paths`
            digest = hashlib.sha256(paths[k].read_bytes()).digest()
            if digest in seen:
                first[k] = seen[digest]
            else:
                seen[digest] = k
    return first


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


def iter_documents(source: dict[str, Any], shard: int = 0, num_shards: int = 1,
                   stats: dict[str, int] | None = None) -> Iterator[Document]:
    """Yield this shard's documents. Every document belongs to exactly one shard.

    A `max_bytes` cap is split evenly across shards. A repeated text carries the id of its
    first copy in the corpus's fixed order as `split_id` (local files and the stdlib: every
    shard sees the whole file list; streamed hf datasets are split by id alone). `stats`, when
    given, receives the skipped glob matches and the count of this shard's repeated documents.
    """
    shard_bytes = source.get("max_bytes")
    shard_bytes = None if shard_bytes is None else shard_bytes // num_shards
    max_docs = source.get("max_documents")
    max_docs = None if max_docs is None else -(-max_docs // num_shards)
    used, count = 0, 0
    stats = {} if stats is None else stats
    stats.update(paths_through_symlinks=0, paths_same_file=0, duplicate_documents=0)

    def from_files(paths: list[Path], doc_id: Callable[[Path], str]) -> Iterator[Document]:
        first = _first_copies(paths)
        for k, path in enumerate(paths):
            if k % num_shards == shard:
                split_id = doc_id(paths[first[k]]) if k in first else None
                yield Document(doc_id(path), _read_text_file(path), split_id)

    def from_rows(paths: list[Path], fmt: str, field: str) -> Iterator[Document]:
        # every shard reads every row, so it sees every first copy; a first copy is kept as
        # (file index, row) packed in one int: ~100 bytes a distinct row
        first: dict[bytes, int] = {}
        k = 0
        for i, path in enumerate(paths):
            for row_no, text in enumerate(_rows_of(path, fmt, field)):
                key = hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest() \
                    if text else b""
                at = first.setdefault(key, (i << 40) | row_no)
                if k % num_shards == shard:
                    split_id = None if at == (i << 40) | row_no else \
                        f"{paths[at >> 40]}#{at & ((1 << 40) - 1)}"
                    yield Document(f"{path}#{row_no}", text, split_id)
                k += 1

    def docs() -> Iterator[Document]:
        kind = source["kind"]
        if kind == "python-stdlib":
            root = Path(sysconfig.get_paths()["stdlib"])
            yield from from_files(stdlib_files(), lambda p: str(p.relative_to(root)))
        elif kind == "files":
            fmt = source.get("format", "text")
            files = corpus_files(source["paths"])
            stats.update(paths_through_symlinks=files.through_symlinks,
                         paths_same_file=files.same_file)
            if fmt == "text":
                yield from from_files(files.paths, str)
            else:
                yield from from_rows(files.paths, fmt, source.get("text_field", "text"))
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
        if shard_bytes is not None and used + size > shard_bytes and count > 0:
            break
        if max_docs is not None and count >= max_docs:
            break
        used += size
        count += 1
        stats["duplicate_documents"] += doc.split_id is not None
        yield doc


def is_heldout(doc: Document, val_fraction: float) -> bool:
    """Salted, so the split is independent of the stdlib reading order (also a sha1 of the id).
    A repeated text is decided by its first copy's id, so every copy lands on the same side."""
    return _stable_fraction("validation-split:" + (doc.split_id or doc.doc_id)) < val_fraction


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

    stats: dict[str, int] = {}
    for doc in iter_documents(source, shard, num_shards, stats):
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
            "corpus_sha256": corpus_hash.hexdigest(), "duplicates": stats}


def merge_shards(shard_files: list[tuple[str, str, str]], train_out: str | os.PathLike,
                 val_out: str | os.PathLike, seq_len: int) -> dict[str, Any]:
    """Concatenate shard token files (in shard order) into train.bin and val.bin.

    shard_files: (train.bin, val.bin, summary.json) per shard.
    """
    summaries = [json.loads(Path(s).read_text()) for _, _, s in shard_files]
    dtype = np.dtype(summaries[0]["dtype"])
    totals: dict[str, int] = {}
    hashes: dict[str, str] = {}
    for split, out, index in (("train", train_out, 0), ("val", val_out, 1)):
        for files, summary in zip(shard_files, summaries):
            _check_shard_file(files[index], summary, split, dtype, files[2])
        arrays = [np.fromfile(files[index], dtype=dtype) for files in shard_files]
        merged = np.concatenate(arrays) if arrays else np.empty(0, dtype=dtype)
        if merged.size < seq_len + 1:
            raise DataError(
                f"the {split} split has {merged.size} tokens, fewer than one sequence "
                f"(data.seq_len {seq_len} + 1): the corpus is empty or too small; point "
                f"data.source at more text{' or raise data.val_fraction' if split == 'val' else ''}")
        write_array(out, merged)
        totals[split] = int(merged.size)
        hashes[split] = hashlib.sha256(merged).hexdigest()  # the bytes written
    combined = hashlib.sha256("".join(s["corpus_sha256"] for s in summaries).encode())
    return {"dtype": dtype.name, "train_tokens": totals["train"], "val_tokens": totals["val"],
            "train_sha256": hashes["train"], "val_sha256": hashes["val"],
            "train_documents": sum(s["train_documents"] for s in summaries),
            "val_documents": sum(s["val_documents"] for s in summaries),
            "duplicates": _duplicates(summaries),
            "corpus_sha256": combined.hexdigest(), "shards": summaries}


def _check_shard_file(path: str, summary: dict[str, Any], split: str, dtype: np.dtype,
                      summary_path: str) -> None:
    """A shard's token file must hold the tokens its summary counted (a truncated shard would
    otherwise merge into a short train.bin that meta.json then vouches for)."""
    expected = int(summary[f"{split}_tokens"]) * dtype.itemsize
    size = os.path.getsize(path)
    if size != expected:
        raise DataError(f"{path} holds {size:,} bytes, but {summary_path} counts "
                        f"{summary[f'{split}_tokens']:,} {dtype.name} tokens ({expected:,} bytes):"
                        " the shard is truncated or damaged; rebuild the shards and what was "
                        "built from them with `snakemake --cores all --forcerun tokenize_shard`")


def _duplicates(summaries: list[dict[str, Any]]) -> dict[str, int]:
    """The corpus's skipped glob matches (every shard lists the same files: shard 0's count)
    and repeated documents (each shard counts its own), for meta.json and the merge log."""
    shards = [s.get("duplicates") or {} for s in summaries]
    return {"paths_through_symlinks": int(shards[0].get("paths_through_symlinks", 0)),
            "paths_same_file": int(shards[0].get("paths_same_file", 0)),
            "duplicate_documents": sum(int(d.get("duplicate_documents", 0)) for d in shards)}


# A token file up to this size is also checked against meta.json's sha256 each time a job opens
# it: hashing runs at ~1 GB/s, so this costs at most ~0.25 s (the default study's train.bin is
# 11 MB: ~10 ms). A larger file (a cluster corpus of many GB) is checked by size only, which
# catches truncation, the common damage; hashing it would add seconds to minutes to every job.
HASH_CHECK_MAX_BYTES = 256 << 20
_VERIFIED: set[tuple[str, int, int, int, str]] = set()  # (real path, inode, size, mtime, sha)
_REBUILD = ("rebuild the data stage's files, and what was built from them, with "
            "`snakemake --cores all --forcerun merge_shards`")


def load_tokens(path: str | os.PathLike, meta_path: str | os.PathLike | None = None
                ) -> np.memmap:
    """Open a flat token file read-only with the dtype recorded in meta.json, after checking it
    is the file meta.json describes (`check_tokens`)."""
    path = Path(path)
    meta_path = Path(meta_path) if meta_path else path.parent / "meta.json"
    if not meta_path.exists():
        raise DataError(f"{meta_path} is missing, so {path} cannot be read (meta.json gives its "
                        f"data type and length); {_REBUILD}")
    meta = json.loads(meta_path.read_text())
    check_tokens(path, meta_path, meta)
    return np.memmap(path, dtype=meta["dtype"], mode="r")


def check_tokens(path: str | os.PathLike, meta_path: str | os.PathLike,
                 meta: dict[str, Any]) -> None:
    """Raise DataError when a token file is not the one meta.json describes: a size that is not
    a whole number of tokens, a token count other than meta.json's, or (for files up to
    HASH_CHECK_MAX_BYTES) another sha256. A truncated train.bin otherwise trains silently on
    what is left. The split (train or val) is the file name's stem; a meta.json written before
    token hashes were recorded is checked by size only. A file verified once is not hashed
    again in this process while its real path, inode, size and mtime are unchanged."""
    path = Path(path)
    split = path.name.split(".")[0]
    dtype = np.dtype(meta["dtype"])
    size = path.stat().st_size
    expected = meta.get(f"{split}_tokens")
    says = ("" if expected is None else f"; {meta_path} says {expected:,} tokens "
            f"({expected * dtype.itemsize:,} bytes)")
    if size % dtype.itemsize:
        raise DataError(f"{path} holds {size:,} bytes, not a whole number of {dtype.name} tokens "
                        f"({dtype.itemsize} bytes each){says}: the file is truncated or damaged; "
                        f"{_REBUILD}")
    if expected is not None and size // dtype.itemsize != expected:
        raise DataError(f"{path} holds {size // dtype.itemsize:,} tokens ({size:,} bytes){says}: "
                        f"the file is truncated or was replaced; {_REBUILD}")
    digest = meta.get(f"{split}_sha256")
    if digest is None or size > HASH_CHECK_MAX_BYTES:
        return
    stat = path.stat()
    key = (os.path.realpath(path), stat.st_ino, stat.st_size, stat.st_mtime_ns, digest)
    if key in _VERIFIED:
        return
    actual = sha256_file(path)
    if actual != digest:
        raise DataError(f"{path} has sha256 {actual[:16]}..., but {meta_path} records "
                        f"{digest[:16]}... (same length, other tokens): the file was changed "
                        f"after the data stage wrote it; {_REBUILD}")
    _VERIFIED.add(key)


def write_meta(path: str | os.PathLike, meta: dict[str, Any]) -> None:
    write_json(path, meta)
