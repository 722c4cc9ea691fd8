"""Tokenization speed on the default corpus: batch encoding vs one-document-at-a-time.

    python benchmarks/bench_tokenize.py [--tokenizer results/data/stdlib/tokenizer] [--threads 2]

Reads the default study's corpus (the installed Python standard library, capped as in
config.yaml), trains the study's tokenizer if none is given, then times
`Tokenizer.encode_batch` (what the data stage uses, Rust threads = --threads) against a baseline
loop of `Tokenizer.encode` in the same process, and prints tokens/s and the ratio.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokenizer", type=Path, default=ROOT / "results/data/stdlib/tokenizer")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch-docs", type=int, default=256)
    args = parser.parse_args()
    os.environ["RAYON_NUM_THREADS"] = str(args.threads)  # before tokenizers starts its pool

    from tokenizers import Tokenizer

    from archscale.config import load_study
    from archscale.data.corpus import iter_documents, train_tokenizer

    config = load_study(ROOT / "config.yaml").config
    source, tok_cfg = config["data"]["source"], config["data"]["tokenizer"]
    tok_dir = args.tokenizer
    if not (tok_dir / "tokenizer.json").exists():
        tok_dir = Path(tempfile.mkdtemp()) / "tokenizer"
        print(f"training the default tokenizer into {tok_dir} ...", file=sys.stderr)
        train_tokenizer(source, tok_cfg, config["data"]["shards"], tok_dir)
    tokenizer = Tokenizer.from_file(str(tok_dir / "tokenizer.json"))
    texts = [d.text for d in iter_documents(source, 0, 1)]
    n_bytes = sum(len(t.encode()) for t in texts)
    print(f"corpus: {len(texts)} documents, {n_bytes / 1e6:.1f} MB; threads {args.threads}")

    t0 = time.perf_counter()
    tokens = 0
    for i in range(0, len(texts), args.batch_docs):
        tokens += sum(len(e.ids) for e in tokenizer.encode_batch(texts[i:i + args.batch_docs]))
    batch_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    single_tokens = sum(len(tokenizer.encode(t).ids) for t in texts)
    single_s = time.perf_counter() - t0
    assert single_tokens == tokens

    print(f"encode_batch : {tokens / batch_s / 1e6:6.2f} M tokens/s ({tokens:,} tokens, {batch_s:.2f} s)")
    print(f"encode (loop): {tokens / single_s / 1e6:6.2f} M tokens/s ({single_s:.2f} s)")
    print(f"ratio batch/loop: {single_s / batch_s:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
