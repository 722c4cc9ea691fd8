"""What a reader sees without opening a JSON file: the report's front page, its HTML tables,
`archscale summary` and `archscale progress`. Built from the committed study results and from
a Snakemake log written the way Snakemake writes it; no workflow runs here."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from archscale.tables import html_page, readable, recommendations_table
from archscale.workflow.progress import progress_lines
from archscale.workflow.report_front_page import front_page_rst, report_mode

DOCS = Path(__file__).resolve().parents[1] / "docs"


def _results(tmp_path: Path, study: str = "laptop-science", error: float = 0.3) -> Path:
    """A results folder laid out as the workflow writes it, from a committed study."""
    results = tmp_path / "results"
    (results / "fits").mkdir(parents=True)
    (results / "throughput").mkdir()
    for name in ("recommendations.json", "runs.csv", "pareto.csv"):
        shutil.copy(DOCS / study / name, results)
    for name in ("verdicts.json", "conditional.json", "quality.csv"):
        shutil.copy(DOCS / study / name, results / "fits")
    os.utime(results / "runs.csv", (1_000_000, 1_000_000))  # older than what was fitted on it
    (results / "throughput" / "calibration.json").write_text(json.dumps(
        {"leave_one_out": {"torch": {"mean_abs_relative_error": error}}}))
    return results


def test_cells_are_rounded_for_reading_and_whole_numbers_stay_whole():
    assert readable(0.19867985355975656) == "0.1987"
    assert readable(15120.0) == "15,120"
    assert readable(684.7980065299859) == "684.8"
    assert readable(float("nan")) == "" and readable(None) == ""
    assert readable(True) == "True" and readable("n16-base") == "n16-base"


def test_the_pareto_page_shows_every_row_rounded(tmp_path):
    table = pd.read_csv(DOCS / "default-study" / "pareto.csv")
    page = html_page(table, "Pareto frontier", "caption text")
    assert page.count("<tr>") == len(table) + 1
    assert "0.19867985355975656" not in page and "0.1987" in page
    assert "caption text" in page


def test_the_recommendations_table_has_one_row_per_size_with_integer_sizes():
    doc = json.loads((DOCS / "default-study" / "recommendations.json").read_text())
    table = recommendations_table(doc)
    assert len(table) == len(doc["recommendations"])
    assert table["budget_n_params"].tolist() == [
        int(rec["budget"]) for rec in doc["recommendations"]]
    assert all(rec["fastest_at_baseline_loss"]["name"] in shape for rec, shape in
               zip(doc["recommendations"], table["fastest_at_baseline_loss"]))


def test_the_front_page_states_the_answer_and_the_verdicts_and_renders_cleanly(tmp_path):
    from docutils.core import publish_parts
    from jinja2 import Environment

    results = _results(tmp_path)
    text = front_page_rst(results)
    recs = json.loads((results / "recommendations.json").read_text())["recommendations"]
    for rec in recs:
        assert f"{int(rec['budget']):,}" in text
        assert rec["fastest_at_baseline_loss"]["name"] in text
    assert text.count("**not resolved**") == len(recs)  # 1-2 % against a 30 % model error
    for finding in json.loads((results / "fits" / "verdicts.json").read_text())["findings"]:
        assert finding["statement"] in text
    # rendered as Snakemake renders it: Jinja (as its report does), then docutils, no errors
    rendered = Environment(trim_blocks=True, lstrip_blocks=True).from_string(text).render(
        categories={}, files=[])
    html = publish_parts(rendered, writer_name="html",
                         settings_overrides={"report_level": 2, "halt_level": 5})["html_body"]
    assert "system-message" not in html and "The answer" in html


def test_a_report_before_any_search_says_what_to_run(tmp_path):
    text = front_page_rst(tmp_path / "results")
    assert "no search has finished here" in text and "snakemake --cores 2 results/pareto.csv" \
        in text


@pytest.mark.parametrize("argv, mode", [(["snakemake", "--report", "r.html"], "report"),
                                        (["snakemake", "--report=r.html"], "report"),
                                        (["snakemake", "--report", "r.html",
                                          "--report-after-run"], "after-run"),
                                        (["snakemake", "--cores", "2"], "")])
def test_report_mode_follows_the_command_line(argv, mode):
    assert report_mode(argv) == mode


def test_archscale_summary_prints_the_answer_of_a_finished_study(tmp_path):
    results = _results(tmp_path, error=0.001)
    proc = subprocess.run([sys.executable, "-m", "archscale.cli", "summary", "--results",
                           str(results)], capture_output=True, text=True, check=True)
    recs = json.loads((results / "recommendations.json").read_text())["recommendations"]
    picks = [line for line in proc.stdout.splitlines() if line.startswith("  N ")]
    assert len(picks) == len(recs)
    assert not any("not resolved" in line for line in picks)  # each beats a 0.1 % model error
    assert "verdicts (headline law form" in proc.stdout


STAMP = "%a %b %d %H:%M:%S %Y"


def _job(start: float, rule: str, jobid: int, log: str, wildcards: str) -> str:
    return (f"[{time.strftime(STAMP, time.localtime(start))}]\nrule {rule}:\n"
            f"    output: out/{jobid}\n    log: {log}\n    jobid: {jobid}\n"
            f"    wildcards: {wildcards}\n    resources: tmpdir=/tmp\n")


def test_progress_names_done_running_and_failed_jobs_and_estimates_the_time_left(tmp_path):
    now = time.time()
    log = ["Building DAG of jobs...", "Provided cores: 2", "Job stats:", "job      count",
           "-----  -------", "train        4", "search       1", "total        5", "",
           _job(now - 300, "train", 1, "logs/train/a.log", "arch=a"),
           f"[{time.strftime(STAMP, time.localtime(now - 200))}]",
           "Finished jobid: 1 (Rule: train)", "1 of 5 steps (20%) done",
           _job(now - 190, "train", 2, "logs/train/b.log", "arch=b"),
           _job(now - 60, "train", 3, "logs/train/c.log", "arch=c"),
           f"[{time.strftime(STAMP, time.localtime(now - 30))}]",
           "Error in rule train:", "    message: None", "    jobid: 2",
           "    log: logs/train/b.log (check log file(s) for error details)"]
    (tmp_path / ".snakemake" / "log").mkdir(parents=True)
    (tmp_path / ".snakemake" / "log" / "2026-01-01T000000.snakemake.log").write_text(
        "\n".join(log) + "\n")
    (tmp_path / ".snakemake" / "locks").mkdir()
    (tmp_path / ".snakemake" / "locks" / "0.output.lock").write_text("")
    (tmp_path / "logs" / "train").mkdir(parents=True)
    (tmp_path / "logs" / "train" / "c.log").write_text(
        "INFO step 4/40 tokens 4096/40960 loss 5.1 lr 0.01 900 tok/s ETA 40s\n"
        "INFO step 8/40 tokens 8192/40960 loss 4.9 lr 0.01 910 tok/s ETA 36s\n")
    lines = progress_lines(tmp_path, now=now)
    assert "(running)" in lines[0]
    assert lines[1] == "jobs: 1 of 5 done, 1 running, 1 failed"
    (running,) = [line for line in lines if line.startswith("  train[arch=c]")]
    assert "step 8/40" in running and "ETA 0:36" in running
    assert any("failed: train[arch=b]" in line and "logs/train/b.log" in line for line in lines)
    # left: c's own ETA 36 s + the one train never started at train's mean 100 s, on 2 cores;
    # search has no finished job to time it by and is named instead of guessed
    assert "about 1:08 left at 2-way parallelism" in lines[-1]
    assert "1 search" in lines[-1]


def test_progress_without_a_run_says_so(tmp_path):
    assert "no Snakemake run has started here" in progress_lines(tmp_path)[0]
