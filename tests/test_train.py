"""The trainer as a library: learning-rate rule, schedule, exact budgets, data order,
determinism, gradient accumulation and DDP equivalence, and the saved checkpoint.

`tiny_data` and `tiny_job` are shared with test_resume.py and test_evaluate.py.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from archscale.training.launch import execute
from archscale.training.job import TrainError, TrainJob, result_settings
from archscale.training.loop import run
from archscale.training.schedule import DataOrder, Schedule, learning_rate, lr_at, read_batch

REPO = Path(__file__).resolve().parents[1]
TINY_ARCH = {"name": "t", "d_model": 40, "n_layers": 2, "n_heads": 2, "n_kv_heads": 1,
             "head_dim": 32, "ffn_dim": 96}
SETTINGS = {"global_batch_tokens": 512, "micro_batch_size": 4, "lr": 0.01,
            "lr_rule": {"kind": "inverse_width", "base_d_model": 64}, "schedule": "cosine",
            "warmup_fraction": 0.1, "decay_fraction": 0.2, "min_lr_ratio": 0.1,
            "weight_decay": 0.1, "beta1": 0.9, "beta2": 0.95, "grad_clip": 1.0, "init_std": 0.02,
            "dtype": "auto", "compile": False, "allow_repeats": True,
            "checkpoint_every_steps": 5, "log_every_steps": 2, "threads": 1, "gpus": 0,
            "seeds": [0]}
SEQ_LEN = 32


def make_tiny_data(root: Path, vocab: int = 384) -> Path:
    """A small real corpus (stdlib sources) tokenized with the data stage's own functions."""
    from archscale.data.corpus import merge_shards, tokenize_shard, train_tokenizer, write_meta

    source = {"kind": "python-stdlib", "max_bytes": 300_000}
    tok_cfg = {"kind": "bpe", "vocab_size": vocab, "bos_token_id": 0, "eos_token_id": 0,
               "train_bytes": 150_000}
    root.mkdir(parents=True, exist_ok=True)
    train_tokenizer(source, tok_cfg, 1, root / "tokenizer")
    files = tuple(str(root / f"0.{k}") for k in ("train.bin", "val.bin", "json"))
    shard = tokenize_shard(source, root / "tokenizer", 0, 1, 0.15, vocab, *files[:2])
    Path(files[2]).write_text(json.dumps(shard))
    meta = merge_shards([files], root / "train.bin", root / "val.bin", seq_len=SEQ_LEN)
    write_meta(root / "meta.json", meta)
    return root


def write_arch(path: Path, vocab: int = 384, **shape) -> Path:
    from archscale.architecture import Architecture

    fields = {**TINY_ARCH, **shape}
    arch = Architecture(**fields, vocab_size=vocab, tie_word_embeddings=True,
                        max_position_embeddings=128)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(arch.hf_config()))
    return path


def tiny_job(data: Path, out: Path, tokens: int = 4000, seed: int = 0, arch: Path | None = None,
             **overrides) -> TrainJob:
    arch = arch or write_arch(out / "arch" / "config.json")
    return TrainJob(arch_config=str(arch), train_bin=str(data / "train.bin"),
                    meta=str(data / "meta.json"), tokenizer_dir=str(data / "tokenizer"),
                    model_dir=str(out / "model"), log_csv=str(out / "train_log.csv"),
                    metrics_json=str(out / "metrics.json"), resume_dir=str(out / "resume"),
                    tokens=tokens, seed=seed, seq_len=SEQ_LEN,
                    settings={**SETTINGS, **overrides}, threads=1, label={"arch": "t"})


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    return make_tiny_data(tmp_path_factory.mktemp("train_data"))


# ---------------------------------------------------------------------------------------------
# Pure functions
# ---------------------------------------------------------------------------------------------

def test_learning_rate_rules():
    inv = learning_rate(SETTINGS, 128)
    assert inv["lr"] == pytest.approx(0.005) and inv["rule"] == "inverse_width"
    assert inv["formula"] == "lr * 64 / d_model"
    const = learning_rate({**SETTINGS, "lr_rule": {"kind": "constant"}}, 128)
    assert const["lr"] == 0.01 and const["rule"] == "constant"
    soft = learning_rate({**SETTINGS, "lr_rule": {"kind": "inverse_width", "base_d_model": 64,
                                                   "exponent": 0.5}}, 256)
    assert soft["lr"] == pytest.approx(0.005) and soft["formula"] == "lr * (64 / d_model) ** 0.5"
    mup = learning_rate({**SETTINGS, "lr_rule": {"kind": "mup", "base_d_model": 64}}, 128)
    assert mup["lr"] == pytest.approx(0.005) and mup["embedding_lr"] == 0.01
    with pytest.raises(TrainError, match="unknown rule"):
        learning_rate({**SETTINGS, "lr_rule": {"kind": "sqrt"}}, 128)


