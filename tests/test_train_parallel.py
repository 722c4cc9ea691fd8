"""Sharded training and activation checkpointing on CPU (issue 16, part 1), with two gloo ranks
launched as the train rule launches them (archscale.training.launch.execute, torchrun):

- FSDP2 (training.parallel: fsdp) on 2 ranks gives the losses and weights of one process;
- DDP with activation checkpointing on 2 ranks gives the losses of one process without it;
- an fsdp run killed with SIGKILL after a sharded state resumes on 2 ranks to the weights of an
  uninterrupted run, and the same 2-rank state resumes on 1 process to them too;
- activation checkpointing recomputes each decoder layer and keeps the losses;
- the config takes both settings, and the plan's per-GPU memory divides model states over the
  ranks under fsdp only (paper-3b fits 80 GB).

One token budget for all: 20 steps of 16 sequences, the last with 7, so that with
3-sequence micro-batches rank 0 runs 2 passes on it and rank 1 (3 sequences) pads with a
zero-weight pass.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from archscale.training.launch import execute
from archscale.training.job import result_settings
from archscale.training.loop import run
from archscale.training.sharded_state import latest_step_folder
from test_train import tiny_data, tiny_job  # noqa: F401 (the session fixture is used by name)

TOKENS = (19 * 16 + 7) * 32 - 4  # 20 steps; the last step's surplus targets are masked
SETTINGS = {"micro_batch_size": 3, "checkpoint_every_steps": 3}
FSDP = {**SETTINGS, "parallel": "fsdp"}
LOSS_RTOL = 1e-4      # float32 sums in another order (as tests/test_train.py allows DDP)
# AdamW's normalised updates amplify those roundings in weights with tiny gradients (rare
# tokens' embedding rows): 1.3e-3 of a tensor's norm after 20 steps here, where training
# itself moves the weights by far more than 1e-2
WEIGHT_RTOL = 1e-2


def _losses(out: Path) -> np.ndarray:
    return pd.read_csv(out / "train_log.csv")["loss"].to_numpy()


def _weights(out: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(out / "model" / "model.safetensors")


def _assert_same_weights(a: Path, b: Path, rtol: float = WEIGHT_RTOL) -> None:
    """The same tensors, each within rtol of its norm (rtol 0: bit-identical)."""
    wa, wb = _weights(a), _weights(b)
    assert sorted(wa) == sorted(wb)
    for key in wa:
        if rtol == 0:
            np.testing.assert_array_equal(wa[key], wb[key], err_msg=key)
        else:
            assert np.linalg.norm(wa[key] - wb[key]) <= rtol * np.linalg.norm(wa[key]), key


@pytest.fixture(scope="module")
def one_process(tiny_data, tmp_path_factory) -> Path:
    """The reference: one process, no sharding, no checkpointing."""
    out = tmp_path_factory.mktemp("one")
    run(tiny_job(tiny_data, out, tokens=TOKENS, **SETTINGS))
    return out


@pytest.fixture(scope="module")
def fsdp_two_ranks(tiny_data, tmp_path_factory) -> Path:
    """An uninterrupted fsdp run on 2 gloo ranks."""
    out = tmp_path_factory.mktemp("fsdp2")
    execute(tiny_job(tiny_data, out, tokens=TOKENS, **FSDP), gpus=2)
    return out


def test_parallel_settings_are_result_free():
    settings = {"lr": 0.01, "parallel": "fsdp", "activation_checkpointing": True}
    assert result_settings(settings) == {"lr": 0.01}


def test_fsdp_on_two_ranks_matches_one_process(one_process, fsdp_two_ranks):
    metrics = json.loads((fsdp_two_ranks / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["steps"] == 20
    assert metrics["parallel"] == "fsdp" and metrics["activation_checkpointing"] is False
    np.testing.assert_allclose(_losses(fsdp_two_ranks), _losses(one_process), rtol=LOSS_RTOL)
    _assert_same_weights(fsdp_two_ranks, one_process)
    config = json.loads((fsdp_two_ranks / "model" / "config.json").read_text())
    assert config["tie_word_embeddings"] is True and config["dtype"] == "float32"
    assert not (fsdp_two_ranks / "resume").exists()


def test_ddp_with_activation_checkpointing_on_two_ranks_matches_one_process(
        tiny_data, tmp_path, one_process):
    execute(tiny_job(tiny_data, tmp_path, tokens=TOKENS, **SETTINGS,
                     activation_checkpointing=True), gpus=2)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["world_size"] == 2 and metrics["parallel"] == "ddp"
    assert metrics["activation_checkpointing"] is True
    np.testing.assert_allclose(_losses(tmp_path), _losses(one_process), rtol=LOSS_RTOL)
    _assert_same_weights(tmp_path, one_process)


def test_activation_checkpointing_recomputes_each_layer_and_keeps_the_losses(tiny_data,
                                                                            tmp_path):
    import torch

    from archscale.training.model import build_model
    from archscale.training.parallel import decoder_layers, enable_activation_checkpointing
    from test_train import write_arch

    model = build_model(write_arch(tmp_path / "arch" / "config.json"), seed=0)
    enable_activation_checkpointing(model)
    calls = []
    for layer in decoder_layers(model):  # a hook inside the checkpointed region (a pre-hook:
        # the recompute stops once it has what the backward needs, before mlp returns)
        layer.mlp.register_forward_pre_hook(lambda module, args: calls.append(module))
    model.train()
    model(input_ids=torch.zeros(1, 8, dtype=torch.long), use_cache=False).logits.sum().backward()
    assert len(calls) == 2 * len(decoder_layers(model))  # the forward, then the recompute

    plain = tiny_job(tiny_data, tmp_path / "plain", tokens=3000)
    checkpointed = tiny_job(tiny_data, tmp_path / "ac", tokens=3000, activation_checkpointing=True)
    sharded = tiny_job(tiny_data, tmp_path / "fsdp-ac", tokens=3000, parallel="fsdp",
                       activation_checkpointing=True)
    for job in (plain, checkpointed, sharded):
        run(job)
    for out in ("ac", "fsdp-ac"):
        np.testing.assert_allclose(_losses(tmp_path / out), _losses(tmp_path / "plain"),
                                   rtol=LOSS_RTOL)


# ---------------------------------------------------------------------------------------------
# The settings and the memory each mode needs (no training)
# ---------------------------------------------------------------------------------------------

def test_config_takes_the_parallel_settings_and_refuses_unknown_modes():
    from archscale.config import ConfigError, load_study
    from conftest import tiny_config

    assert load_study(tiny_config()).training_settings("a1")["parallel"] == "ddp"
    config = tiny_config()
    config["training"].update(parallel="fsdp", activation_checkpointing=True)
    settings = load_study(config).training_settings("a1")
    assert settings["parallel"] == "fsdp" and settings["activation_checkpointing"] is True
    config["training"]["parallel"] = "zero3"
    with pytest.raises(ConfigError, match="parallel"):
        load_study(config)


def test_gpu_memory_divides_model_states_over_fsdp_ranks_only():
    from archscale.architecture import Architecture
    from archscale.costs import training_gpu_memory, training_memory_mb

    arch = Architecture(name="3b", d_model=3072, n_layers=28, n_heads=24, n_kv_heads=8,
                        head_dim=128, ffn_dim=8192, vocab_size=128256, tie_word_embeddings=True)
    base = {"gpus": 8, "nodes": 1, "micro_batch_size": 2, "dtype": "auto",
            "parallel": "ddp", "activation_checkpointing": False}
    ddp = training_gpu_memory(arch, base, 2048)
    fsdp = training_gpu_memory(arch, {**base, "parallel": "fsdp"}, 2048)
    two_nodes = training_gpu_memory(arch, {**base, "parallel": "fsdp", "nodes": 2}, 2048)
    assert ddp.model_states == 20 * arch.n_params_total  # 16 bytes + DDP's gradient buckets
    assert fsdp.model_states == 16 * arch.n_params_total / 8
    assert two_nodes.model_states == fsdp.model_states / 2
    assert ddp.logits == fsdp.logits == 2 * 2048 * 128256 * 14  # bf16 + 3 float32 copies
    checkpointed = training_gpu_memory(arch, {**base, "activation_checkpointing": True}, 2048)
    assert checkpointed.activations < ddp.activations / 5
    assert ddp.total_gb > 80 > fsdp.total_gb
    # the SLURM request: one process per GPU, and fsdp's host copies are sharded
    assert training_memory_mb(arch, {**base, "parallel": "fsdp"}, 2048) \
        < training_memory_mb(arch, base, 2048)


def test_paper_3b_plan_fits_80_gb_per_gpu_and_a_cpu_plan_reads_no_gpu_setting():
    from archscale.config import load_study
    from archscale.costs import study_plan, study_plan_inputs
    from conftest import REPO, tiny_config

    plan = study_plan(load_study(REPO / "configs" / "paper-3b.yaml"))
    assert (plan["gpu_memory_gb"] < 80).all(), plan[["architecture", "gpu_memory_gb"]]
    # a CPU study's plan has no GPU memory, so micro-batch or mode changes do not rerun it
    config = tiny_config()
    before = study_plan_inputs(load_study(config))
    config["training"].update(micro_batch_size=4, parallel="fsdp")
    assert study_plan_inputs(load_study(config)) == before
    assert study_plan(load_study(config))["gpu_memory_gb"].isna().all()


# ---------------------------------------------------------------------------------------------
# Resume: kill -9 under fsdp, then resume on 2 ranks and on 1
# ---------------------------------------------------------------------------------------------

def _children(pid: int) -> list[int]:
    """The processes whose parent is `pid` (torchrun's ranks run in sessions of their own, so
    killing torchrun's process group would leave them training)."""
    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.append(int(stat.parent.name))
    return kids


def _kill_after_first_state(job, tmp_path: Path) -> int:
    """Start the job on 2 ranks through torchrun, SIGKILL both ranks once a sharded state is
    complete, and return its step."""
    spec = tmp_path / "job.json"
    spec.write_text(job.to_json())
    proc = subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         "-m", "archscale.training.launch", "--job", str(spec)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        env=dict(os.environ, PYTHONPATH=os.pathsep.join(
            [str(Path(__file__).resolve().parents[1] / "src"), os.environ.get("PYTHONPATH", "")])))
    deadline = time.monotonic() + 180
    while proc.poll() is None and latest_step_folder(job) is None and time.monotonic() < deadline:
        time.sleep(0.005)
    for rank in _children(proc.pid):
        os.kill(rank, signal.SIGKILL)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0, "the run finished before it could be killed"
    assert not Path(job.metrics_json).exists(), err.decode()[-3000:]
    folder = latest_step_folder(job)
    assert folder is not None, err.decode()[-3000:]
    return int(folder.name.split("-")[1])


