"""Shared fixtures: the tiny study (a whole DAG that runs in a couple of minutes on 2 cores).

`tiny_config()` is the study every workflow test builds on; later stages' tests extend it.
`tiny_workdir` copies the workflow (Snakefile, rules/, scripts/, profiles) into a fresh folder
with that config as config.yaml; `run_snakemake` runs the real snakemake CLI there.
`tiny_study_done` (session-scoped) runs the tiny study once to results/pareto.csv for tests that
only read its outputs.

The suite runs in parallel (pytest-xdist, `--dist loadfile`: a module's tests stay on one worker,
so module-scoped fixtures run once; xdist hands out the modules with the most tests first).
`shared_build` builds a session-wide result once for all workers.
"""
from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml
from filelock import FileLock

REPO = Path(__file__).resolve().parents[1]
WORKFLOW_PARTS = ("Snakefile", "rules", "scripts", "envs", "slurm", "report")

TINY_CONFIG: dict[str, Any] = {
    "study": "tiny-test",
    "data": {
        "name": "tiny",
        "source": {"kind": "python-stdlib", "max_bytes": 600_000},
        "tokenizer": {"kind": "bpe", "vocab_size": 512, "train_bytes": 300_000},
        "seq_len": 64,
        "val_fraction": 0.1,
        "shards": 2,
    },
    "architectures": [
        # three sizes (progressive extrapolation needs three), each with x and r variants
        {"name": "a1", "d_model": 32, "n_layers": 1, "n_heads": 2, "n_kv_heads": 1, "head_dim": 32,
         "ffn_dim": 128, "token_budgets": [8192, 16384]},
        {"name": "a2", "d_model": 48, "n_layers": 1, "n_heads": 2, "n_kv_heads": 1, "head_dim": 32, "ffn_dim": 64},
        {"name": "a3", "d_model": 24, "n_layers": 1, "n_heads": 2, "n_kv_heads": 2, "head_dim": 32, "ffn_dim": 192},
        {"name": "b1", "d_model": 40, "n_layers": 2, "n_heads": 2, "n_kv_heads": 1, "head_dim": 32,
         "ffn_dim": 192, "token_budgets": [8192, 16384]},
        {"name": "b2", "d_model": 64, "n_layers": 2, "n_heads": 2, "n_kv_heads": 2, "head_dim": 32, "ffn_dim": 96},
        {"name": "b3", "d_model": 32, "n_layers": 2, "n_heads": 3, "n_kv_heads": 1, "head_dim": 32, "ffn_dim": 256},
        {"name": "c1", "d_model": 48, "n_layers": 3, "n_heads": 2, "n_kv_heads": 1, "head_dim": 32,
         "ffn_dim": 256, "token_budgets": [8192, 16384]},
        {"name": "c2", "d_model": 80, "n_layers": 3, "n_heads": 2, "n_kv_heads": 2, "head_dim": 32, "ffn_dim": 96},
        {"name": "c3", "d_model": 40, "n_layers": 3, "n_heads": 4, "n_kv_heads": 2, "head_dim": 32, "ffn_dim": 224},
    ],
    "token_budgets": [8192],
    "training": {"global_batch_tokens": 1024, "micro_batch_size": 16, "lr": 0.01,
                 "checkpoint_every_steps": 4, "log_every_steps": 2, "threads": 1},
    "evaluation": {"val_tokens": 4096, "tasks": ["corpus_mc"],
                   "corpus_mc": {"n_examples": 16, "n_choices": 4, "context_tokens": 24,
                                 "continuation_tokens": 8},
                   "batch_size": 16},
    "throughput": {"engines": ["torch"], "gpu": "cpu", "device": "cpu", "batch_size": 2,
                   "input_len": 16, "output_len": 8, "warmup": 1, "repeats": 2},
    "fit": {"bootstrap": 4},
    "search": {"d_model_step": 8, "ffn_multiple": 32, "gqa_groups": [1, 2],
               "n_params_tolerance": 0.2},
}


def tiny_config() -> dict[str, Any]:
    """A fresh copy of the tiny study's config, for tests to modify."""
    return copy.deepcopy(TINY_CONFIG)