def test_mup_keeps_embeddings_and_norms_at_the_base_lr(tmp_path):
    from archscale.training.model import build_model
    from archscale.training.optimizer import make_optimizer

    model = build_model(write_arch(tmp_path / "config.json"), seed=0)
    settings = {**SETTINGS, "lr_rule": {"kind": "mup", "base_d_model": 20}}  # d_model 40
    groups = make_optimizer(model, settings, learning_rate(settings, 40), fused=False).param_groups
    scales = {len(g["params"]): (g["lr_scale"], g["weight_decay"]) for g in groups}
    n_norms = 2 * 2 + 1  # two per layer and the final one
    assert scales[1] == (2.0, 0.1)        # the (tied) embedding: base lr = 2 x the hidden lr
    assert scales[n_norms] == (2.0, 0.0)  # norm gains: base lr, no weight decay
    assert scales[2 * 7] == (1.0, 0.1)    # q, k, v, o, gate, up, down in each of 2 layers


def test_schedules_warm_up_then_decay_to_the_floor():
    steps, peak = 100, 1.0
    cosine = [lr_at(s, steps, peak, SETTINGS) for s in range(steps)]
    assert cosine[0] == pytest.approx(0.1) and cosine[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(cosine[9:], cosine[10:]))
    assert cosine[-1] == pytest.approx(0.1)
    wsd = [lr_at(s, steps, peak, {**SETTINGS, "schedule": "wsd"}) for s in range(steps)]
    assert wsd[10:80] == [1.0] * 70
    assert wsd[80] < 1.0 and wsd[-1] == pytest.approx(0.1)
    assert lr_at(0, 1, peak, {**SETTINGS, "warmup_fraction": 0.0}) == pytest.approx(0.1)


def test_schedule_meets_the_budget_exactly():
    schedule = Schedule.make(1000, SEQ_LEN, SETTINGS, train_tokens=10_000)
    assert schedule.total_seqs == 32 and schedule.batch_seqs == 16 and schedule.steps == 2
    assert sum(schedule.targets_in(schedule.step_sequences(s))
               for s in range(schedule.steps)) == 1000
    order = DataOrder(schedule.n_windows, SEQ_LEN, seed=0)
    tokens = np.arange(10_000, dtype=np.uint16)
    x, y = read_batch(tokens, order, schedule, np.arange(16, 32))
    assert x.shape == (16, SEQ_LEN) and (y != -100).sum() == 1000 - 16 * SEQ_LEN
    assert (y[-1, 1000 - 31 * SEQ_LEN:] == -100).all() and (y[-1, :1000 - 31 * SEQ_LEN] >= 0).all()
    assert bool((y[:, :-1][y[:, :-1] >= 0] == x[:, 1:][y[:, :-1] >= 0]).all())  # shifted by one
    with pytest.raises(TrainError, match="allow_repeats"):
        Schedule.make(20_000, SEQ_LEN, {**SETTINGS, "allow_repeats": False}, train_tokens=10_000)
    assert Schedule.make(20_000, SEQ_LEN, SETTINGS,
                         train_tokens=10_000).epochs == pytest.approx(2.0)


def test_data_order_is_a_fresh_permutation_each_epoch():
    order = DataOrder(n_windows=50, seq_len=8, seed=3)
    first, second = order.starts(np.arange(50)), order.starts(np.arange(50, 100))
    assert sorted(first) == sorted(second) == list(range(0, 400, 8))
    assert not np.array_equal(first, second)
    assert np.array_equal(DataOrder(50, 8, 3).starts(np.arange(40, 60)),
                          np.concatenate([first[40:], second[:10]]))
    assert not np.array_equal(DataOrder(50, 8, 4).starts(np.arange(50)), first)


def test_result_settings_leave_out_throughput_knobs():
    kept = result_settings(SETTINGS)
    for knob in ("threads", "gpus", "checkpoint_every_steps", "compile", "seeds",
                 "micro_batch_size"):
        assert knob not in kept
    assert kept["lr"] == 0.01 and kept["global_batch_tokens"] == 512


# ---------------------------------------------------------------------------------------------
# Training runs
# ---------------------------------------------------------------------------------------------

def _losses(out: Path) -> np.ndarray:
    return pd.read_csv(out / "train_log.csv")["loss"].to_numpy()