def test_fsdp_resumes_after_kill_9_on_two_ranks_and_on_one(tiny_data, tmp_path, fsdp_two_ranks):
    killed = tiny_job(tiny_data, tmp_path / "killed", tokens=TOKENS, **FSDP)
    step = _kill_after_first_state(killed, tmp_path)
    assert 3 <= step < 20
    # the same state, for a second job that resumes on 1 process (paths are not in the
    # fingerprint; the settings, data and budget are)
    on_one = tiny_job(tiny_data, tmp_path / "on-one", tokens=TOKENS, **FSDP)
    shutil.copytree(killed.resume_dir, on_one.resume_dir)

    execute(killed, gpus=2)
    resumed = json.loads(Path(killed.metrics_json).read_text())
    assert resumed["resumed_from_steps"] == [step] and resumed["world_size"] == 2
    _assert_same_weights(tmp_path / "killed", fsdp_two_ranks, rtol=0)
    np.testing.assert_array_equal(_losses(tmp_path / "killed"), _losses(fsdp_two_ranks))
    assert not Path(killed.resume_dir).exists()

    single = run(on_one)
    assert single["resumed_from_steps"] == [step] and single["world_size"] == 1
    _assert_same_weights(tmp_path / "on-one", fsdp_two_ranks)
    np.testing.assert_allclose(_losses(tmp_path / "on-one"), _losses(fsdp_two_ranks),
                               rtol=LOSS_RTOL)
    assert not Path(on_one.resume_dir).exists()


def test_sharded_state_of_other_settings_is_ignored(tiny_data, tmp_path, caplog):
    """A sharded state whose fingerprint differs is not loaded: the run starts from step 0."""
    first = tiny_job(tiny_data, tmp_path / "first", tokens=3000, parallel="fsdp",
                     checkpoint_every_steps=2)
    from archscale.training import loop

    # stop the first run after its first state by raising from the log row that follows it
    original = loop._log_row

    def stop_after_a_state(s, p, done, lr):
        original(s, p, done, lr)
        if latest_step_folder(first) is not None:
            raise KeyboardInterrupt
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(loop, "_log_row", stop_after_a_state)
        with pytest.raises(KeyboardInterrupt):
            run(first)
    assert latest_step_folder(first) is not None
    other = tiny_job(tiny_data, tmp_path / "other", tokens=3000, parallel="fsdp", lr=0.02)
    shutil.copytree(first.resume_dir, other.resume_dir)
    with caplog.at_level("WARNING", logger="archscale.training.sharded_state"):
        metrics = run(other)
    assert metrics["resumed_from_steps"] == []
    assert "belongs to other settings" in caplog.text
