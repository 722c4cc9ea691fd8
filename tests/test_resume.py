"""Resume: a trainer stopped by SIGTERM (it saves first) or killed with SIGKILL (the last
periodic state survives) restarts from its state and ends exactly where an uninterrupted run
with the same seed ends."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from archscale.training.loop import run
from archscale.training.state import STATE_FILE
from test_train import tiny_data, tiny_job  # noqa: F401 (the session fixture is used by name)

TOKENS = 32_000  # 63 steps of 512 tokens: the kill lands after step 10 of 63


def _start(job, tmp_path: Path) -> subprocess.Popen:
    spec = tmp_path / f"job-{time.monotonic_ns()}.json"
    spec.write_text(job.to_json())
    return subprocess.Popen([sys.executable, "-m", "archscale.training.launch", "--job", str(spec)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env=dict(os.environ, OMP_NUM_THREADS="1"))


def _wait_for_state(proc: subprocess.Popen, state: Path, after_step: int = 0) -> int:
    """Poll until the trainer has written a state beyond `after_step`; returns its step."""
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        if state.exists():
            try:
                step = torch.load(state, weights_only=True)["step"]
            except Exception:  # caught between two renames: read it again
                step = 0
            if step > after_step:
                return step
        time.sleep(0.01)
    raise AssertionError(f"no state beyond step {after_step}: the trainer exited "
                         f"({proc.returncode}) or hung")


def test_sigterm_and_kill_9_then_rerun_match_an_uninterrupted_run(tiny_data, tmp_path):
    job = tiny_job(tiny_data, tmp_path / "killed", tokens=TOKENS, checkpoint_every_steps=10)
    state = Path(job.resume_dir) / STATE_FILE

    # 1. SIGTERM (SLURM's time limit): the trainer saves at the step it is on and exits 143
    proc = _start(job, tmp_path)
    _wait_for_state(proc, state)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM, err.decode()[-3000:]
    assert "SIGTERM: state saved at step" in err.decode()
    termed_at = torch.load(state, weights_only=True)["step"]
    assert termed_at >= 10 and not Path(job.metrics_json).exists()

    # 2. rerun, then SIGKILL after its next periodic state: nothing runs at a kill -9
    proc = _start(job, tmp_path)
    killed_at = _wait_for_state(proc, state, after_step=termed_at)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "the trainer finished before it could be killed"
    assert not Path(job.metrics_json).exists()

    # 3. the rerun Snakemake would start finishes from the last state
    proc = _start(job, tmp_path)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err.decode()[-4000:]
    resumed = json.loads(Path(job.metrics_json).read_text())
    assert resumed["resumed_from_steps"][0] == termed_at > 0
    assert resumed["resumed_from_steps"][1] >= killed_at > termed_at
    assert "resuming from step" in err.decode()
    assert not Path(job.resume_dir).exists()  # removed on success

    reference = run(tiny_job(tiny_data, tmp_path / "whole", tokens=TOKENS))
    assert reference["resumed_from_steps"] == []
    assert resumed["train_loss"] == pytest.approx(reference["train_loss"], rel=1e-6, abs=1e-7)
    log_a = pd.read_csv(tmp_path / "killed" / "train_log.csv")
    log_b = pd.read_csv(tmp_path / "whole" / "train_log.csv")
    assert list(log_a["step"]) == list(log_b["step"])
    np.testing.assert_allclose(log_a["loss"], log_b["loss"], rtol=1e-6)


def test_state_from_other_settings_is_ignored(tiny_data, tmp_path, caplog):
    """A resume folder left by a run with another lr must not leak into this one."""
    import logging

    other = tiny_job(tiny_data, tmp_path, tokens=2000, lr=0.02)
    job = tiny_job(tiny_data, tmp_path, tokens=2000)
    assert other.fingerprint() != job.fingerprint()
    Path(job.resume_dir).mkdir(parents=True)
    torch.save({"version": 1, "fingerprint": other.fingerprint(), "step": 2},
               Path(job.resume_dir) / STATE_FILE)
    with caplog.at_level(logging.WARNING, logger="archscale.training.state"):
        metrics = run(job)
    assert metrics["resumed_from_steps"] == []
    assert "belongs to other settings" in caplog.text
    assert not Path(job.resume_dir).exists()