def write_workflow(workdir: Path, config: dict[str, Any]) -> Path:
    """Copy the workflow into `workdir` and write `config` as its config.yaml."""
    workdir.mkdir(parents=True, exist_ok=True)
    for part in WORKFLOW_PARTS:
        src = REPO / part
        if src.is_dir():
            shutil.copytree(src, workdir / part, dirs_exist_ok=True)
        elif src.exists():
            shutil.copy2(src, workdir / part)
    cpu_profile = REPO / "tests" / "slurm_cpu_profile"
    if cpu_profile.is_dir():
        shutil.copytree(cpu_profile, workdir / "slurm_cpu_profile", dirs_exist_ok=True)
    (workdir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return workdir


def run_snakemake(workdir: Path, *args: str, timeout: float = 1200,
                  check: bool = False) -> subprocess.CompletedProcess:
    """Run the real snakemake CLI in `workdir`; output is captured as text."""
    env = dict(os.environ, PYTHONHASHSEED="0")
    cmd = [sys.executable, "-m", "snakemake", *args]
    proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=timeout,
                          env=env)
    if check and proc.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed ({proc.returncode}):\n"
                             f"{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}")
    return proc


@pytest.fixture
def tiny_workdir(tmp_path: Path) -> Path:
    return write_workflow(tmp_path / "study", tiny_config())


def shared_build(tmp_path_factory: pytest.TempPathFactory, name: str,
                 build: Callable[[Path], None]) -> Path:
    """A folder `build(folder)` fills once per test session, whichever worker asks first.

    Under xdist every worker is its own process with its own session fixtures; without this,
    each would run the tiny study again. The first worker builds under a file lock in the
    session's shared temporary root and writes a marker; the others wait on the lock and reuse
    the folder. A failed build writes its error instead, and every later caller fails at once
    with it (rebuilding would cost each module the whole build again). Callers must treat the
    folder as read-only.
    """
    base = tmp_path_factory.getbasetemp()
    # workers' basetemps are popen-gwN/ under one session folder; without xdist, use our own
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    folder, marker = root / f"shared-{name}", root / f"shared-{name}.done"
    failed = root / f"shared-{name}.failed"
    worker = os.environ.get("PYTEST_XDIST_WORKER", "master")
    with FileLock(str(root / f"shared-{name}.lock")):
        if failed.exists():
            pytest.fail(f"the shared {name!r} build failed earlier in this session:\n"
                        f"{failed.read_text()[-6000:]}")
        if not marker.exists():
            try:
                build(folder)
            except BaseException as exc:
                failed.write_text(f"{worker}: {type(exc).__name__}: {exc}")
                raise
            marker.write_text(json.dumps({"built_by": worker}))
    return folder


@pytest.fixture(scope="session")
def tiny_study_done(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny study run once to results/pareto.csv; tests must not modify it."""
    def build(folder: Path) -> None:
        workdir = write_workflow(folder / "study", tiny_config())
        run_snakemake(workdir, "--cores", "2", "results/pareto.csv", check=True)

    return shared_build(tmp_path_factory, "tiny_done", build) / "study"


#: Modules that mostly wait on something outside pytest: SLURM's queue, and the vLLM
#: environment CI builds in the background. Scheduled first, their waiting overlaps the other
#: modules' work instead of making the run's tail (in a CI run they started last and ran
#: 9 minutes alone).
WAITING_MODULES = ("test_slurm_cluster.py", "test_vllm_cpu.py")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The waiting modules first, then the others with the most tests first (the order xdist
    picks by itself, which pyproject's --no-loadscope-reorder hands over to this hook); each
    module keeps its own order. Every worker collects the same order, as xdist requires."""
    counts: dict[str, int] = {}
    for item in items:
        counts[item.path.name] = counts.get(item.path.name, 0) + 1

    def rank(item: pytest.Item) -> tuple[int, int, str]:
        name = item.path.name
        first = WAITING_MODULES.index(name) if name in WAITING_MODULES else len(WAITING_MODULES)
        return first, -counts[name], name

    items.sort(key=rank)
