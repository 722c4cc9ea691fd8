"""Bad input, damaged results and misuse on a finished study (issue 15), with the real
snakemake on copies of the finished tiny study (mtimes and .snakemake/ metadata kept).

Each case checks the error a user sees (the file, the field, the fix) and that nothing already
computed is lost: the snapshot of results/ is the same before and after, and once the mistake
is undone `snakemake -n` has nothing to do. Malformed configs caught when the config loads are
in tests/test_config_fuzz.py; which edits rerun what is in tests/test_reruns.py.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from test_reruns import (copy_study, dry_run, parse_dry_run, read_config, snapshot,
                         snapshot_diff, write_config)

from conftest import run_snakemake

pytestmark = pytest.mark.workflow

PARETO = "results/pareto.csv"


def no_change(before: dict, workdir: Path, allowed: tuple[str, ...] = ()) -> dict:
    """The snapshot diff, leaving out files the test itself changed."""
    diff = snapshot_diff(before, snapshot(workdir))
    return {kind: [f for f in files if f not in allowed] for kind, files in diff.items()}


NOTHING = {"removed": [], "added": [], "changed": []}


# ---------------------------------------------------------------------------------------------
# --configfile replaces config.yaml
# ---------------------------------------------------------------------------------------------

def test_configfile_replaces_config_yaml_instead_of_merging(tiny_study_done, tmp_path):
    """config.yaml gets settings the other file is silent on; with --configfile they must not
    apply (merged, init_std and lr_rule would retrain every run)."""
    workdir = copy_study(tiny_study_done, tmp_path / "study")
    study_file = workdir / "other.yaml"
    study_file.write_text(yaml.safe_dump(read_config(workdir), sort_keys=False))
    config = read_config(workdir)
    config["training"]["init_std"] = 0.5
    config["training"]["lr_rule"] = {"kind": "constant"}
    write_config(workdir, config)

    assert {"train", "evaluate"} <= dry_run(workdir, PARETO).rules()  # the edit does retrain
    replaced = dry_run(workdir, "--configfile=other.yaml", PARETO)
    assert replaced.nothing_to_do, replaced.text[-3000:]


def test_configfile_errors_name_that_file_and_config_overrides_apply_on_top(tiny_study_done,
                                                                            tmp_path):
    workdir = copy_study(tiny_study_done, tmp_path / "study")
    bad = read_config(workdir)
    bad["training"]["lr"] = "fast"
    (workdir / "other.yaml").write_text(yaml.safe_dump(bad, sort_keys=False))
    before = snapshot(workdir)
    proc = run_snakemake(workdir, "-n", "--cores", "1", "--configfile=other.yaml", PARETO)
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "other.yaml is invalid" in text and "training.lr: 'fast'" in text, text[-2000:]
    assert "config.yaml is invalid" not in text

    # --config lays its values over the --configfile study (nested values arrive as text)
    (workdir / "other.yaml").write_text((workdir / "config.yaml").read_text())
    proc = run_snakemake(workdir, "-n", "--cores", "1", "--configfile=other.yaml",
                         "--config", "search={d_model_step: 16}", "--", PARETO)
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "other.yaml with --config overrides is invalid" in text, text[-2000:]
    assert "search.d_model_step: '16'" in text
    assert no_change(before, workdir) == NOTHING


def test_archscale_plan_sees_the_study_snakemake_runs(tiny_study_done, tmp_path):
    """`archscale plan --configfile F` and `snakemake --configfile F results/plan.csv` agree,
    also when config.yaml says otherwise (it is not merged in either)."""
    workdir = copy_study(tiny_study_done, tmp_path / "study")
    other = read_config(workdir)
    other["training"]["seeds"] = [0, 1]
    (workdir / "other.yaml").write_text(yaml.safe_dump(other, sort_keys=False))
    run_snakemake(workdir, "--cores", "1", "--configfile=other.yaml", "results/plan.csv",
                  check=True, timeout=600)
    subprocess.run([sys.executable, "-m", "archscale.cli", "plan", "--configfile=other.yaml",
                    "--out", "cli_plan.csv"], cwd=workdir, check=True, capture_output=True)
    from_snakemake = pd.read_csv(workdir / "results/plan.csv")
    from_cli = pd.read_csv(workdir / "cli_plan.csv")
    pd.testing.assert_frame_equal(from_cli, from_snakemake)
    total = from_cli[from_cli.architecture == "TOTAL"].iloc[0]
    assert total.runs == 2 * 12  # two seeds: other.yaml, not config.yaml


# ---------------------------------------------------------------------------------------------
# Per-architecture overrides: refused before any job, nothing rescheduled after the fix
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("override,needle", [
    ({"lr": "fast"}, "architectures[1] (architecture 'a2').training.lr: 'fast'"),
    ({"lrr": 0.02}, "'lrr' was unexpected"),
])
def test_bad_override_starts_no_job_and_restoring_the_config_reruns_nothing(
        tiny_study_done, tmp_path, override, needle):
    workdir = copy_study(tiny_study_done, tmp_path / "study")
    good = (workdir / "config.yaml").read_text()
    config = read_config(workdir)
    next(a for a in config["architectures"] if a["name"] == "a2")["training"] = override
    write_config(workdir, config)
    before = snapshot(workdir)
    proc = run_snakemake(workdir, "--cores", "1", PARETO)  # a real run, not a dry run
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0 and needle in text, text[-2000:]
    assert "Building DAG of jobs" not in text
    assert no_change(before, workdir) == NOTHING  # a2's model and metrics survive
    (workdir / "config.yaml").write_text(good)
    assert dry_run(workdir, PARETO).nothing_to_do


# ---------------------------------------------------------------------------------------------
# Damaged and missing results
# ---------------------------------------------------------------------------------------------

DAMAGED = {
    "truncated_metrics": ("results/runs/a2/8192/seed0/metrics.json", "collect_runs"),
    "garbage_torch_json": ("results/throughput/a1/torch.json", "throughput_table"),
    "truncated_eval": ("results/runs/b1/16384/seed0/eval.json", "collect_runs"),
}


@pytest.mark.parametrize("name", list(DAMAGED))
def test_damaged_json_stops_the_run_before_any_job_and_loses_no_table(tiny_study_done, tmp_path,
                                                                       name):
    workdir = copy_study(tiny_study_done, tmp_path / "study")
    path, _ = DAMAGED[name]
    damaged = workdir / path
    text = damaged.read_text()
    damaged.write_text("garbage\n" if "garbage" in name else text[: len(text) // 2])
    before = snapshot(workdir)
    proc = run_snakemake(workdir, "--cores", "1", PARETO)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert f"{path} is not valid JSON" in out and "delete it" in out, out[-3000:]
    assert "Traceback (most recent call last)" not in out
    assert no_change(before, workdir) == NOTHING  # runs.csv, throughput.csv, ... all kept
    shutil.copy2(tiny_study_done / path, damaged)  # restored from a backup, mtime kept
    assert dry_run(workdir, PARETO).nothing_to_do


def test_file_repaired_in_place_leaves_the_study_complete(tiny_study_done, tmp_path):
    """Fixed in place (a new mtime, the old content): every table is still there, and
    Snakemake's input checksums see that nothing changed."""
    workdir = copy_study(tiny_study_done, tmp_path / "study")
    path = workdir / DAMAGED["truncated_metrics"][0]
    good = path.read_text()
    path.write_text(good[:40])
    assert run_snakemake(workdir, "--cores", "1", PARETO).returncode != 0
    path.write_text(good)
    for table in ("results/runs.csv", "results/throughput.csv",
                  "results/throughput/calibration.json", PARETO):
        assert (workdir / table).exists(), table
    assert dry_run(workdir, PARETO).nothing_to_do


