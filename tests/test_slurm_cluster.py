"""The tiny study's cluster jobs through real sbatch on a SLURM cluster give what a local run
gives.

Needs a cluster with an idle node; in CI `.ci/slurm_up.sh` (root) starts a one-node one on the
test machine. The run uses the real profile plus CPU overrides, the way a user would type it:

    snakemake --profile slurm --profile slurm_cpu_profile results/pareto.csv

(the second profile, tests/slurm_cpu_profile/, drops the GPU requests that cannot be met on a
test node, uses `squeue` for job states because the test cluster has no accounting, and checks
job states after 1 s). It builds the cluster jobs of two runs and a measurement
(SLURM_TARGETS), then dry-runs results/pareto.csv from there. The same study also runs locally
with `--cores 2`; what SLURM built must match it: byte-identical results/architectures.csv and
tokenized data, and the same validation losses within VAL_LOSS_RTOL (both run on this
machine's CPUs with one thread per job: OMP/MKL/torch threads are pinned to 1 through the
environment SLURM jobs inherit).
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import run_snakemake
from test_reruns import copy_study

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


def require_idle_node() -> None:
    """Skip the test, saying why, when no SLURM node is idle; fail instead where CI started a
    cluster (ARCHSCALE_REQUIRE_SLURM), so a broken cluster cannot pass as a skip."""
    reason = idle_node_or_reason()
    if reason:
        if os.environ.get("ARCHSCALE_REQUIRE_SLURM"):
            pytest.fail(f"ARCHSCALE_REQUIRE_SLURM is set but no SLURM node is idle: {reason}")
        pytest.skip(reason)


def copy_workdir(src: Path, dst: Path) -> Path:
    """A second copy of the workflow folder, without anything a previous run left there."""
    left_over = {"results", "logs", "benchmarks", ".snakemake"}
    shutil.copytree(src, dst, ignore=lambda d, names: left_over & set(names)
                    if Path(d) == src else set())
    return dst


def result_files(workdir: Path) -> set[str]:
    root = workdir / "results"
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def output_of(proc: subprocess.CompletedProcess) -> str:
    return f"--- stdout ---\n{proc.stdout[-6000:]}\n--- stderr ---\n{proc.stderr[-12000:]}"


#: What the SLURM run builds: every rule that goes to the cluster (tokenize_shard, train,
#: evaluate, throughput) for two runs of different shapes and budgets, and the tables made from
#: the configs. The whole tiny study through sbatch trains it a second time on the CI machine's
#: two cores (8 minutes, a third of CI); the analysis rules after it are localrules, which the
#: submit host runs exactly as a local run does, and a dry run checks their plan below.
SLURM_TARGETS = ("results/architectures.csv", "results/runs/a1/8192/seed0/eval.json",
                 "results/runs/b1/16384/seed0/eval.json", "results/throughput/b3/torch.json")


def test_cluster_jobs_through_sbatch_match_the_local_run(tiny_workdir, tmp_path, monkeypatch,
                                                         request):
    require_idle_node()
    for var in THREAD_VARS:
        monkeypatch.setenv(var, "1")

    slurm_dir = copy_workdir(tiny_workdir, tmp_path / "via_slurm")
    assert (slurm_dir / "slurm" / "config.v8+.yaml").is_file()
    assert (slurm_dir / "slurm_cpu_profile" / "config.v8+.yaml").is_file()
    profiles = ("--profile", "slurm", "--profile", "slurm_cpu_profile")

    slurm = run_snakemake(slurm_dir, *profiles, *SLURM_TARGETS, timeout=3600)
    log = slurm.stdout + slurm.stderr
    assert slurm.returncode == 0, "SLURM run failed\n" + output_of(slurm)
    # the same tiny study run locally with --cores 2, asked for only now: it builds on another
    # worker (or here) while the SLURM jobs wait in the queue
    local_dir = request.getfixturevalue("tiny_study_done")

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

    # What SLURM built is what the local run built: every file of it exists locally, the
    # configs' table and the tokens byte for byte, the two runs' losses within VAL_LOSS_RTOL.
    files = result_files(slurm_dir)
    assert files <= result_files(local_dir), \
        f"only via SLURM: {sorted(files - result_files(local_dir))}"
    arch = "architectures.csv"
    assert (slurm_dir / "results" / arch).read_bytes() == (local_dir / "results" / arch).read_bytes()
    token_files = sorted(f for f in files if re.fullmatch(r"data/.+/(train|val)\.bin", f))
    assert len(token_files) == 2, f"train.bin and val.bin, not {token_files}"
    for rel in token_files:
        assert (slurm_dir / "results" / rel).read_bytes() == \
            (local_dir / "results" / rel).read_bytes(), f"results/{rel} differs"
    for target in SLURM_TARGETS:
        if target.endswith("eval.json"):
            via_slurm = json.loads((slurm_dir / target).read_text())["val_loss"]
            here = json.loads((local_dir / target).read_text())["val_loss"]
            assert via_slurm == pytest.approx(here, rel=VAL_LOSS_RTOL), target
    measured = json.loads((slurm_dir / SLURM_TARGETS[-1]).read_text())
    assert measured["engine"] == "torch" and measured["output_tokens_per_s"] > 0

    # The rest of `snakemake --profile slurm results/pareto.csv` from here: the other runs go
    # to the cluster, the tables, fits and search stay on the submit host.
    plan = run_snakemake(slurm_dir, "-n", *profiles, "results/pareto.csv", timeout=600)
    assert plan.returncode == 0, "dry run of results/pareto.csv failed\n" + output_of(plan)
    for rule in ("train", "evaluate", "throughput", "collect_runs", "fit_conditional",
                 "search"):
        assert re.search(rf"^rule {rule}:", plan.stdout, flags=re.M) or \
            re.search(rf"^{rule}\s+\d+$", plan.stdout, flags=re.M), \
            f"the dry run does not plan {rule}\n" + output_of(plan)


def test_two_node_training_job_runs_one_torchrun_per_task(tiny_study_done, tmp_path,
                                                          monkeypatch):
    """training.nodes: 2 through the plugin: the train job starts one srun task per "node",
    each a torchrun that joins a c10d rendezvous, and DDP over the 2 ranks trains the same
    model as one process. The CI cluster has one node, so a third profile asks for 2 tasks on
    it (`tasks: 2`, which the plugin sends as --ntasks=2 on a job without GPUs) instead of 2
    nodes with one task each (--nodes=2 --ntasks-per-node=1, what slurm_training_request sends
    on a real cluster). The plugin's branch covered: a CPU job with `tasks`, run by its job
    step as `srun -n1`, inside which the launcher's `srun --overlap` starts the node tasks."""
    require_idle_node()
    for var in THREAD_VARS:
        monkeypatch.setenv(var, "1")
    # the finished study, so only a1's training reruns (its settings change): not the tokens
    workdir = copy_study(tiny_study_done, tmp_path / "two_nodes")
    config = yaml.safe_load((workdir / "config.yaml").read_text())
    next(a for a in config["architectures"] if a["name"] == "a1")["training"] = {"nodes": 2}
    (workdir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    cpu = yaml.safe_load((workdir / "slurm_cpu_profile" / "config.v8+.yaml").read_text())
    two_tasks = {"set-resources": {**cpu["set-resources"],  # a CPU job's `tasks` is --ntasks
                                   "train": {**cpu["set-resources"]["train"], "nodes": 1,
                                             "tasks": 2, "slurm_extra": "''", "mem_mb": 3000}}}
    (workdir / "slurm_two_tasks").mkdir()
    (workdir / "slurm_two_tasks" / "config.v8+.yaml").write_text(yaml.safe_dump(two_tasks))

    # training.nodes changes how a1 trains, not what (it is not in its params), so the finished
    # study has nothing to redo: --force reruns the target's job, a1's training, and no other
    target = "results/runs/a1/8192/seed0/metrics.json"
    (workdir / "logs" / "train" / "a1" / "8192" / "seed0.log").unlink()  # the local run's
    proc = run_snakemake(workdir, "--profile", "slurm", "--profile", "slurm_cpu_profile",
                         "--profile", "slurm_two_tasks", "--force", target, timeout=1800)
    assert proc.returncode == 0, "two-task SLURM training failed\n" + output_of(proc)
    train_log = (workdir / "logs" / "train" / "a1" / "8192" / "seed0.log").read_text()
    assert "launching 2 nodes x 1 processes: srun --overlap --ntasks=2" in train_log, train_log
    assert "--rdzv-backend=c10d" in train_log and "is_host=true" in train_log, train_log
    assert "node task 1" in train_log, train_log  # the second task ran its own torchrun

    two = json.loads((workdir / target).read_text())
    one = json.loads((tiny_study_done / target).read_text())
    assert two["world_size"] == 2, two.get("world_size")
    assert two["train_loss"] == pytest.approx(one["train_loss"], rel=VAL_LOSS_RTOL)
