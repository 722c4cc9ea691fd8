"""The tiny study through real sbatch on a SLURM cluster gives what a local run gives.

Needs a cluster with an idle node; in CI `.ci/slurm_up.sh` (root) starts a one-node one on the
test machine. The run uses the real profile plus CPU overrides, the way a user would type it:

    snakemake --profile slurm --profile slurm_cpu_profile results/pareto.csv

(the second profile, tests/slurm_cpu_profile/, drops the GPU requests that cannot be met on a
test node, uses `squeue` for job states because the test cluster has no accounting, and checks
job states after 1 s). The same study also runs locally with `--cores 2`; both must produce the
same files under results/, byte-identical results/architectures.csv and tokenized data, and the
same validation losses within VAL_LOSS_RTOL (both run on this machine's CPUs with one thread
per job: OMP/MKL/torch threads are pinned to 1 through the environment SLURM jobs inherit).
"""
from __future__ import annotations

import csv
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import run_snakemake

pytestmark = [pytest.mark.slurm, pytest.mark.workflow]

VAL_LOSS_RTOL = 1e-4
# Rules that must have run as SLURM jobs (the others are localrules or may be).
CLUSTER_RULES = {"tokenize_shard", "train", "evaluate", "throughput"}
THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
               "NUMEXPR_NUM_THREADS")


def idle_node_or_reason() -> str | None:
    """None if `sinfo` shows an idle (or partly used) node, else why the test cannot run."""
    if shutil.which("sinfo") is None or shutil.which("sbatch") is None:
        return "no SLURM client (sinfo/sbatch) on PATH; start a test cluster with .ci/slurm_up.sh"
    try:
        proc = subprocess.run(["sinfo", "-h", "-N", "-o", "%N %T"], capture_output=True,
                              text=True, timeout=30)
    except subprocess.TimeoutExpired:
        return "sinfo did not answer within 30 s"
    if proc.returncode != 0:
        return f"sinfo failed: {proc.stderr.strip()}; start a test cluster with .ci/slurm_up.sh"
    states = [line.split() for line in proc.stdout.splitlines() if line.strip()]
    if not any(state[-1] in ("idle", "mixed") for state in states):
        return f"no idle SLURM node (sinfo: {proc.stdout.strip() or 'no nodes'})"
    return None


def copy_workdir(src: Path, dst: Path) -> Path:
    """A second copy of the workflow folder, without anything a previous run left there."""
    left_over = {"results", "logs", "benchmarks", ".snakemake"}
    shutil.copytree(src, dst, ignore=lambda d, names: left_over & set(names)
                    if Path(d) == src else set())
    return dst


def result_files(workdir: Path) -> set[str]:
    root = workdir / "results"
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def read_runs(path: Path) -> dict[tuple, float]:
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert rows, f"{path} has no rows"
    assert "val_loss" in rows[0] and "name" in rows[0], f"{path} columns: {list(rows[0])}"
    key_cols = [c for c in ("name", "tokens", "seed") if c in rows[0]]
    losses = {}
    for row in rows:
        key = tuple(row[c] for c in key_cols)
        assert key not in losses, f"{path}: two rows for {dict(zip(key_cols, key))}"
        losses[key] = float(row["val_loss"])
    return losses


def output_of(proc: subprocess.CompletedProcess) -> str:
    return f"--- stdout ---\n{proc.stdout[-6000:]}\n--- stderr ---\n{proc.stderr[-12000:]}"


def test_tiny_study_through_sbatch_matches_local_run(tiny_workdir, tiny_study_done, tmp_path,
                                                    monkeypatch):
    reason = idle_node_or_reason()
    if reason:
        if os.environ.get("ARCHSCALE_REQUIRE_SLURM"):  # CI started a cluster: a skip is a failure
            pytest.fail(f"ARCHSCALE_REQUIRE_SLURM is set but no SLURM node is idle: {reason}")
        pytest.skip(reason)
    for var in THREAD_VARS:
        monkeypatch.setenv(var, "1")

    slurm_dir = copy_workdir(tiny_workdir, tmp_path / "via_slurm")
    local_dir = tiny_study_done  # the same tiny study, already run locally with --cores 2
    assert (slurm_dir / "slurm" / "config.v8+.yaml").is_file()
    assert (slurm_dir / "slurm_cpu_profile" / "config.v8+.yaml").is_file()

    slurm = run_snakemake(slurm_dir, "--profile", "slurm", "--profile", "slurm_cpu_profile",
                          "results/pareto.csv", timeout=3600)
    log = slurm.stdout + slurm.stderr
    assert slurm.returncode == 0, "SLURM run failed\n" + output_of(slurm)

    # The jobs really went through sbatch: the plugin reports each SLURM job id with its log
    # file (kept for successful jobs: slurm-keep-successful-logs in slurm/), and each log is the
    # output of a Snakemake job step that ran the rule inside the allocation.
    submitted = re.findall(r"has been submitted with SLURM jobid (\d+) \(log: (\S+)\)\.", log)
    assert submitted, "no job was submitted to SLURM\n" + output_of(slurm)
    rules_on_slurm = set()
    for jobid, logfile in submitted:
        path = Path(logfile)
        assert path.is_file(), f"SLURM log {path} of job {jobid} is missing"
        assert path.is_relative_to(slurm_dir / "logs" / "slurm"), path
        rule = path.relative_to(slurm_dir / "logs" / "slurm").parts[0].removeprefix("rule_")
        assert re.search(rf"^\s*(local)?rule {rule}:", path.read_text(), flags=re.M), \
            f"{path} does not show rule {rule} running:\n{path.read_text()[-2000:]}"
        rules_on_slurm.add(rule)
    assert CLUSTER_RULES <= rules_on_slurm, f"ran on SLURM: {sorted(rules_on_slurm)}"
    states = subprocess.run(["squeue", "-h", "--states=all", "-o", "%i %T", "-j",
                             ",".join(jobid for jobid, _ in submitted)],
                            capture_output=True, text=True, timeout=60)
    assert states.returncode == 0, states.stderr
    not_completed = [s for s in states.stdout.splitlines() if not s.endswith(" COMPLETED")]
    assert not not_completed, f"SLURM jobs not COMPLETED: {not_completed}"

    # Same outputs as the local run.
    files = result_files(slurm_dir)
    assert "pareto.csv" in files
    assert files == result_files(local_dir), (
        f"only via SLURM: {sorted(files - result_files(local_dir))}; "
        f"only local: {sorted(result_files(local_dir) - files)}")

    arch = "architectures.csv"
    assert (slurm_dir / "results" / arch).read_bytes() == (local_dir / "results" / arch).read_bytes()

    token_files = sorted(f for f in files if re.fullmatch(r"data/.+/(train|val)\.bin", f))
    assert token_files, f"no results/data/**/train.bin or val.bin among {sorted(files)}"
    for rel in token_files:
        assert (slurm_dir / "results" / rel).read_bytes() == \
            (local_dir / "results" / rel).read_bytes(), f"results/{rel} differs"

    via_slurm = read_runs(slurm_dir / "results" / "runs.csv")
    here = read_runs(local_dir / "results" / "runs.csv")
    assert via_slurm.keys() == here.keys()
    for key, loss in here.items():
        assert via_slurm[key] == pytest.approx(loss, rel=VAL_LOSS_RTOL), key