def test_lost_tables_stop_the_run_with_the_command_that_rebuilds_them(tiny_study_done,
                                                                      tmp_path):
    """The state a failed table job leaves: its tables gone, everything downstream present.
    Snakemake alone would say "Nothing to be done"."""
    workdir = copy_study(tiny_study_done, tmp_path / "study")
    lost = ["results/runs.csv", "results/throughput.csv", "results/throughput/calibration.json"]
    kept = {f: (workdir / f).read_bytes() for f in lost}
    for f in lost:
        (workdir / f).unlink()
    proc = run_snakemake(workdir, "-n", "--cores", "1", PARETO)
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "Nothing to be done" not in text, text[-3000:]
    command = "snakemake --cores all results/pareto.csv --forcerun collect_runs throughput_table"
    assert all(f in text for f in lost) and command in text, text[-3000:]

    run_snakemake(workdir, "--cores", "2", PARETO, "--forcerun", "collect_runs",
                  "throughput_table", check=True, timeout=900)
    assert (workdir / "results/runs.csv").read_bytes() == kept["results/runs.csv"]
    assert all((workdir / f).exists() for f in lost)
    assert dry_run(workdir, PARETO).nothing_to_do


# ---------------------------------------------------------------------------------------------
# Targets outside the config, and a run that holds the lock
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("target,needles", [
    ("results/runs/zz/8192/seed0/metrics.json",
     ["architecture 'zz' is not in config.yaml", "configured: a1, a2, a3, b1"]),
    ("results/architectures/zz/config.json", ["architecture 'zz' is not in config.yaml"]),
    ("results/runs/a2/16384/seed0/metrics.json",
     ["results/runs/a2/16384/seed0 is not a run of the study", "token budgets [8192]"]),
    ("results/runs/a2/8192/seed1/eval.json", ["with seeds [0]", "Add the budget or seed"]),
])
def test_target_outside_the_config_is_refused_with_what_is_configured(tiny_study_done, tmp_path,
                                                                      target, needles):
    workdir = copy_study(tiny_study_done, tmp_path / "study")
    before = snapshot(workdir)
    proc = run_snakemake(workdir, "--cores", "1", target)
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0, text[-2000:]
    assert "MissingRuleException" not in text
    for needle in needles:
        assert needle in text, text[-3000:]
    assert no_change(before, workdir) == NOTHING


def test_dry_run_while_another_run_holds_the_lock_says_what_that_means(tiny_study_done,
                                                                       tmp_path):
    workdir = copy_study(tiny_study_done, tmp_path / "study")
    locks = workdir / ".snakemake" / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    (locks / "0.output.lock").write_text(PARETO + "\n")  # as a running snakemake writes it
    proc = run_snakemake(workdir, "-n", "--cores", "1", PARETO)
    text = proc.stdout + proc.stderr
    assert "another snakemake run holds this directory's lock" in text, text[-3000:]
    assert "snakemake --unlock" in text
    parse_dry_run(proc)  # still a dry run's answer
    real = run_snakemake(workdir, "--cores", "1", "--forcerun", "search", PARETO)
    assert real.returncode != 0 and "locked" in (real.stdout + real.stderr)
