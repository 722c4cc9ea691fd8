"""Where a running (or the last) Snakemake run of a study stands, read from its own log.

Why: Snakemake's console shows only "12 of 54 steps done", while each training job's log has
its step and ETA. `archscale progress`, run from another terminal, joins the two: the jobs that
are done, running and failed, each running job's last progress line, and an estimate of the
time left. It reads files only (`.snakemake/log/*.snakemake.log`, `.snakemake/locks/` and the
jobs' own `log:` files), so it works the same for a local run and a SLURM one.

The estimate: a pending job takes the mean duration of its rule's finished jobs in this log; a
running one takes its own ETA when its log has one, else that mean minus the time it has run.
The sum is divided by the run's parallelism (`Provided cores`, or the `--jobs` of a cluster
run). Rules with no finished job yet are counted and named, not guessed.
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

_STAMP = re.compile(r"^\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]$")
_RULE = re.compile(r"^(?:local)?(?:checkpoint|rule) (\w+):$")
_FIELD = re.compile(r"^    (\w+): (.*)$")
_FINISHED = re.compile(r"^Finished jobid: (\d+) \(Rule: (\w+)\)")
_ERROR = re.compile(r"^Error in rule (\w+):$")
_PARALLEL = re.compile(r"^Provided (?:cores|remote nodes): (\d+)")
_TOTAL = re.compile(r"^total\s+(\d+)$")
_STATS_ROW = re.compile(r"^(\w+)\s+(\d+)$")
# the trainer's progress line (archscale.training.loop, _log_row): "step 12/40 ... ETA 31s"
_STEP = re.compile(r"step (\d+)/(\d+).*?ETA (\d+|nan)s")


@dataclass
class Job:
    jobid: int
    rule: str
    started: float
    log: str | None = None
    wildcards: str = ""
    finished: float | None = None
    failed: bool = False

    @property
    def label(self) -> str:
        return f"{self.rule}[{self.wildcards}]" if self.wildcards else self.rule


@dataclass
class RunProgress:
    """One Snakemake run's state as its log tells it."""

    log_path: Path
    active: bool
    parallelism: int = 1
    planned: dict[str, int] = field(default_factory=dict)  # rule -> jobs in the run's DAG
    jobs: dict[int, Job] = field(default_factory=dict)

    def by_state(self) -> tuple[list[Job], list[Job], list[Job]]:
        done = [j for j in self.jobs.values() if j.finished is not None]
        failed = [j for j in self.jobs.values() if j.failed]
        running = [j for j in self.jobs.values() if j.finished is None and not j.failed]
        return done, running, failed


def _stamp(text: str) -> float:
    return datetime.strptime(" ".join(text.split()), "%a %b %d %H:%M:%S %Y").timestamp()


def latest_log(workdir: Path) -> Path | None:
    logs = sorted((workdir / ".snakemake" / "log").glob("*.snakemake.log"))
    return logs[-1] if logs else None


def parse_log(path: Path, active: bool) -> RunProgress:
    """The run's jobs from a Snakemake log: when each started and finished, which failed."""
    run = RunProgress(log_path=path, active=active)
    now_stamp = path.stat().st_mtime
    current: Job | None = None
    in_stats = False
    for line in path.read_text(errors="replace").splitlines():
        if m := _STAMP.match(line):
            now_stamp = _stamp(m.group(1))
            continue
        if line.startswith("Job stats:"):
            in_stats, run.planned = True, {}
            continue
        if in_stats:
            if m := _TOTAL.match(line):
                in_stats = False
            elif (m := _STATS_ROW.match(line)) and m.group(1) != "job":
                run.planned[m.group(1)] = int(m.group(2))
            continue
        if m := _PARALLEL.match(line):
            run.parallelism = max(1, int(m.group(1)))
        elif m := _RULE.match(line):
            current = Job(jobid=-1, rule=m.group(1), started=now_stamp)
        elif current is not None and current.failed and (m := _FIELD.match(line)):
            if m.group(1) == "jobid":  # the failed job's block names it by its jobid
                job = run.jobs.get(int(m.group(2)))
                if job is not None:
                    job.failed = True
                current = None
        elif current is not None and (m := _FIELD.match(line)):
            key, value = m.groups()
            if key == "jobid":
                current.jobid = int(value)
                run.jobs[current.jobid] = current
            elif key == "log":
                current.log = value.split(",")[0].strip()
            elif key == "wildcards":
                current.wildcards = value
        elif m := _FINISHED.match(line):
            current = None
            job = run.jobs.get(int(m.group(1)))
            if job is not None:
                job.finished = now_stamp
        elif m := _ERROR.match(line):  # its jobid follows in the block
            current = Job(jobid=-1, rule=m.group(1), started=now_stamp, failed=True)
    return run


