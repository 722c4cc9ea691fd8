"""Atomic file writes, hashing, and reading result files with errors that name them.

Every output is written under a temporary name in the same folder and renamed into place, so a
job killed at any moment leaves either no output or a complete one (rename is atomic on POSIX).
A write that fails (disk or quota full, read-only or failing file system) raises
OutputWriteError naming the file, the free space and the fix; the earlier version of the file,
if any, stays in place.
"""
from __future__ import annotations

import contextlib
import errno
import glob
import hashlib
import json
import math
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Mapping

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

_UMASK = os.umask(0)
os.umask(_UMASK)


class OutputWriteError(OSError):
    """An output could not be written (no space left, quota, read-only or failing disk); the
    message names the file, the free space and the fix. `errno` is the system's when known."""


#: errno values that mean the write itself failed, not that the writer was misused.
_WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EIO, errno.EROFS,
                           errno.EACCES, errno.EPERM})
#: Less free space than this after a write failed with no errno (torch's, numpy's) is "full".
_FULL_BYTES = 1 << 20


def _failed_write_errno(exc: BaseException) -> tuple[bool, int | None]:
    """Whether `exc`, or the exception it was raised from, is a failed write, and its errno.

    torch.save reports a full disk as RuntimeError "... unexpected pos 11584 vs 11512" and
    safetensors as SafetensorError "... (os error 28)"; neither is an OSError, and neither names
    the file, so both are recognised here by their text.
    """
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError):  # numpy's tofile raises one without an errno
            return (seen.errno is None or seen.errno in _WRITE_ERRNOS, seen.errno)
        text = str(seen)
        if (found := re.search(r"os error (\d+)", text)) and int(found.group(1)) in _WRITE_ERRNOS:
            return True, int(found.group(1))
        if "No space left on device" in text:
            return True, errno.ENOSPC
        if any(mark in text for mark in ("unexpected pos", "PytorchStreamWriter failed",
                                         "file write failed", "iostream error")):
            return True, None  # torch's writer, also inside a sharded checkpoint's failure
        seen = seen.__cause__
    return False, None


def _size(n: float) -> str:
    """Bytes for a person: 0 bytes, 512.0 KiB, 3.2 GiB."""
    if n < 1024:
        return f"{n:,.0f} bytes"
    power = min(4, int(math.log(n, 1024)))
    return f"{n / 1024 ** power:,.1f} {('KiB', 'MiB', 'GiB', 'TiB')[power - 1]}"


def write_failure(path: str | os.PathLike, exc: BaseException) -> OutputWriteError | None:
    """The OutputWriteError to raise for `exc`, raised while writing `path`, or None when `exc`
    is not a failed write (a bug in the writer stays what it is)."""
    failed, code = _failed_write_errno(exc)
    if not failed:
        return None
    path = Path(path)
    folder = next((p for p in (path.parent, *path.parents) if p.exists()), Path("."))
    try:
        free: int | None = shutil.disk_usage(folder).free
    except OSError:
        free = None
    where = (f"{_size(free)} free there when it failed" if free is not None
             else "free space unknown")
    full = code in (errno.ENOSPC, errno.EDQUOT) or (code is None and free is not None
                                                   and free < _FULL_BYTES)
    kept = (f"the previous {path.name} is unchanged" if path.exists()
            else f"nothing was written as {path.name}")
    if full:
        why = ("no space left on device" if code != errno.EDQUOT else "disk quota exceeded")
        fix = (f"Free space on the disk holding {folder} (`df -h {folder}`), or move the study "
               "to a larger disk, and rerun")
    else:
        why = os.strerror(code) if code is not None else "the disk or a quota may be full"
        fix = (f"Check the disk holding {folder} (`df -h {folder}`: full, read-only or "
               "failing?) and your permission to write there, and rerun")
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    # a multi-line error (a sharded checkpoint's, with each rank's traceback) ends in the cause
    detail = (f"{type(exc).__name__}: {lines[0]}" if len(lines) == 1
              else lines[-1] if lines else type(exc).__name__)
    error = OutputWriteError(f"could not write {path}: {why} ({where}; {detail}). {fix}; {kept}")
    error.errno = code
    return error


@contextlib.contextmanager
def reporting_write_errors(path: str | os.PathLike) -> Iterator[None]:
    """Turn a failed write inside the block into OutputWriteError naming `path` (for writers
    that cannot go through atomic_path, such as a checkpoint folder written by a library)."""
    try:
        yield
    except (KeyboardInterrupt, SystemExit, GeneratorExit):
        raise
    except BaseException as exc:  # torch's CheckpointException is not an Exception
        error = write_failure(path, exc)
        if error is None:
            raise
        raise error from exc


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` when the block succeeds.
    A failed write raises OutputWriteError naming `path` (reporting_write_errors)."""
    path = Path(path)
    with reporting_write_errors(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        # the real extension stays last, so writers that infer a format from it (matplotlib) work
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + suffix,
                                   dir=path.parent)
        os.close(fd)
        tmp_path = Path(tmp)
        try:
            os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp makes 0600; outputs are for everyone
            yield tmp_path
            os.replace(tmp_path, path)
        finally:
            if tmp_path.exists():
                tmp_path.unlink()  # before the error is described: its free space counts this
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


class TableError(ValueError):
    """A file that cannot be read as a CSV table: missing, empty, JSON, malformed or, where rows
    are needed, only a header."""


def read_table(path: str | os.PathLike, what: str = "table", fix: str = "",
               min_rows: int = 0) -> pd.DataFrame:
    """`path` read as a CSV table; a file that is not one raises TableError naming `what`, the
    file, the problem and `fix`. pandas' own errors ("Error tokenizing data. C error: Expected 2
    fields in line 4, saw 3" for a JSON file) name no file, and a header-only table would
    otherwise reach the caller as zero rows."""
    import pandas as pd

    path = Path(path)
    tail = f"; {fix}" if fix else ""
    if path.is_dir():
        raise TableError(f"{path} is a directory, not a CSV {what}{tail}")
    if not path.exists():
        raise TableError(f"{what} {path} does not exist{tail}")
    with open(path, "rb") as handle:
        start = handle.read(4096).decode("utf-8", errors="replace").lstrip()
    if not start:
        raise TableError(f"{path} is empty; a CSV table needs a header row and a row per "
                         f"record{tail}")
    if start[0] in "{[":
        raise TableError(f"{path} holds JSON, not a CSV {what}{tail}")
    try:
        table = pd.read_csv(path)
    except (ValueError, UnicodeDecodeError) as exc:  # pandas' ParserError is a ValueError
        raise TableError(f"{path} is not a readable CSV {what} ({exc}){tail}") from None
    if len(table) < min_rows:
        rows = "no rows" if table.empty else f"only {len(table)} row(s)"
        raise TableError(f"{path} has a header but {rows} (a {what} needs at least "
                         f"{min_rows}){tail}")
    return table


def check_json_files(paths: list[str]) -> list[str]:
    """`paths`, after checking that each one that exists is readable JSON: a workflow checks
    its collected inputs while the DAG is built, so a damaged file stops the run before any
    job starts (a failed job's outputs, the tables, would be deleted)."""
    for path in paths:
        if os.path.exists(path):
            read_json(path)
    return paths