def test_same_seed_gives_identical_losses_and_weights(tiny_data, tmp_path):
    from safetensors.numpy import load_file

    a = run(tiny_job(tiny_data, tmp_path / "a"))
    b = run(tiny_job(tiny_data, tmp_path / "b"))
    c = run(tiny_job(tiny_data, tmp_path / "c", seed=1))
    assert np.array_equal(_losses(tmp_path / "a"), _losses(tmp_path / "b"))
    assert a["train_loss"] == b["train_loss"] != c["train_loss"]
    wa, wb = (load_file(tmp_path / k / "model" / "model.safetensors") for k in "ab")
    assert all(np.array_equal(wa[k], wb[k]) for k in wa)
    # the loss falls from ln(V) and the log covers the whole budget
    log = pd.read_csv(tmp_path / "a" / "train_log.csv")
    assert list(log.columns) == ["step", "tokens", "loss", "lr", "tokens_per_s"]
    assert log["tokens"].iloc[-1] == 4000 and log["step"].iloc[-1] == a["steps"] == 8
    assert log["loss"].iloc[-1] < log["loss"].iloc[0] < np.log(384) + 0.5
    assert a["tokens_seen"] == 4000 and a["epochs"] == pytest.approx(4000 / a["train_bin_tokens"])
    assert a["lr"]["lr"] == pytest.approx(0.01 * 64 / 40) and a["lr"]["rule"] == "inverse_width"
    assert a["mfu"] is None and a["device"] == "cpu" and a["resumed_from_steps"] == []
    assert not (tmp_path / "a" / "resume").exists()


def test_a_diverged_run_fails_naming_the_run_and_writes_no_result(tiny_data, tmp_path):
    """Issue 31: a huge lr made the loss NaN, and metrics.json was written with null losses."""
    from archscale.training.job import DivergedError

    out = tmp_path / "diverged"
    with pytest.raises(DivergedError) as err:
        run(tiny_job(tiny_data, out, lr=1.0e4))
    message = str(err.value)
    for needle in ("training diverged", "architecture 't'", "4,000 tokens", "seed 0",
                   "Lower training.lr"):
        assert needle in message, message
    assert not (out / "metrics.json").exists() and not (out / "model").exists()


def test_gradient_accumulation_matches_one_big_micro_batch(tiny_data, tmp_path):
    run(tiny_job(tiny_data, tmp_path / "acc", micro_batch_size=3))  # 16 seqs: 3+3+3+3+3+1
    run(tiny_job(tiny_data, tmp_path / "big", micro_batch_size=16))
    np.testing.assert_allclose(_losses(tmp_path / "acc"), _losses(tmp_path / "big"), rtol=1e-5)


def test_torchrun_two_ranks_match_one_process(tiny_data, tmp_path):
    """DDP on CPU (gloo), launched as the rule launches gpus > 1: the same global batch split
    across 2 ranks gives the same losses as one process."""
    single = run(tiny_job(tiny_data, tmp_path / "one", tokens=3000))
    execute(tiny_job(tiny_data, tmp_path / "two", tokens=3000), gpus=2)
    two = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert two["world_size"] == 2 and single["world_size"] == 1
    np.testing.assert_allclose(_losses(tmp_path / "two"), _losses(tmp_path / "one"), rtol=1e-4)
    assert two["train_loss"] == pytest.approx(single["train_loss"], rel=1e-4)
    assert not (tmp_path / "two" / "resume").exists()


def test_checkpoint_is_a_loadable_hf_model_with_its_tokenizer(tiny_data, tmp_path):
    import torch
    from transformers import AutoTokenizer

    from archscale.training.model import load_model

    arch = write_arch(tmp_path / "arch" / "config.json", d_model=36)  # 2 x 32 heads != 36
    run(tiny_job(tiny_data, tmp_path, tokens=1000, arch=arch))
    model_dir = tmp_path / "model"
    config = json.loads((model_dir / "config.json").read_text())
    assert config["hidden_size"] == 36 and config["head_dim"] == 32
    assert config["num_attention_heads"] == 2 and config["num_key_value_heads"] == 1
    assert config["tie_word_embeddings"] is True and config["rope_theta"] == 500000.0
    assert config["architectures"] == ["LlamaForCausalLM"]
    model = load_model(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    ids = tokenizer("def main():", return_tensors="pt").input_ids
    out = model.generate(ids, max_new_tokens=5, do_sample=False,
                         pad_token_id=tokenizer.eos_token_id)
    assert out.shape[1] == ids.shape[1] + 5 and out.dtype == torch.long
