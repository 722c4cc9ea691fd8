"""Run each part in a forked process with a hard deadline, keeping what it wrote before.

Why a process per part: a part that runs past its budget is killed (with the compile workers it
started), and the next part still gets its time; each part starts with a fresh CUDA context,
so one part's memory (a 3B model, a 48 GB KV cache) neither limits nor inflates the next
part's peak. Forking, not spawning, keeps the parent's imports (torch and transformers take
seconds), so the parent must not touch CUDA before it forks.

A part writes its result through a Recorder after each step it completes, atomically, so a kill
leaves the steps done; the parent reads that file when the part ends, however it ended.
"""
from __future__ import annotations

import json
import multiprocessing
import os
import signal
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from gpu_check_parts import blocker


class Skip(Exception):
    """A part that cannot run here; the message is the reason recorded."""


@dataclass
class Context:
    """What a part may read: the mode, its folders, its deadline and the earlier results."""

    dry: bool
    out_dir: Path                 # results that stay (records, calibration.json)
    work_dir: Path                # scratch, removed at the end
    options: dict[str, Any]       # the command line's part options
    deadline: float = 0.0         # time.monotonic() by which the part must have ended
    earlier: dict[str, Any] = field(default_factory=dict)  # parts run before: name -> record

    def seconds_left(self) -> float:
        return self.deadline - time.monotonic()


class Recorder:
    """A part's result file: rewritten after every update, so a kill keeps what was done.
    Thread-safe: a part may record from a sampling thread too."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.result: dict[str, Any] = {}
        self.t0 = time.monotonic()
        self._lock = threading.Lock()

    def update(self, **items: Any) -> None:
        with self._lock:
            self.result.update(items)
            self._write("running", None, {})

    def write(self, status: str, reason: str | None = None, **extra: Any) -> None:
        with self._lock:
            self._write(status, reason, extra)

    def _write(self, status: str, reason: str | None, extra: dict[str, Any]) -> None:
        blocked = blocker.report()
        record = {"status": status, "reason": reason, "result": self.result,
                  "seconds": round(time.monotonic() - self.t0, 2),
                  "blocker_active": blocked["installed_first"],
                  "blocked_imports": blocked["attempts"], **extra}
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record, indent=1, default=str))
        os.replace(tmp, self.path)


@dataclass(frozen=True)
class Part:
    name: str                                     # its key in the results
    title: str                                    # its heading in the summary
    budget_s: float                               # its nominal share of the total time
    run: Callable[[Context, Recorder], None]


def _die_with_parent() -> None:
    """Linux: SIGKILL this process when the parent dies, so a part never outlives the check
    (gpu_check.sh's last resort is SIGKILL, which the parent cannot pass on)."""
    import ctypes

    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _child(part: Part, ctx: Context, path: Path) -> None:
    """The forked process: its own process group (so a kill takes its workers) that dies with
    the parent, the default SIGTERM (not the parent's handler), then the part."""
    os.setsid()
    _die_with_parent()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    rec = Recorder(path)
    rec.write("running")
    try:
        part.run(ctx, rec)
    except Skip as exc:
        rec.write("skipped", str(exc))
    except BaseException as exc:  # noqa: B902 -- any failure is a result, not a crash
        rec.write("failed", f"{type(exc).__name__}: {exc}",
                  traceback=traceback.format_exc(limit=8)[-4000:])
    else:
        rec.write("ok")


def _kill(process: multiprocessing.process.BaseProcess) -> None:
    """SIGKILL the part's process group (the part and e.g. inductor's compile workers)."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        process.kill()
    process.join()


def read_record(path: Path) -> dict[str, Any]:
    """What the part last wrote; an empty running record if it wrote nothing."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {"status": "running", "reason": None, "result": {}}


def run_part(part: Part, ctx: Context, path: Path, start_method: str = "fork"
             ) -> dict[str, Any]:
    """Run `part` until it ends or ctx.deadline passes; its record, with how it ended.

    start_method "spawn" is the fallback for a parent that has made a CUDA context (a forked
    child could not use CUDA): slower, as the child imports everything again, the blocker
    first (the spawned child runs gpu_check.py's top, which installs it, before the part).
    An exception while waiting (the parent's SIGTERM handler, Ctrl-C) kills the part too; the
    record then has "interrupted": true, and the caller stops."""
    process = multiprocessing.get_context(start_method).Process(
        target=_child, args=(part, ctx, path), name=f"gpu_check:{part.name}")
    start = time.monotonic()
    process.start()
    interrupted = False
    try:
        process.join(max(0.0, ctx.deadline - time.monotonic()))
    except BaseException:  # noqa: B902 -- whatever stops the check stops the part first
        interrupted = True
    timed_out = process.is_alive()
    if timed_out:
        _kill(process)
    record = read_record(path)
    record["seconds"] = round(time.monotonic() - start, 2)
    record["budget_s"] = round(ctx.deadline - start, 1)
    if interrupted:
        record.update(status="timed out", interrupted=True, reason="the check was stopped "
                      "(SIGTERM: gpu_check.sh's total time limit) while it ran; the result "
                      "holds what it finished before")
    elif timed_out:
        record.update(status="timed out", reason=f"ran out of its {record['budget_s']:.0f} s "
                      "budget; the result holds what it finished before")
    elif record["status"] == "running":
        record.update(status="failed", reason=f"its process ended with exit code "
                      f"{process.exitcode} before recording a result (killed for memory?)")
    return record
