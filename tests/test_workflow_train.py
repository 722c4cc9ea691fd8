"""Training and evaluation through the real Snakemake CLI on (a subset of) the tiny study, and
the rerun rules: throughput knobs never retrain, a new architecture or an lr override retrains
only what it changes."""
from __future__ import annotations

import json
import re

import pandas as pd
import pytest
import yaml

from conftest import run_snakemake, tiny_config, write_workflow

pytestmark = pytest.mark.workflow

KEEP = ("a1", "b2")  # a1 at two token budgets: 3 runs


def subset_config():
    config = tiny_config()
    config["architectures"] = [a for a in config["architectures"] if a["name"] in KEEP]
    return config


def scheduled(proc) -> set[tuple[str, str]]:
    """(rule, wildcards) of the jobs a dry run lists."""
    text = proc.stdout + proc.stderr
    jobs = set()
    for block in re.split(r"\n(?=(?:local)?rule \w+:)", text):
        head = re.match(r"(?:local)?rule (\w+):", block.strip())
        if head:
            wc = re.search(r"wildcards: ([^\n]+)", block)
            jobs.add((head.group(1), wc.group(1).strip() if wc else ""))
    return jobs


def test_train_evaluate_collect_and_rerun_rules(tmp_path):
    workdir = write_workflow(tmp_path / "study", subset_config())
    run_snakemake(workdir, "--cores", "2", "results/runs.csv", check=True)

    runs = pd.read_csv(workdir / "results/runs.csv")
    assert sorted(zip(runs["name"], runs["tokens"])) == [("a1", 8192), ("a1", 16384),
                                                         ("b2", 8192)]
    accounting = pd.read_csv(workdir / "results/architectures.csv")
    assert list(runs.columns[:len(accounting.columns)]) == list(accounting.columns)
    for column in ("tokens", "seed", "epochs", "train_loss", "val_loss", "val_bpb",
                   "acc_corpus_mc", "acc_avg", "wall_s", "tokens_per_s"):
        assert column in runs and runs[column].notna().all(), column
    assert (runs["val_loss"] < 6.2).all()  # below ln(512): every model learned something
    run_dir = workdir / "results/runs/a1/16384/seed0"
    for name in ("model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json"):
        assert (run_dir / "model" / name).is_file(), name
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["tokens_seen"] == 16384 and metrics["steps"] == 16
    assert metrics["lr"]["rule"] == "inverse_width"
    assert metrics["provenance"]["settings"]["training"]["lr"] == 0.01
    log = pd.read_csv(run_dir / "train_log.csv")
    assert list(log.columns) == ["step", "tokens", "loss", "lr", "tokens_per_s"]
    assert not (workdir / "results/resume").exists() or \
        not any((workdir / "results/resume").rglob("state.pt"))
    assert (workdir / "logs/benchmarks/train/a1/16384/seed0.tsv").is_file()
    assert (workdir / "logs/train/a1/16384/seed0.log").is_file()

    # up to date
    again = run_snakemake(workdir, "-n", "--cores", "2", "results/runs.csv", check=True)
    assert "Nothing to be done" in again.stdout + again.stderr

    # throughput knobs of training and evaluation, and other stages' settings: nothing reruns
    config = subset_config()
    config["training"].update(threads=2, checkpoint_every_steps=3, compile=True, seeds=[0])
    config["evaluation"]["threads"] = 2
    config["throughput"]["repeats"] = 5
    (workdir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    again = run_snakemake(workdir, "-n", "--cores", "2", "results/runs.csv", check=True)
    assert "Nothing to be done" in again.stdout + again.stderr, again.stdout[-3000:]

    # a new architecture and an lr override: exactly those runs train and evaluate
    config["architectures"].append({"name": "d1", "d_model": 32, "n_layers": 1, "n_heads": 1,
                                    "n_kv_heads": 1, "head_dim": 32, "ffn_dim": 64})
    config["architectures"][1]["training"] = {"lr": 0.02}  # b2
    (workdir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    plan = scheduled(run_snakemake(workdir, "-n", "--cores", "2", "results/runs.csv",
                                   check=True))
    trained = {wc for rule, wc in plan if rule == "train"}
    evaluated = {wc for rule, wc in plan if rule == "evaluate"}
    expected = {"arch=d1, tokens=8192, seed=0", "arch=b2, tokens=8192, seed=0"}
    assert trained == expected and evaluated == expected, plan
    assert {rule for rule, _ in plan} == {"architecture_config", "architectures_table", "train",
                                          "evaluate", "collect_runs"}, plan
