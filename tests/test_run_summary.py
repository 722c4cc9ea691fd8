"""The answer printed at the end of a run (archscale.workflow.run_summary), from the committed
laptop-science results: one line per size with the pick and whether its speed-up is resolved,
the verdicts, and a named fix when the verdicts are older than the runs."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from archscale.workflow.run_summary import print_summary, summary_lines

DOCS = Path(__file__).resolve().parents[1] / "docs" / "laptop-science"


def _results(tmp_path: Path, loo_error: float) -> Path:
    results = tmp_path / "results"
    (results / "fits").mkdir(parents=True)
    (results / "throughput").mkdir()
    shutil.copy(DOCS / "recommendations.json", results)
    shutil.copy(DOCS / "verdicts.json", results / "fits")
    shutil.copy(DOCS / "runs.csv", results)
    os.utime(results / "runs.csv", (1_000_000, 1_000_000))  # older than the verdicts
    (results / "throughput" / "calibration.json").write_text(json.dumps(
        {"leave_one_out": {"torch": {"mean_abs_relative_error": loo_error}}}))
    return results


def test_each_size_gets_its_pick_and_the_verdicts_are_counted(tmp_path):
    recs = json.loads((DOCS / "recommendations.json").read_text())["recommendations"]
    verdicts = json.loads((DOCS / "verdicts.json").read_text())
    lines = summary_lines(_results(tmp_path, loo_error=0.30))
    picks = [line for line in lines if line.startswith("  N ")]
    assert len(picks) == len(recs)
    for line, rec in zip(picks, recs):
        assert rec["fastest_at_baseline_loss"]["name"] in line
        assert f"{rec['speedup_vs_baseline']:.3f}x" in line
        assert "not resolved: model error 30 %" in line  # speed-ups of 1-3 % against 30 %
    supported = sum(f["verdict"] == "supported" for f in verdicts["findings"])
    assert any(f"{supported} supported" in line for line in lines)


def test_a_speedup_larger_than_the_model_error_is_not_flagged(tmp_path):
    lines = summary_lines(_results(tmp_path, loo_error=0.001))
    assert not any("not resolved" in line for line in lines if line.startswith("  N "))


def test_stale_or_missing_outputs_are_named_with_the_command(tmp_path, capsys):
    results = _results(tmp_path, loo_error=0.3)
    os.utime(results / "fits" / "verdicts.json", (500_000, 500_000))
    assert any("older than results/runs.csv" in line and "snakemake --cores 2" in line
               for line in summary_lines(results))
    (results / "fits" / "verdicts.json").unlink()
    assert any("verdicts are not built yet" in line for line in summary_lines(results))
    assert summary_lines(tmp_path / "nowhere") == []
    os.utime(results / "recommendations.json", (500_000, 500_000))  # the runs changed since
    (stale,) = [line for line in summary_lines(results) if line]
    assert "recommendations.json is older than results/runs.csv" in stale
    assert "snakemake --cores 2 results/pareto.csv" in stale
    (results / "recommendations.json").write_text('{"recommendations": [{"budget": "x"}]}')
    print_summary(results)  # a malformed file becomes one line, never an error
    assert "(no summary: " in capsys.readouterr().out


def test_the_loss_change_carries_its_bootstrap_interval_where_the_search_gave_one(tmp_path):
    results = _results(tmp_path, loo_error=0.30)
    doc = json.loads((results / "recommendations.json").read_text())
    first = doc["recommendations"][0]
    first["loss_change_vs_baseline"] = {"fastest_at_baseline_loss": {
        "predicted": -0.0123, "low": -0.0301, "high": 0.0042, "level": 0.95, "n_refits": 200}}
    (results / "recommendations.json").write_text(json.dumps(doc))
    picks = [line for line in summary_lines(results) if line.startswith("  N ")]
    assert "[-0.030, +0.004]" in picks[0], picks[0]
    assert not any("[" in line for line in picks[1:])  # no interval given: none printed
