"""A finished study's answer, read from its result files into plain rows.

Why: the console summary at the end of a run (`run_summary`), `archscale summary` and the
report's front page (`report_front_page`) must say the same thing. This module decides what
that is (the pick per size, whether its speed-up is larger than the throughput model's error,
the verdicts, which files are stale) and leaves the wording to each of them. It reads only
finished outputs and never computes a fit.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from archscale.io import read_json

REBUILD_SEARCH = "snakemake --cores 2 results/pareto.csv"
REBUILD_ALL = "snakemake --cores 2"


@dataclass(frozen=True)
class SizePick:
    """One size's answer: the baseline, the fastest shape at the baseline's predicted loss, the
    predicted loss change and the speed-up, and whether the speed-up is resolved."""

    n_params: int
    tokens: int
    baseline: str
    pick: str | None  # None: no frontier shape reaches the baseline's predicted loss
    x: float | None
    r: float | None
    loss_change: float | None  # pick's predicted loss minus the baseline's (nats/token)
    #: the change's interval over the law's bootstrap refits, and its level; None without
    loss_change_interval: tuple[float, float, float] | None
    speedup: float | None
    resolved: bool | None  # None when the throughput model was not checked
    warnings: tuple[str, ...]

    def loss_change_text(self) -> str:
        """"+0.012 [-0.003, +0.027]": the predicted change and its bootstrap interval."""
        if self.loss_change is None:
            return ""
        if self.loss_change_interval is None:
            return f"{self.loss_change:+.3f}"
        low, high, _ = self.loss_change_interval
        return f"{self.loss_change:+.3f} [{low:+.3f}, {high:+.3f}]"


@dataclass(frozen=True)
class Finding:
    statement: str
    verdict: str


@dataclass
class StudyAnswer:
    """Everything the summary and the front page state; empty fields are printed as absent."""

    engine: str | None = None
    device: str | None = None
    throughput_error: float | None = None  # mean leave-one-out relative error of the model
    seed_sd: float | None = None  # one run's val_loss SD between seeds (conditional.json)
    picks: list[SizePick] = field(default_factory=list)
    headline_form: str | None = None
    findings: list[Finding] = field(default_factory=list)
    notices: list[str] = field(default_factory=list)  # stale or missing files, with the fix
    search_done: bool = False
    verdicts_done: bool = False

    def count(self, verdict: str) -> int:
        return sum(f.verdict == verdict for f in self.findings)


def _read(path: Path) -> dict[str, Any] | None:
    """A result file's content, None when it does not exist (a damaged one raises, named)."""
    return read_json(path) if path.is_file() else None


def _older(path: Path, than: Path) -> bool:
    return than.exists() and path.stat().st_mtime < than.stat().st_mtime


def _size_pick(rec: dict[str, Any], error: dict[str, Any] | None) -> SizePick:
    from archscale.search.study import speed_warnings  # the search's own test, not a copy

    pick = rec.get("fastest_at_baseline_loss") or None
    baseline = rec.get("baseline") or {}
    speedup = rec.get("speedup_vs_baseline")
    speedup = float(speedup) if isinstance(speedup, (int, float)) else None
    loss_change = None
    if pick and isinstance(baseline.get("predicted_loss"), (int, float)):
        loss_change = float(pick["predicted_loss"]) - float(baseline["predicted_loss"])
    change = (rec.get("loss_change_vs_baseline") or {}).get("fastest_at_baseline_loss") or {}
    interval = ((float(change["low"]), float(change["high"]), float(change["level"]))
                if pick and all(k in change for k in ("low", "high", "level")) else None)
    resolved = None
    if error is not None and speedup is not None:
        resolved = not speed_warnings(rec, error)
    return SizePick(
        n_params=int(round(float(rec["budget"]))), tokens=int(round(float(rec.get("tokens", 0)))),
        baseline=str(baseline.get("name", "?")), pick=pick["name"] if pick else None,
        x=pick.get("d_over_sqrt_n") if pick else None, r=pick.get("r_mlp_attn") if pick else None,
        loss_change=loss_change, loss_change_interval=interval, speedup=speedup,
        resolved=resolved,
        warnings=tuple(rec.get("warnings") or ()))


def read_answer(results: str | Path = "results") -> StudyAnswer:
    """The answer of the study whose outputs are under `results`."""
    root = Path(results)
    answer = StudyAnswer()
    runs = root / "runs.csv"
    rec_path = root / "recommendations.json"
    recommendations = _read(rec_path)
    if recommendations is None:
        answer.notices.append(f"no search has finished here; `{REBUILD_SEARCH}` runs the study")
    elif _older(rec_path, runs):
        answer.notices.append(f"results/recommendations.json is older than results/runs.csv, so "
                              f"it does not answer for these runs; `{REBUILD_SEARCH}` updates it")
    else:
        answer.search_done = True
        recs = recommendations.get("recommendations") or []
        if recs:
            answer.engine, answer.device = recs[0].get("engine"), recs[0].get("device")
        calibration = _read(root / "throughput" / "calibration.json") or {}
        error = (calibration.get("leave_one_out") or {}).get(answer.engine or "")
        if error is not None:
            answer.throughput_error = float(error["mean_abs_relative_error"])
        answer.picks = [_size_pick(rec, error) for rec in recs]
        conditional = _read(root / "fits" / "conditional.json") or {}
        sd = (conditional.get("seed_noise") or {}).get("pooled_sd")
        answer.seed_sd = float(sd) if isinstance(sd, (int, float)) else None
    verdicts_path = root / "fits" / "verdicts.json"
    verdicts = _read(verdicts_path)
    if verdicts is None:
        answer.notices.append(f"the verdicts are not built yet; `{REBUILD_ALL}` (rule all) judges "
                              "the findings and makes the whole report")
    elif _older(verdicts_path, runs):
        answer.notices.append(f"results/fits/verdicts.json is older than results/runs.csv; "
                              f"`{REBUILD_ALL}` (rule all) brings it up to date")
    else:
        answer.verdicts_done = True
        answer.headline_form = verdicts.get("headline_form")
        answer.findings = [Finding(str(f.get("statement")), str(f.get("verdict")))
                           for f in verdicts.get("findings") or []]
    return answer
