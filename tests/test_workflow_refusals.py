"""Nothing wrong goes in silently, at the workflow level (issue 31): each case is reproduced on a
copy of the finished tiny study (or a fresh workflow folder) with the real snakemake, and must
stop before any job with the file and the fix, lose nothing, and, once fixed, leave nothing to do.

The first snakemake call of every scenario runs once, concurrently (each start mostly waits, see
tests/test_reruns.py); each test then checks its scenario and runs its fix. The library-level
halves (the glob that does not follow directory symlinks, the bounds on targets, the job's code
check) are plain unit tests at the end.
"""
from __future__ import annotations

import glob
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from test_reruns import copy_study, dry_run, job_id, parallel, snapshot, snapshot_diff

from conftest import REPO, run_snakemake, tiny_config, write_workflow

PARETO = "results/pareto.csv"
NOTHING = {"removed": [], "added": [], "changed": []}
RUN_A2 = "results/runs/a2/8192/seed0"
RUN_B1 = "results/runs/b1/16384/seed0"
RUN_C3 = "results/runs/c3/8192/seed0"


def yte_config(marker: str) -> dict:
    """The tiny study as a YTE template whose `study` value writes `marker` when evaluated."""
    return {"__use_yte__": True, **tiny_config(),
            "study": f"?__import__('pathlib').Path('{marker}').write_text('ran') and 'tiny'"}


def set_value(path: Path, key: str, value: float | None) -> None:
    data = json.loads(path.read_text())
    data[key] = value
    path.write_text(json.dumps(data, indent=2))  # NaN and Infinity as Python writes them


