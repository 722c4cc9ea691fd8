"""Which results of two finished study folders differ: the check a refactor must pass.

Usage: python tools/compare_studies.py BEFORE AFTER

It compares, byte for byte or value for value:
- the token files (train.bin, val.bin) by sha256;
- every run's model.safetensors by sha256, and every loss in runs.csv;
- the fits (chinchilla.json, conditional.json, forms.json) without their provenance, step
  times and worker counts (NOT_RESULTS), which say when and how they were made, not what they
  found;
- candidates.csv and pareto.csv.

Prints one line per compared item and exits 1 when any result differs. Timing columns
(wall_s, tokens_per_s) are not results and are not compared.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import pandas as pd

from archscale.io import sha256_file

TIMING_COLUMNS = {"wall_s", "tokens_per_s"}
# keys of a fit's JSON that say how it was made, not what it found: its provenance, how long a
# step took and how many bootstrap processes ran it (the bootstrap's draws do not depend on it)
NOT_RESULTS = {"provenance", "time_s", "workers"}


def _without(doc: Any, keys: set[str]) -> Any:
    if isinstance(doc, dict):
        return {k: _without(v, keys) for k, v in doc.items() if k not in keys}
    if isinstance(doc, list):
        return [_without(v, keys) for v in doc]
    return doc


def compare(before: Path, after: Path) -> list[tuple[str, bool]]:
    """(item, equal) for every result the two studies share; a file present in one only is
    unequal."""
    out: list[tuple[str, bool]] = []

    def both(rel: str) -> tuple[Path, Path] | None:
        a, b = before / rel, after / rel
        if a.exists() != b.exists():
            out.append((f"{rel} (in one study only)", False))
            return None
        return (a, b) if a.exists() else None

    binaries = (sorted(before.glob("results/data/*/*.bin"))
                + sorted(before.glob("results/runs/*/*/*/model/model.safetensors")))
    for path in binaries:
        pair = both(str(path.relative_to(before)))
        if pair:
            out.append((pair[0].relative_to(before).as_posix(),
                        sha256_file(pair[0]) == sha256_file(pair[1])))
    pair = both("results/runs.csv")
    if pair:
        a, b = (pd.read_csv(p).drop(columns=list(TIMING_COLUMNS), errors="ignore") for p in pair)
        out.append(("results/runs.csv (every column but timing)", a.equals(b)))
    for name in ("chinchilla", "conditional", "forms"):
        pair = both(f"results/fits/{name}.json")
        if pair:
            a, b = (_without(json.loads(p.read_text()), NOT_RESULTS) for p in pair)
            out.append((f"results/fits/{name}.json (without provenance)", a == b))
    for name in ("candidates", "pareto"):
        pair = both(f"results/{name}.csv")
        if pair:
            out.append((f"results/{name}.csv", pair[0].read_bytes() == pair[1].read_bytes()))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    args = parser.parse_args(argv)
    results = compare(args.before, args.after)
    for item, equal in results:
        print(f"{'same' if equal else 'DIFFERS'}  {item}")
    differ = sum(not equal for _, equal in results)
    print(f"{len(results)} compared, {differ} differ")
    return 1 if differ or not results else 0


if __name__ == "__main__":
    sys.exit(main())
