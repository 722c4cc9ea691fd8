"""Atomic file writes and hashing.

Every output is written under a temporary name in the same folder and renamed into place, so a
job killed at any moment leaves either no output or a complete one (rename is atomic on POSIX).
"""
from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import math
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np

_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` when the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # the real extension stays last, so writers that infer a format from it (matplotlib) work
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + suffix, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp makes 0600; outputs are for every reader
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()
    _remove_stale_temporaries(path)


def _remove_stale_temporaries(path: Path) -> None:
    """Delete temporaries of `path` left by an earlier writer that was killed (SIGKILL skips
    the cleanup above). Safe: one job at a time writes a given output (Snakemake's lock)."""
    ours = re.compile(rf"\.{re.escape(path.name)}\.[a-z0-9_]{{8}}\.tmp.*")  # mkstemp's names
    for stale in path.parent.glob(f".{glob.escape(path.name)}.*.tmp*"):
        if ours.fullmatch(stale.name):
            with contextlib.suppress(OSError):
                stale.unlink()


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def to_jsonable(obj: Any) -> Any:
    """Plain Python types for json: numpy scalars and arrays converted, NaN and inf as None
    (JSON has no NaN: a bare `NaN` breaks strict readers), paths as strings."""
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, (np.bool_, bool)):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        value = float(obj)
        return value if math.isfinite(value) else None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def json_text(data: Any) -> str:
    """`data` as the indented, strict JSON every archscale file holds (NaN as null)."""
    return json.dumps(to_jsonable(data), indent=2, allow_nan=False)


def write_json(path: str | os.PathLike, data: Any) -> None:
    """Write `data` as indented JSON, atomically, through `to_jsonable`."""
    write_text(path, json_text(data) + "\n")


def write_csv(path: str | os.PathLike, frame: "Any") -> None:
    """Write a pandas DataFrame atomically, without its index."""
    with atomic_path(path, suffix=".csv") as tmp:
        frame.to_csv(tmp, index=False)


def write_array(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write a flat array as raw bytes (readable with numpy.memmap)."""
    with atomic_path(path) as tmp:
        array.tofile(tmp)


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


class DamagedFileError(ValueError):
    """A result file that exists but cannot be read (truncated, overwritten with garbage)."""


def read_json(path: str | os.PathLike) -> Any:
    """A JSON file's content; a damaged file raises DamagedFileError naming it and the fix."""
    try:
        return json.loads(Path(path).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        where = (f"{exc.msg}: line {exc.lineno} column {exc.colno}"
                 if isinstance(exc, json.JSONDecodeError) else "not UTF-8 text")
        raise DamagedFileError(
            f"{path} is not valid JSON ({where}): the file is damaged or truncated. Restore it, "
            f"or delete it and rerun snakemake to rebuild it (and what was built from it)"
        ) from None


def check_json_files(paths: list[str]) -> list[str]:
    """`paths`, after checking that each one that exists is readable JSON: a workflow checks
    its collected inputs while the DAG is built, so a damaged file stops the run before any
    job starts (a failed job's outputs, the tables, would be deleted)."""
    for path in paths:
        if os.path.exists(path):
            read_json(path)
    return paths
