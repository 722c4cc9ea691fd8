"""Nothing half-written (issue 8, part 3): kill a tokenization job and a training job at random
moments, check every declared output, rerun with --rerun-incomplete.

Each trial reruns one job of a copy of the finished tiny study (`--force <its output>`), waits
for the job's script process to start, sleeps a random time drawn (fixed seed) from the job's
own duration (its benchmark in the finished study), then SIGKILLs either the script alone (the
job fails and Snakemake cleans up) or Snakemake's whole process group (a node dying: nothing
cleans up, the lock stays). Every declared output must then be absent or complete; the rerun
must finish and give the same tokens (and the same training loss) as the uninterrupted study.
"""
from __future__ import annotations

import csv
import json
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from conftest import run_snakemake
from test_reruns import copy_study, parallel

pytestmark = pytest.mark.workflow

SEED = 8
# (when, what): a random moment of the job's run killing the script alone, then Snakemake's
# whole group; last, the instant the job's first output appears (the others not yet written),
# killing the whole group, as a node dying mid-save would
TRIALS = (("random", "script"), ("random", "group"), ("first-output", "group"))


def script_processes(group: int, script: str) -> list[int]:
    """PIDs in process group `group` running Snakemake's copy of scripts/<script>."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.getpgid(int(entry)) != group:
                continue
            argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
        except (OSError, ProcessLookupError):
            continue
        if any(b".snakemake/scripts/" in a and a.endswith(script.encode()) for a in argv):
            pids.append(int(entry))
    return pids


def benchmark_seconds(workdir: Path, benchmark: str) -> float:
    with open(workdir / benchmark) as handle:
        return float(next(csv.DictReader(handle, delimiter="\t"))["s"])


# ---------------------------------------------------------------------------------------------
# Validators: an existing output must be complete
# ---------------------------------------------------------------------------------------------

def valid_json(path: Path, original: Path) -> None:
    doc = json.loads(path.read_text())
    assert isinstance(doc, dict) and set(json.loads(original.read_text())) <= set(doc), path


def valid_tokens(path: Path, original: Path) -> None:
    assert path.read_bytes() == original.read_bytes(), f"{path} differs from the study's"


def valid_csv(path: Path, original: Path) -> None:
    with open(path) as a, open(original) as b:
        rows, reference = list(csv.DictReader(a)), list(csv.DictReader(b))
    assert len(rows) == len(reference) and rows[0].keys() == reference[0].keys(), path


def valid_safetensors(path: Path, original: Path) -> None:
    from safetensors.numpy import load_file

    tensors, reference = load_file(str(path)), load_file(str(original))
    assert tensors.keys() == reference.keys(), path
    for name, array in tensors.items():
        assert array.shape == reference[name].shape and np.isfinite(array).all(), name


@dataclass(frozen=True)
class Job:
    """A job to kill: the output that selects it, its script, its outputs and their checks."""

    target: str
    script: str
    benchmark: str
    outputs: dict[str, Callable[[Path, Path], None]]


SHARD = Job(
    target="results/data/tiny/shards/0.train.bin", script="tokenize_shard.py",
    benchmark="logs/benchmarks/data/tiny/shard_0.tsv",
    outputs={"results/data/tiny/shards/0.train.bin": valid_tokens,
             "results/data/tiny/shards/0.val.bin": valid_tokens,
             "results/data/tiny/shards/0.json": valid_json})

RUN = "results/runs/a1/16384/seed0"
TRAIN = Job(
    target=f"{RUN}/metrics.json", script="train.py",
    benchmark="logs/benchmarks/train/a1/16384/seed0.tsv",
    outputs={f"{RUN}/model/model.safetensors": valid_safetensors,
             f"{RUN}/model/config.json": valid_json,
             f"{RUN}/model/tokenizer.json": valid_json,
             f"{RUN}/model/tokenizer_config.json": valid_json,
             f"{RUN}/train_log.csv": valid_csv,
             f"{RUN}/metrics.json": valid_json})


def kill_trial(workdir: Path, job: Job, delay: float | None, mode: str) -> dict:
    """Start the job; kill it `delay` seconds after its script starts (None: as soon as one of
    its outputs exists); report what happened."""
    log = open(workdir / f"killed-{time.monotonic_ns()}.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "snakemake", "--cores", "1", "--force",
                             job.target], cwd=workdir, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True, env=dict(os.environ, PYTHONHASHSEED="0"))
    try:
        deadline = time.monotonic() + 180
        pids: list[int] = []
        while not pids and proc.poll() is None and time.monotonic() < deadline:
            pids = script_processes(proc.pid, job.script)
            time.sleep(0.02)
        assert pids, f"the {job.script} process never started (exit {proc.poll()})"
        if delay is None:
            while proc.poll() is None and time.monotonic() < deadline and not any(
                    (workdir / o).exists() for o in job.outputs):
                time.sleep(0.001)
        else:
            time.sleep(delay)
        alive = all(Path(f"/proc/{pid}").exists() for pid in pids)
        if mode == "script":
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:  # it ended between the look and the kill
                    alive = False
        else:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=180)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
    return {"delay": None if delay is None else round(delay, 3), "mode": mode,
            "killed_while_running": alive,
            "returncode": proc.returncode}


def check_outputs(workdir: Path, original: Path, job: Job) -> tuple[list[str], list[str]]:
    """(outputs present, problems): every declared output that exists must be complete."""
    present, problems = [], []
    for output, validate in job.outputs.items():
        path = workdir / output
        if path.exists():
            present.append(output)
            try:
                validate(path, original / output)
            except (AssertionError, ValueError, OSError) as exc:  # a JSON/CSV/tensor error
                problems.append(f"{output}: {type(exc).__name__}: {exc}")
    return present, problems


def run_trials(base: Path, workdir: Path, job: Job, rng: random.Random) -> list[dict]:
    """The TRIALS kills of `job` in one copy of the study, each followed by the rerun."""
    copy_study(base, workdir)
    seconds = benchmark_seconds(base, job.benchmark)
    report = []
    for when, mode in TRIALS:
        delay = rng.uniform(0.0, seconds) if when == "random" else None
        trial = kill_trial(workdir, job, delay, mode)
        trial["present_after_kill"], trial["problems"] = check_outputs(workdir, base, job)
        if trial["mode"] == "group":  # Snakemake died too: its lock stays, as after a node loss
            run_snakemake(workdir, "--unlock", check=True)
        rerun = run_snakemake(workdir, "--cores", "1", "--rerun-incomplete", job.target,
                              timeout=600)
        trial["rerun_returncode"] = rerun.returncode
        if rerun.returncode:
            trial["rerun_output"] = rerun.stdout[-2000:] + rerun.stderr[-4000:]
        present, problems = check_outputs(workdir, base, job)
        trial["missing_after_rerun"] = sorted(set(job.outputs) - set(present))
        trial["problems_after_rerun"] = problems
        trial["temporary_files"] = sorted(str(p.relative_to(workdir))
                                          for p in (workdir / "results").rglob(".*"))
        report.append(trial)
    return report


@pytest.fixture(scope="module")
def trials(tiny_study_done, tmp_path_factory) -> dict[str, tuple[Path, list[dict]]]:
    """kind -> (the copy the trials ran in, one report per trial); both kinds concurrently."""
    rng = random.Random(SEED)
    seeds = {"tokenize": rng.randrange(1 << 30), "train": rng.randrange(1 << 30)}
    root = tmp_path_factory.mktemp("kills")
    jobs = {"tokenize": SHARD, "train": TRAIN}
    reports = parallel([lambda k=k: run_trials(tiny_study_done, root / k, jobs[k],
                                               random.Random(seeds[k])) for k in jobs],
                       workers=2)
    return {k: (root / k, r) for k, r in zip(jobs, reports)}


@pytest.mark.parametrize("kind", ["tokenize", "train"])
def test_killed_job_leaves_no_partial_output(trials, kind):
    _, report = trials[kind]
    print(json.dumps(report, indent=1))
    assert len(report) == len(TRIALS)
    # the trials really interrupted work, and the last one found a partly written job
    assert any(t["killed_while_running"] for t in report), report
    assert report[-1]["present_after_kill"], report[-1]
    for trial in report:
        assert trial["problems"] == [], trial
        if trial["killed_while_running"]:
            assert trial["returncode"] != 0, trial


@pytest.mark.parametrize("kind", ["tokenize", "train"])
def test_rerun_incomplete_completes_after_each_kill(trials, kind):
    _, report = trials[kind]
    for trial in report:
        assert trial["rerun_returncode"] == 0, trial
        assert trial["missing_after_rerun"] == [] and trial["problems_after_rerun"] == [], trial
        # the rerun's writers delete the temporaries the killed writer left behind
        assert trial["temporary_files"] == [], trial


def test_rerun_after_kills_gives_the_same_tokens(trials, tiny_study_done):
    """valid_tokens compared the shard's bytes with the study's; the summary agrees too."""
    workdir, _ = trials["tokenize"]
    summary = json.loads((workdir / "results/data/tiny/shards/0.json").read_text())
    reference = json.loads((tiny_study_done / "results/data/tiny/shards/0.json").read_text())
    for key in ("train_tokens", "val_tokens", "train_documents", "val_documents",
                "corpus_sha256", "dtype"):
        assert summary[key] == reference[key], key


def test_rerun_after_kills_trains_to_the_same_loss(trials, tiny_study_done):
    workdir, _ = trials["train"]
    metrics = json.loads((workdir / RUN / "metrics.json").read_text())
    reference = json.loads((tiny_study_done / RUN / "metrics.json").read_text())
    assert metrics["tokens_seen"] == reference["tokens_seen"]
    assert metrics["train_loss"] == pytest.approx(reference["train_loss"], rel=1e-6)
    resume = workdir / "results/resume/a1/16384/seed0"
    assert not resume.exists() or not any(resume.iterdir()), "resume state kept after success"


# ---------------------------------------------------------------------------------------------
# Every writer puts its outputs in place by a rename (so a kill never leaves a partial file
# under an output's name): each stage's writer runs in-process while os.replace is recorded.
# ---------------------------------------------------------------------------------------------

@pytest.fixture
def renamed(monkeypatch) -> set[Path]:
    """The destinations of every os.replace / os.rename made while the test runs."""
    done: set[Path] = set()
    real_replace, real_rename = os.replace, os.rename

    def replace(src, dst, *args, **kwargs):
        real_replace(src, dst, *args, **kwargs)
        done.add(Path(dst).resolve())

    def rename(src, dst, *args, **kwargs):
        real_rename(src, dst, *args, **kwargs)
        done.add(Path(dst).resolve())

    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(os, "rename", rename)
    return done


def _corpus(tmp_path: Path) -> dict:
    folder = tmp_path / "corpus"
    folder.mkdir()
    for i in range(40):
        (folder / f"doc{i}.txt").write_text(
            f"def function_{i}(value):\n    return value * {i} + len('text number {i}')\n" * 30)
    return {"kind": "files", "paths": [str(folder / "*.txt")]}


def _not_renamed(outputs: list[Path], renamed: set[Path]) -> list[str]:
    assert all(p.is_file() for p in outputs), [p for p in outputs if not p.is_file()]
    return [str(p) for p in outputs if p.resolve() not in renamed]


def test_tokenization_writers_rename_into_place(tmp_path, renamed):
    from archscale.data.corpus import merge_shards, tokenize_shard, train_tokenizer
    from archscale.io import write_json

    source, tok_dir, shards = _corpus(tmp_path), tmp_path / "tokenizer", tmp_path / "shards"
    train_tokenizer(source, {"vocab_size": 300, "train_bytes": 100_000}, 1, tok_dir)
    summary = tokenize_shard(source, tok_dir, 0, 1, 0.2, 300, shards / "0.train.bin",
                             shards / "0.val.bin")
    write_json(shards / "0.json", summary)
    merge_shards([(str(shards / "0.train.bin"), str(shards / "0.val.bin"),
                   str(shards / "0.json"))], tmp_path / "train.bin", tmp_path / "val.bin",
                 seq_len=8)
    outputs = [shards / "0.train.bin", shards / "0.val.bin", shards / "0.json",
               tmp_path / "train.bin", tmp_path / "val.bin"]
    assert _not_renamed(outputs, renamed) == []


def test_tokenizer_is_renamed_into_place(tmp_path, renamed):
    from archscale.data.corpus import train_tokenizer

    tok_dir = tmp_path / "tokenizer"
    train_tokenizer(_corpus(tmp_path), {"vocab_size": 300, "train_bytes": 100_000}, 1, tok_dir)
    outputs = [tok_dir / "tokenizer.json", tok_dir / "tokenizer_config.json"]
    assert _not_renamed(outputs, renamed) == []


def test_checkpoint_and_training_log_are_renamed_into_place(tmp_path, renamed,
                                                             tiny_study_done):
    from archscale.training.model import build_model, save_checkpoint
    from archscale.training.train_log import write_log_csv

    arch = json.loads((tiny_study_done / "results/architectures/a1/config.json").read_text())
    model = build_model(arch, seed=0, init_std=0.02)
    files = save_checkpoint(model, tmp_path / "model",
                            tiny_study_done / "results/data/tiny/tokenizer")
    write_log_csv(tmp_path / "train_log.csv", [{"step": 1, "tokens": 64, "loss": 6.0,
                                                "lr": 0.01, "tokens_per_s": 1.0}])
    outputs = [tmp_path / "model" / n for n in ("model.safetensors", "config.json",
                                                "tokenizer.json", "tokenizer_config.json")]
    assert set(outputs) <= set(files)
    assert _not_renamed(outputs + [tmp_path / "train_log.csv"], renamed) == []


def test_fit_plots_are_renamed_into_place(tmp_path, renamed, tiny_study_done):
    from archscale.fit.stages import chinchilla_stage

    runs = tiny_study_done / "results/runs.csv"
    chinchilla_stage(runs, tmp_path / "chinchilla.json", {"bootstrap": 0, "n_starts": 4},
                     plot=tmp_path / "chinchilla.png", workers=1)
    assert _not_renamed([tmp_path / "chinchilla.json", tmp_path / "chinchilla.png"],
                        renamed) == []


def test_fit_json_is_renamed_into_place(tmp_path, renamed, tiny_study_done):
    from archscale.fit.stages import chinchilla_stage

    runs = tiny_study_done / "results/runs.csv"
    chinchilla_stage(runs, tmp_path / "chinchilla.json", {"bootstrap": 0, "n_starts": 4},
                     workers=1)
    assert _not_renamed([tmp_path / "chinchilla.json"], renamed) == []


def test_a_successful_write_removes_the_temporaries_of_a_killed_writer(tmp_path):
    """SIGKILL skips the writer's cleanup; the next write of the same output deletes its
    leftovers, and only its own (other outputs' temporaries stay)."""
    from archscale.io import write_json

    stale = tmp_path / ".eval.json.k3j_9x2a.tmp"
    other = tmp_path / ".eval.json.bak.k3j_9x2a.tmp"   # a temporary of `eval.json.bak`
    stale.write_text("{half")
    other.write_text("{half")
    write_json(tmp_path / "eval.json", {"loss": 1.0})
    assert json.loads((tmp_path / "eval.json").read_text()) == {"loss": 1.0}
    assert not stale.exists() and other.exists()


# --- a killed throughput job takes its measurement with it (issue 31) ------------------------

def _process_ended(pid: int) -> bool:
    """True once `pid` has exited (a zombie waiting for init to reap it counts as exited)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in "ZX"
    except (FileNotFoundError, ProcessLookupError):
        return True


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_killed_throughput_job_takes_its_measurement_with_it(tmp_path):
    """The rule's script runs `python -m archscale.throughput.measure` as a child. SIGKILL the
    script (as a job kill does) mid-measurement: the child used to run on, reparented, and
    write torch.json after Snakemake had marked the job failed. Now it must end within
    seconds and write nothing, not even a temporary."""
    from archscale.architecture import Architecture

    model = tmp_path / "arch" / "tiny"
    model.mkdir(parents=True)
    arch = Architecture("tiny", d_model=32, n_layers=2, n_heads=2, n_kv_heads=1, head_dim=16,
                        ffn_dim=64, vocab_size=260, tie_word_embeddings=True)
    (model / "config.json").write_text(json.dumps(arch.hf_config()))
    out, log, pid_file = tmp_path / "out" / "torch.json", tmp_path / "measure.log", tmp_path / "pid"
    settings = {"batch_size": 2, "input_len": 8, "output_len": 4, "device": "cpu", "threads": 1,
                "repeats": 10_000_000}  # runs until it is stopped
    measure = [sys.executable, "-m", "archscale.throughput.measure", "--engine", "torch",
               "--config", str(model), "--out", str(out), "--settings", json.dumps(settings)]
    job = ("import subprocess, sys\n"  # what scripts/throughput.py does
           f"child = subprocess.Popen({measure!r}, stderr=open({str(log)!r}, 'w'))\n"
           f"open({str(pid_file)!r}, 'w').write(str(child.pid))\n"
           "sys.exit(child.wait())\n")
    src = str(Path(__file__).resolve().parents[1] / "src")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [src, os.environ.get(
        "PYTHONPATH")])))
    parent = subprocess.Popen([sys.executable, "-c", job], env=env)
    deadline = time.monotonic() + 120
    while "repeat 1/" not in (log.read_text() if log.exists() else ""):
        assert parent.poll() is None and time.monotonic() < deadline, log.read_text()
        time.sleep(0.1)
    child = int(pid_file.read_text())
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 30
    while not _process_ended(child):
        if time.monotonic() > deadline:
            os.kill(child, signal.SIGKILL)
            pytest.fail("the measurement outlived its job by 30 s")
        time.sleep(0.1)
    assert "measurement stopped by signal SIGTERM" in log.read_text()
    assert not out.parent.exists() or list(out.parent.iterdir()) == []


# --- a full disk names the file and the fix, and keeps the previous file (issue 31) ----------

TORCH_DISK_FULL = "[enforce fail at inline_container.cc:672] . unexpected pos 11584 vs 11512"


def _no_free_space(monkeypatch) -> None:
    """The file system reports 0 bytes free (what it reports once full)."""
    import shutil

    import archscale.io

    usage = shutil.disk_usage("/")
    monkeypatch.setattr(archscale.io.shutil, "disk_usage",
                        lambda path: type(usage)(usage.total, usage.total, 0))


def test_a_full_disk_while_saving_the_resume_state_names_it(tmp_path, monkeypatch):
    """torch.save reports ENOSPC as "unexpected pos 11584 vs 11512": no "no space", no path.
    The error now says both, with the fix, and the previous state.pt is kept whole."""
    from types import SimpleNamespace

    import torch

    from archscale.io import OutputWriteError
    from archscale.training.state import STATE_FILE, save_state

    job = SimpleNamespace(resume_dir=str(tmp_path / "resume"))
    save_state(job, {"step": 10, "w": torch.ones(4)})
    real_save = torch.save

    def fill_the_disk(obj, f, *args, **kwargs):
        Path(f).write_bytes(b"PK\x03\x04 partial")
        raise RuntimeError(TORCH_DISK_FULL)

    monkeypatch.setattr(torch, "save", fill_the_disk)
    _no_free_space(monkeypatch)
    state = tmp_path / "resume" / STATE_FILE
    with pytest.raises(OutputWriteError) as error:
        save_state(job, {"step": 20, "w": torch.zeros(4)})
    message = str(error.value)
    assert message.startswith(f"could not write {state}: no space left on device (0 bytes free")
    assert TORCH_DISK_FULL in message and "df -h" in message
    assert message.endswith(f"the previous {STATE_FILE} is unchanged")
    monkeypatch.setattr(torch, "save", real_save)
    assert torch.load(state, weights_only=True)["step"] == 10
    assert sorted(p.name for p in state.parent.iterdir()) == [STATE_FILE]


@pytest.mark.parametrize("writer", ["json", "array"])
def test_a_full_disk_while_writing_an_output_names_it(tmp_path, monkeypatch, writer):
    """write_json's ENOSPC ("[Errno 28] No space left on device", no path) and numpy's
    tofile ("40 requested and 0 written", no errno) both name the file."""
    import errno

    import numpy as np

    from archscale.io import OutputWriteError, write_array, write_json

    class FullDisk(np.ndarray):  # ndarray.tofile itself cannot be patched
        def tofile(self, *args, **kwargs):
            raise OSError("40 requested and 0 written")

    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    path = tmp_path / "results" / ("eval.json" if writer == "json" else "train.bin")
    if writer == "json":
        monkeypatch.setattr(Path, "write_text", full)
    else:
        _no_free_space(monkeypatch)
    with pytest.raises(OutputWriteError) as error:
        if writer == "json":
            write_json(path, {"loss": 1.0})
        else:
            write_array(path, np.arange(10, dtype=np.uint32).view(FullDisk))
    assert str(error.value).startswith(f"could not write {path}: no space left on device")
    assert str(error.value).endswith(f"nothing was written as {path.name}")
    assert list(path.parent.iterdir()) == []