def last_step(log: Path) -> tuple[int, int, float | None] | None:
    """A training job's last "step i/n ... ETA Ts" line: (i, n, eta seconds or None)."""
    if not log.is_file():
        return None
    with log.open("rb") as f:
        f.seek(max(0, log.stat().st_size - 8192))
        tail = f.read().decode(errors="replace")
    found = _STEP.findall(tail)
    if not found:
        return None
    done, total, eta = found[-1]
    return int(done), int(total), None if eta == "nan" else float(eta)


def _fmt(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    return f"{h}:{rest // 60:02d}:{rest % 60:02d}" if h else f"{rest // 60}:{rest % 60:02d}"


def progress_lines(workdir: str | Path = ".", now: float | None = None) -> list[str]:
    """The lines `archscale progress` prints for the study in `workdir`."""
    workdir = Path(workdir)
    log = latest_log(workdir)
    if log is None:
        return [f"{workdir}: no Snakemake run has started here (no .snakemake/log/)"]
    locks = workdir / ".snakemake" / "locks"
    active = locks.is_dir() and any(locks.iterdir())
    run = parse_log(log, active)
    now = time.time() if now is None else now
    done, running, failed = run.by_state()
    total = sum(run.planned.values()) or len(run.jobs)
    state = "running" if active else "not running (the last run ended or was killed)"
    lines = [f"run: {log.relative_to(workdir)} ({state})",
             f"jobs: {len(done)} of {total} done, {len(running) if active else 0} running, "
             f"{len(failed)} failed"]
    durations: dict[str, list[float]] = {}
    for job in done:
        durations.setdefault(job.rule, []).append(job.finished - job.started)
    mean = {rule: sum(d) / len(d) for rule, d in durations.items()}
    left = 0.0
    unknown: dict[str, int] = {}
    if active:
        for job in sorted(running, key=lambda j: j.started):
            elapsed = now - job.started
            step = last_step(workdir / job.log) if job.log else None
            detail = f"running {_fmt(elapsed)}"
            if step is not None:
                detail += f", step {step[0]}/{step[1]}"
                if step[2] is not None:
                    detail += f", ETA {_fmt(step[2])}"
            lines.append(f"  {job.label}: {detail}")
            if step is not None and step[2] is not None:
                left += step[2]
            elif job.rule in mean:
                left += max(0.0, mean[job.rule] - elapsed)
            else:
                unknown[job.rule] = unknown.get(job.rule, 0) + 1
    for job in failed:
        lines.append(f"  failed: {job.label} (log: {job.log or 'none'})")
    started: dict[str, int] = {}
    for job in run.jobs.values():
        started[job.rule] = started.get(job.rule, 0) + 1
    for rule, planned in run.planned.items():
        pending = max(0, planned - started.get(rule, 0))
        if pending and rule in mean:
            left += pending * mean[rule]
        elif pending:
            unknown[rule] = unknown.get(rule, 0) + pending
    if active:
        estimate = f"about {_fmt(left / run.parallelism)} left at {run.parallelism}-way parallelism"
        if unknown:  # the largest groups first; the rest as a count
            groups = sorted(unknown.items(), key=lambda kv: (-kv[1], kv[0]))
            named = ", ".join(f"{n} {rule}" for rule, n in groups[:3])
            rest = sum(n for _, n in groups[3:])
            estimate += (f", plus jobs of rules none of whose jobs has finished yet: {named}"
                         + (f" and {rest} more" if rest else ""))
        lines.append(estimate)
    return lines
