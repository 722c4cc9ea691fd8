"""What a finished run says, in a few lines at the end of the console (the Snakefile's
`onsuccess`).

Why: the answer of a study is spread over recommendations.json, verdicts.json and the
throughput calibration; a user who ran one command should not have to open a 24 KB JSON file
to learn which shape to use and whether the speed-up is larger than the throughput model's
error. Reads only finished outputs; a missing or older file is named with the command that
brings it up to date, and nothing here can fail a run.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from archscale.io import read_json


def _read(path: Path) -> dict[str, Any] | None:
    """A result file's content, None when it does not exist (a damaged one raises, named)."""
    return read_json(path) if path.is_file() else None


def _pick_line(rec: dict[str, Any], error: dict[str, Any] | None) -> str:
    """One size's answer: the fastest shape at the baseline's loss and what its speed-up means.
    `error` is the engine's leave-one-out entry of the throughput calibration; whether the
    speed-up is resolved is the search's own test (archscale.search.study.speed_warnings)."""
    from archscale.search.study import speed_warnings

    pick = rec.get("fastest_at_baseline_loss")
    head = f"  N {rec['budget']:,.0f} ({rec.get('tokens', 0) / 1e6:.3g}M tokens): "
    if not pick:
        return head + "no frontier shape reaches the baseline's predicted loss"
    line = f"{head}{pick['name']} (x {pick['d_over_sqrt_n']:.2g}, r {pick['r_mlp_attn']:.3g})"
    speedup = rec.get("speedup_vs_baseline")
    if isinstance(speedup, (int, float)):
        line += f", {speedup:.3f}x the baseline's speed"
        if speed_warnings(rec, error):
            line += f" (not resolved: model error {100 * error['mean_abs_relative_error']:.0f} %)"
    warnings = rec.get("warnings") or []
    if warnings:
        line += f"; {len(warnings)} warning{'s' if len(warnings) > 1 else ''}"
    return line


def summary_lines(results: str | Path = "results") -> list[str]:
    """The lines printed at the end of a successful run; empty when no search has finished."""
    root = Path(results)
    recommendations = _read(root / "recommendations.json")
    if recommendations is None:
        return []
    runs = root / "runs.csv"
    if runs.exists() and (root / "recommendations.json").stat().st_mtime < runs.stat().st_mtime:
        return ["", "results/recommendations.json is older than results/runs.csv, so it does "
                "not answer for these runs; `snakemake --cores 2 results/pareto.csv` updates it"]
    recs = recommendations.get("recommendations") or []
    engine = recs[0].get("engine") if recs else None
    calibration = _read(root / "throughput" / "calibration.json") or {}
    error = (calibration.get("leave_one_out") or {}).get(engine or "")
    where = f" on {engine}/{recs[0].get('device')}" if recs else ""
    lines = ["", "What this study says (results/recommendations.json):",
             f"the fastest shape at the baseline's predicted loss, per size{where}; "
             + ("speed-ups within the throughput model's mean leave-one-out error are not "
                "resolved" if error is not None else "the throughput model was not checked")]
    lines += [_pick_line(rec, error) for rec in recs]
    verdicts_path = root / "fits" / "verdicts.json"
    verdicts = _read(verdicts_path)
    if verdicts is None:
        lines.append("verdicts: not built; `snakemake --cores 2` (rule all) judges the findings")
    elif runs.exists() and verdicts_path.stat().st_mtime < runs.stat().st_mtime:
        lines.append("verdicts: results/fits/verdicts.json is older than results/runs.csv; "
                     "`snakemake --cores 2` (rule all) brings it up to date")
    else:
        findings = verdicts.get("findings") or []
        supported = [f["statement"] for f in findings if f.get("verdict") == "supported"]
        against = [f["statement"] for f in findings if f.get("verdict") == "contradicted"]
        lines.append(f"verdicts (headline law form {verdicts.get('headline_form')}): "
                     f"{len(supported)} supported, {len(against)} contradicted, "
                     f"{len(findings) - len(supported) - len(against)} not identified")
        lines += [f"  supported: {s}" for s in supported]
        lines += [f"  contradicted: {s}" for s in against]
    lines.append("details: `archscale verdicts`, results/recommendations.json (each pick's "
                 "warnings), `snakemake --report results/report.html`")
    return lines


def print_summary(results: str | Path = "results") -> None:
    """Print the summary; any problem reading the results becomes one line, never an error."""
    try:
        lines = summary_lines(results)
    except Exception as error:  # a summary must never turn a finished run into a failed one
        lines = [f"(no summary: {type(error).__name__}: {error})"]
    for line in lines:
        print(line)