def prepare(name: str, base: Path, root: Path) -> tuple[Path, list[str]]:
    """The scenario's folder and its first snakemake command line."""
    if name == "yte":
        workdir = write_workflow(root / name, tiny_config())
        (workdir / "config.yaml").write_text(yaml.safe_dump(yte_config("from_config_yaml")))
        return workdir, ["-n", "--cores", "1", "results/plan.csv"]
    if name == "yte_configfile":
        workdir = write_workflow(root / name, tiny_config())
        (workdir / "other.yaml").write_text(yaml.safe_dump(yte_config("from_configfile")))
        return workdir, ["-n", "--cores", "1", "--configfile=other.yaml", "results/plan.csv"]
    if name == "job_code":
        workdir = write_workflow(root / name, tiny_config())
        shutil.copytree(REPO / "src" / "archscale", workdir / "src" / "archscale",
                        ignore=shutil.ignore_patterns("__pycache__"))
        with open(workdir / "src" / "archscale" / "architecture.py", "a") as handle:
            handle.write("\n\n_hf_config = Architecture.hf_config\nArchitecture.hf_config = "
                         "lambda self: {**_hf_config(self), 'checkout_marker': 'this one'}\n")
        return workdir, ["--cores", "1", "results/architectures/a1/config.json"]
    workdir = copy_study(base, root / name)
    if name == "truncated_tokens":  # a whole number of tokens: 1 % of the file
        path = workdir / "results/data/tiny/train.bin"
        os.truncate(path, path.stat().st_size // 100 // 2 * 2)
        return workdir, ["-n", "--cores", "1", PARETO]
    if name == "lost_outputs":
        shutil.rmtree(workdir / RUN_A2 / "model")
        (workdir / RUN_B1 / "eval.json").unlink()
        shutil.rmtree(workdir / RUN_C3)
        shutil.rmtree(workdir / "results/architectures/b2")
        (workdir / "results/throughput/c2/torch.json").unlink()
        return workdir, ["-n", "--cores", "1", PARETO]
    if name == "future":
        path = workdir / RUN_A2 / "eval.json"
        os.utime(path, (time.time() + 86400, time.time() + 86400))  # touch -d '+1 day'
        return workdir, ["--cores", "1", PARETO, "--forcerun", "collect_runs"]
    if name == "null_train_loss":  # a real run, default target
        set_value(workdir / RUN_A2 / "metrics.json", "train_loss", None)
        return workdir, ["--cores", "1"]
    if name == "infinite_val_loss":
        set_value(workdir / RUN_B1 / "eval.json", "val_loss", float("inf"))
        return workdir, ["-n", "--cores", "1", PARETO]
    if name == "garbage_measurement":  # the default target: its checks once came too deep
        (workdir / "results/throughput/a1/torch.json").write_text("garbage\n")
        return workdir, ["-n", "--cores", "1"]
    raise KeyError(name)


SCENARIOS = ("yte", "yte_configfile", "job_code", "truncated_tokens", "lost_outputs", "future",
             "null_train_loss", "infinite_val_loss", "garbage_measurement")


@pytest.fixture(scope="module")
def first(tiny_study_done, tmp_path_factory):
    """{scenario: (workdir, snapshot of results/ before, the first call's output and rc)}."""
    root = tmp_path_factory.mktemp("refusals")
    prepared = {name: prepare(name, tiny_study_done, root) for name in SCENARIOS}
    before = {name: snapshot(workdir) if (workdir / "results").exists() else {}
              for name, (workdir, _) in prepared.items()}
    procs = parallel([lambda w=w, a=a: run_snakemake(w, *a, timeout=600)
                      for w, a in prepared.values()])
    return {name: (workdir, before[name], proc.returncode, proc.stdout + proc.stderr)
            for (name, (workdir, _)), proc in zip(prepared.items(), procs)}


def refused(first, name, *needles):
    """The scenario's workdir, after checking that its first call stopped before any job with
    each needle in its message and nothing under results/ changed."""
    workdir, before, rc, text = first[name]
    assert rc != 0, text[-3000:]
    for needle in needles:
        assert needle in text, f"{needle!r} not in:\n{text[-4000:]}"
    assert "Select jobs to execute" not in text  # no job started
    if before:
        assert snapshot_diff(before, snapshot(workdir)) == NOTHING
    return workdir, text


def suggested_command(text: str) -> list[str]:
    """The arguments of the `snakemake ...` command a refusal gives (last indented line)."""
    line = [ln.strip() for ln in text.splitlines() if ln.strip().startswith("snakemake --")][-1]
    return shlex.split(line)[1:]


# ---------------------------------------------------------------------------------------------
# 1. No code in configs: YTE templates are refused, and Snakefile and `archscale plan` agree
# ---------------------------------------------------------------------------------------------

def test_a_yte_config_yaml_is_refused_before_its_code_runs(first):
    workdir, _ = refused(first, "yte", "config.yaml: __use_yte__ turns on YTE templating",
                         "remove __use_yte__")
    assert not (workdir / "from_config_yaml").exists()  # nothing evaluated
    plan = subprocess.run([sys.executable, "-m", "archscale.cli", "plan"], cwd=workdir,
                          capture_output=True, text=True)
    assert plan.returncode != 0 and "__use_yte__ turns on YTE templating" in plan.stderr
    assert not (workdir / "from_config_yaml").exists()


def test_a_yte_configfile_is_refused_and_says_snakemake_evaluated_it(first):
    workdir, text = refused(first, "yte_configfile", "other.yaml: __use_yte__ turns on YTE",
                            "Snakemake evaluated the template when it read --configfile")
    # Snakemake's CLI reads --configfile (and runs the template) before any workflow code: the
    # limit docs/reruns.md states. Nothing it computed reaches the study.
    assert (workdir / "from_configfile").exists()


# ---------------------------------------------------------------------------------------------
# 8. Jobs run the checkout's code
# ---------------------------------------------------------------------------------------------

def test_jobs_import_the_archscale_the_workflow_hashed(first):
    """A workflow folder with its own src/ (a second checkout sharing the environment): the
    job must run that code, not the installed package's."""
    workdir, _, rc, text = first["job_code"]
    assert rc == 0, text[-3000:]
    written = json.loads((workdir / "results/architectures/a1/config.json").read_text())
    assert written.get("checkout_marker") == "this one"


# ---------------------------------------------------------------------------------------------
# 4. A truncated train.bin stops the dry run
# ---------------------------------------------------------------------------------------------

def test_a_truncated_train_bin_stops_the_dry_run_with_its_rebuild(first, tiny_study_done):
    workdir, _ = refused(first, "truncated_tokens", "results/data/tiny/train.bin holds",
                         "meta.json says", "--forcerun merge_shards")
    shutil.copy2(tiny_study_done / "results/data/tiny/train.bin",
                 workdir / "results/data/tiny/train.bin")
    assert dry_run(workdir, PARETO).nothing_to_do


# ---------------------------------------------------------------------------------------------
# 5. Deleted run outputs are noticed, with the command that rebuilds them
# ---------------------------------------------------------------------------------------------

def test_deleted_run_outputs_stop_the_run_with_the_command_that_rebuilds_them(first):
    workdir, text = refused(
        first, "lost_outputs", f"{RUN_A2}/model/model.safetensors", "results/throughput/c2",
        "results/architectures/b2/config.json", "are missing (deleted?)", "and 8 more",
        "a lost model retrains its run")
    command = suggested_command(text)  # one file per lost job
    assert command == ["--cores", "all", PARETO, "--forcerun",
                       "results/architectures/b2/config.json", "results/throughput/c2/torch.json",
                       f"{RUN_A2}/model/model.safetensors", f"{RUN_B1}/eval.json",
                       f"{RUN_C3}/model/model.safetensors", f"{RUN_C3}/eval.json"]
    plan = dry_run(workdir, *command[2:])  # the fix, as a dry run: accepted
    lost = {job_id("train", arch="a2", tokens=8192, seed=0),
            job_id("evaluate", arch="b1", tokens=16384, seed=0),
            job_id("train", arch="c3", tokens=8192, seed=0),
            job_id("evaluate", arch="c3", tokens=8192, seed=0),
            job_id("architecture_config", arch="b2"), job_id("throughput", arch="c2",
                                                             engine="torch")}
    assert lost <= plan.scheduled(), sorted(plan.scheduled())


# ---------------------------------------------------------------------------------------------
# 6. A file dated in the future
# ---------------------------------------------------------------------------------------------

def test_a_result_dated_in_the_future_stops_the_run_and_loses_no_table(first):
    workdir, text = refused(first, "future", f"{RUN_A2}/eval.json has a modification time "
                            "in the future", f"touch -c {RUN_A2}/eval.json")
    assert (workdir / "results/runs.csv").exists()
    subprocess.run(["touch", "-c", f"{RUN_A2}/eval.json"], cwd=workdir, check=True)
    # collect_runs again, which failed before the fix and deleted runs.csv
    run_snakemake(workdir, "--cores", "1", "--force", "results/runs.csv", check=True,
                  timeout=600)
    assert dry_run(workdir, PARETO).nothing_to_do  # the same runs.csv: nothing else reruns


# ---------------------------------------------------------------------------------------------
# 7. Collected losses are checked while the DAG is built
# ---------------------------------------------------------------------------------------------

def test_a_null_train_loss_stops_the_run_with_the_file_and_the_fix(first):
    """What a diverged run wrote before the trainer stopped such runs; the fix it gives first,
    a lower lr for that architecture, retrains the run without further ado."""
    workdir, _ = refused(first, "null_train_loss",
                         f"{RUN_A2}/metrics.json: train_loss is null, not a finite number",
                         "Lower training.lr", f"--forcerun {RUN_A2}/metrics.json")
    config = yaml.safe_load((workdir / "config.yaml").read_text())
    next(a for a in config["architectures"] if a["name"] == "a2")["training"] = {"lr": 0.005}
    (workdir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    plan = dry_run(workdir, PARETO)
    assert job_id("train", arch="a2", tokens=8192, seed=0) in plan.scheduled()


def test_an_infinite_val_loss_stops_the_run_and_its_rerun_is_accepted(first):
    workdir, text = refused(first, "infinite_val_loss",
                            f"{RUN_B1}/eval.json: val_loss is Infinity, not a finite number")
    command = suggested_command(text)
    assert command[-2:] == ["--forcerun", f"{RUN_B1}/eval.json"]
    plan = dry_run(workdir, *command[2:])
    assert job_id("evaluate", arch="b1", tokens=16384, seed=0) in plan.scheduled()


def test_a_damaged_measurement_stops_a_run_of_the_default_target(first):
    """Snakemake drops an input function's error from a job deeper in the DAG when the file the
    job would build exists: with rule `all` as the target, a garbage measurement gave "Nothing
    to be done" (tests/test_reliability.py checks the same with results/pareto.csv)."""
    refused(first, "garbage_measurement", "results/throughput/a1/torch.json is not valid JSON")


# ---------------------------------------------------------------------------------------------
# Library halves: the glob, the bounds on targets, the job's code check
# ---------------------------------------------------------------------------------------------

def glob_reference(pattern: str) -> list[str]:
    """What corpus_files selected before: glob.glob, then matches under a directory symlink
    past the first wildcard part dropped (the loop-free trees below only)."""
    parts = pattern.split(os.sep)
    fixed = next(i for i, p in enumerate(parts) if any(c in p for c in "*?["))
    kept = []
    for match in glob.glob(pattern, recursive=True):
        folders = match.split(os.sep)
        if os.path.isfile(match) and not any(
                os.path.islink(os.sep.join(folders[:i + 1]))
                for i in range(fixed, len(folders) - 1)):
            kept.append(match)
    return sorted(kept)


def test_corpus_globs_select_what_glob_selects_without_following_directory_symlinks(tmp_path):
    from archscale.data.corpus import _pattern_files

    root = tmp_path / "t"
    for folder in ("a/b/c", ".hidden/x", "a/.dot", "real/sub", "lit/b"):
        (root / folder).mkdir(parents=True)
    for file in ("a/x.txt", "a/b/y.txt", "a/b/c/z.txt", ".hidden/x/h.txt", "a/.dot/q.txt",
                 ".top.txt", "a/.d.txt", "real/r.txt", "real/sub/s.txt", "top.txt",
                 "lit/b/k.txt"):
        (root / file).write_text(file)
    os.symlink("../real", root / "a" / "link")
    os.symlink("real/r.txt", root / "alias.txt")
    os.symlink("nowhere", root / "broken.txt")
    patterns = ["**/*.txt", "**", "*/*.txt", "**/**/*.txt", "a/**/*.txt", ".*/**/*.txt",
                "**/.*.txt", "*/b/*.txt", "[ar]*/*.txt", "?/b/c/z.txt", "*//b/*.txt",
                "**/b/**/*.txt", "*/../top.txt", "l*/b/*.txt", "a/**", "**/*"]
    for pattern in patterns:
        full = str(root / pattern)
        assert sorted(_pattern_files(full)[0]) == glob_reference(full), pattern
    assert _pattern_files(str(root / "a" / "*" / "*.txt"))[1] == [str(root / "a" / "link")]


def test_a_glob_through_symlink_loops_ends_quickly(tmp_path):
    """/usr/lib/llvm-14/build/{Release,Debug+Asserts} both point back to /usr/lib/llvm-14: glob
    lists 2^40 paths there (`/usr/**/*.py` ran for hours). Each file is found once."""
    from archscale.config import load_study
    from archscale.data.corpus import corpus_files

    llvm = tmp_path / "usr" / "lib" / "llvm"
    (llvm / "build").mkdir(parents=True)
    for i in range(20):
        (llvm / f"m{i}.py").write_text(f"x = {i}\n")
    os.symlink(llvm, llvm / "build" / "Release")
    os.symlink(llvm, llvm / "build" / "Debug+Asserts")
    pattern = str(tmp_path / "usr" / "**" / "*.py")
    started = time.perf_counter()
    files = corpus_files([pattern])
    assert len(files.paths) == 20 and files.through_symlinks == 2
    config = tiny_config()
    config["data"]["source"] = {"kind": "files", "paths": [pattern]}
    load_study(config)  # the check every Snakefile load and `archscale plan` run
    assert time.perf_counter() - started < 5


def test_a_job_importing_other_code_than_the_workflow_hashed_refuses(tmp_path, monkeypatch):
    from archscale.workflow import snakemake as wf

    monkeypatch.setenv(wf.CODE_ENV, str(tmp_path / "other" / "archscale"))
    with pytest.raises(RuntimeError, match="this job imported archscale from .* but the "
                                           "workflow hashed and runs .*other"):
        with wf.log_to(None):
            pass
    monkeypatch.setenv(wf.CODE_ENV, str(Path(wf.__file__).resolve().parents[1]))
    with wf.log_to(None):  # the same package: runs
        pass
