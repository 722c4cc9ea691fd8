"""Evaluation: fixed validation windows, the offline multiple-choice task, lm-eval on a tiny
trained checkpoint (offline), and the collected runs table."""
from __future__ import annotations

import json
import os
from pathlib import Path
from unittest.mock import Mock

import numpy as np
import pandas as pd
import pytest
from test_train import SEQ_LEN, tiny_data, tiny_job  # noqa: F401 (session fixture by name)

from archscale.data.mc_task import TaskBuildError, build_examples, build_task
from archscale.training.evaluate import (EvalError, accuracy_summary, evaluate_run, heldout_windows,
                                         runs_table, task_metric)
from archscale.training.loop import run

MC = {"n_examples": 24, "n_choices": 4, "context_tokens": 24, "continuation_tokens": 8,
      "seed": 7}


def test_validation_windows_are_fixed_spread_and_disjoint():
    starts = heldout_windows(n_tokens=10_001, seq_len=100, val_tokens=1_000)
    assert list(starts) == list(heldout_windows(10_001, 100, 1_000))
    assert len(starts) == 10 and starts[0] == 0 and starts[-1] == 9_900
    assert np.all(np.diff(starts) >= 100)
    assert len(heldout_windows(1_001, 100, 10**6)) == 10  # capped at the split
    with pytest.raises(EvalError, match="val_fraction"):
        heldout_windows(50, 100, 1_000)


def test_task_metrics_follow_the_paper():
    assert task_metric("hellaswag", ["acc,none", "acc_norm,none"]) == "acc_norm"
    assert task_metric("winogrande", ["acc,none"]) == "acc"
    assert task_metric("coqa", ["em,none", "f1,none"]) == "f1"
    assert task_metric("mmlu", ["acc,none"]) == "acc"
    with pytest.raises(EvalError, match="no 'acc_norm'"):
        task_metric("piqa", ["acc,none"])
    summary = accuracy_summary({"a": {"value": 0.5}, "b": {"value": 0.25}})
    assert summary == {"acc_a": 0.5, "acc_b": 0.25, "acc_avg": 0.375}


def test_examples_take_distractors_from_other_documents():
    eos = 0
    docs = [np.arange(1, 41) + 100 * k for k in range(12)]  # 12 documents of 40 distinct ids
    tokens = np.concatenate([np.append(d, eos) for d in docs]).astype(np.uint16)

    def decode(ids):
        return " ".join(map(str, ids))

    examples = build_examples(tokens, decode, eos, n_examples=10, n_choices=4,
                              context_tokens=6, continuation_tokens=4, seed=1)
    assert examples == build_examples(tokens, decode, eos, 10, 4, 6, 4, seed=1)
    for ex in examples:
        assert len(ex["choices"]) == 4 == len(set(ex["choices"])) and 0 <= ex["label"] < 4
        context = [int(t) for t in ex["context"].split()]
        truth = [int(t) for t in ex["choices"][ex["label"]].split()]
        assert truth == list(range(context[-1] + 1, context[-1] + 5))  # the real continuation
        for k, choice in enumerate(ex["choices"]):
            if k != ex["label"]:
                assert int(choice.split()[0]) // 100 != context[0] // 100  # another document
    assert len({ex["label"] for ex in examples}) > 1
    with pytest.raises(TaskBuildError, match="n_examples"):
        build_examples(tokens, decode, eos, 500, 4, 6, 4, seed=1)


@pytest.fixture(scope="module")
def trained(tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval_run")
    metrics = run(tiny_job(tiny_data, out, tokens=30_000))
    return out, metrics


@pytest.fixture(scope="module")
def evaluated(tiny_data, trained, tmp_path_factory):
    """One offline evaluate_run (threads=2) on the trained checkpoint with the corpus_mc task,
    watched: the torch thread counts inside its two stages and after it, and every call of
    lm-eval's environment collectors (patched to record, not run)."""
    import lm_eval.evaluator
    import lm_eval.loggers.utils
    import torch
    import torch.utils.collect_env

    import archscale.training.evaluate as evaluate

    out, metrics = trained
    work = tmp_path_factory.mktemp("evaluated")
    collectors = {name: Mock(name=name) for name in ("add_env_info", "get_git_commit_hash",
                                                     "get_pretty_env_info")}
    threads_seen = {}

    def watch(stage, function):
        def watched(*args, **kwargs):
            threads_seen[stage] = (torch.get_num_threads(), os.environ.get("RAYON_NUM_THREADS"))
            return function(*args, **kwargs)
        return watched

    before = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as mp:
        for key in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
            mp.setenv(key, "1")
        mp.setenv("HF_DATASETS_CACHE", str(work / "hf_datasets"))
        mp.chdir(work)  # the task YAML names its JSONL relative to the workflow dir
        for module in (lm_eval.evaluator, lm_eval.loggers.utils):
            mp.setattr(module, "add_env_info", collectors["add_env_info"])
            mp.setattr(module, "get_git_commit_hash", collectors["get_git_commit_hash"])
        mp.setattr(torch.utils.collect_env, "get_pretty_env_info",
                   collectors["get_pretty_env_info"])
        mp.setattr(evaluate, "heldout_loss", watch("heldout_loss", evaluate.heldout_loss))
        mp.setattr(evaluate, "run_lm_eval", watch("lm_eval", evaluate.run_lm_eval))
        torch.set_num_threads(3)
        summary = build_task(tiny_data / "val.bin", tiny_data / "meta.json",
                             tiny_data / "tokenizer", "task/corpus_mc.yaml",
                             "task/corpus_mc.jsonl", MC)
        lines = Path("task/corpus_mc.jsonl").read_text().splitlines()
        settings = {"val_tokens": 2048, "tasks": ["corpus_mc"], "batch_size": 8, "limit": None,
                    "corpus_mc": MC}
        try:
            result = evaluate_run(out / "model", tiny_data / "val.bin", tiny_data / "meta.json",
                                  SEQ_LEN, settings, ["task"], "eval.json", label={"arch": "t"},
                                  threads=2)
            threads_after = torch.get_num_threads()
        finally:
            torch.set_num_threads(before)
    return {"metrics": metrics, "summary": summary, "lines": lines, "result": result,
            "saved": json.loads((work / "eval.json").read_text()), "collectors": collectors,
            "threads_seen": threads_seen, "threads_after": threads_after}


def test_lm_eval_runs_offline_on_the_trained_checkpoint(evaluated):
    summary, lines, saved = evaluated["summary"], evaluated["lines"], evaluated["saved"]
    assert summary["examples"] == 24 and summary["chance_accuracy"] == 0.25
    assert len(lines) == 24 and set(json.loads(lines[0])) >= {"context", "choices", "label"}
    assert saved["val_loss"] == evaluated["result"]["val_loss"]
    assert saved["val_tokens"] == 2048 and saved["val_windows"] == 64
    # held-out loss near the training loss, far below the uniform ln(V)
    train_loss = evaluated["metrics"]["train_loss"]
    assert abs(saved["val_loss"] - train_loss) < 0.6 < np.log(384) - saved["val_loss"]
    assert 0.5 < saved["val_bpb"] < 8
    task = saved["tasks"]["corpus_mc"]
    assert task["metric"] == "acc_norm" and task["n_samples"]["effective"] == 24
    assert 0 < task["stderr"] < 0.2  # closed-form standard error of a mean over 24 examples
    assert 0.0 <= saved["acc_corpus_mc"] == task["value"] == saved["acc_avg"] <= 1.0
    assert saved["provenance"]["packages"]["lm_eval"]


def test_lm_eval_environment_report_is_not_collected(evaluated):
    """simple_evaluate's environment report (pip list, GPU probes: ~1.5 s a job, issue 26) is
    skipped, while the task results still come from lm-eval's evaluator."""
    for name, collector in evaluated["collectors"].items():
        assert collector.call_count == 0, f"lm-eval's {name} ran"
    task = evaluated["saved"]["tasks"]["corpus_mc"]
    assert task["n_samples"] == {"original": 24, "effective": 24}
    assert 0.0 <= task["value"] <= 1.0 and task["stderr"] > 0


def test_evaluation_runs_on_the_threads_it_is_given(evaluated):
    """threads=2 while the process had 3: both stages ran on 2 torch threads (and told the
    tokenizers' pool 2); eval.json records it; the caller's setting is back afterwards."""
    assert evaluated["threads_seen"] == {"heldout_loss": (2, "2"), "lm_eval": (2, "2")}
    recorded = evaluated["saved"]["provenance"]["settings"]["threads"]
    assert recorded["torch"] == 2 and recorded["arrow"] == 2
    assert 1 <= recorded["native_pools"] <= 2
    assert evaluated["threads_after"] == 3


def test_native_and_transformers_evaluations_are_identical(tiny_data, trained, tmp_path,
                                                          monkeypatch):
    """evaluation.harness_model native (plain-torch forward, no transformers import) and hf
    (transformers + lm-eval's HFLM) give the same eval.json figures on the same checkpoint."""
    out, _ = trained
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "hf_datasets"))
    monkeypatch.chdir(tmp_path)
    build_task(tiny_data / "val.bin", tiny_data / "meta.json", tiny_data / "tokenizer",
               "task/corpus_mc.yaml", "task/corpus_mc.jsonl", MC)
    results = {}
    for harness_model in ("native", "hf"):
        settings = {"val_tokens": 2048, "tasks": ["corpus_mc"], "batch_size": 8, "limit": None,
                    "corpus_mc": MC, "harness_model": harness_model}
        results[harness_model] = evaluate_run(
            out / "model", tiny_data / "val.bin", tiny_data / "meta.json", SEQ_LEN, settings,
            ["task"], f"{harness_model}.json", label={"arch": "t"})
    native, hf = results["native"], results["hf"]
    for key in ("val_loss", "val_bpb"):
        assert native[key] == pytest.approx(hf[key], rel=1e-6, abs=0), key
    assert native["val_tokens"] == hf["val_tokens"] and native["val_bytes"] == hf["val_bytes"]
    assert native["tasks"]["corpus_mc"]["value"] == hf["tasks"]["corpus_mc"]["value"]
    assert native["tasks"]["corpus_mc"]["stderr"] == pytest.approx(
        hf["tasks"]["corpus_mc"]["stderr"], rel=1e-9)
    assert native["provenance"]["settings"]["evaluation"]["harness_model"] == "native"
    assert "transformers" not in native["provenance"]["packages"]


def test_a_native_evaluation_job_does_not_import_transformers():
    """What scripts/evaluate.py imports for harness_model native leaves transformers out (its
    import is most of a small model's evaluation job); hf brings it in."""
    import subprocess
    import sys

    probe = ("import sys; from archscale.training.evaluate import import_libraries; "
             "import archscale.workflow.snakemake; import_libraries({!r}); "
             "print('transformers' in sys.modules)")
    for harness_model, expected in (("native", "False"), ("hf", "True")):
        out = subprocess.run([sys.executable, "-c", probe.format(harness_model)],
                             capture_output=True, text=True, check=True)
        assert out.stdout.strip() == expected, harness_model


def test_checkpoint_lm_scores_every_request_as_hflm_does(trained):
    """lm-eval requests scored by CheckpointLM and by HFLM: ordinary pairs, a context ending in
    spaces, an empty context (scored after the prefix token), inputs longer than max_length
    (truncated from the left), and rolling log-likelihoods over several windows."""
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    from archscale.training.harness_lm import CheckpointLM
    from archscale.hf_compat import allow_decoupled_head_dim

    out, _ = trained
    allow_decoupled_head_dim()
    native = CheckpointLM(out / "model", batch_size=3, max_length=24)
    hf = HFLM(pretrained=str(out / "model"), device="cpu", dtype="float32", batch_size=3,
              max_length=24)
    text = "def load(path):\n    with open(path) as f:\n        return json.load(f)\n" * 3
    pairs = [("import os", " path"), ("def main(", "):"), ("x = ", "1"), ("", "return None"),
             (text[:-10], text[-10:]), ("class A:  ", "pass"), ("for i in", " range(3):")]
    requests = [Instance("loglikelihood", {}, pair, i) for i, pair in enumerate(pairs)]
    got, expected = native.loglikelihood(requests), hf.loglikelihood(requests)
    assert [greedy for _, greedy in got] == [greedy for _, greedy in expected]
    assert [score for score, _ in got] == pytest.approx([s for s, _ in expected], abs=1e-4)
    assert native.tok_encode(text) == hf.tok_encode(text)
    rolling = [Instance("loglikelihood_rolling", {}, (t,), i)
               for i, t in enumerate((text, "print('hello')"))]
    assert native.loglikelihood_rolling(rolling) == pytest.approx(
        hf.loglikelihood_rolling(rolling), abs=1e-4)
    # generation (coqa and other generative tasks) is HFLM's own, on the same checkpoint
    prompts = [Instance("generate_until", {}, (p, {"until": ["\n"], "max_gen_toks": 6}), i)
               for i, p in enumerate(("def ", "import "))]
    assert native.generate_until(prompts) == hf.generate_until(prompts)


def test_thread_limits_are_checked_and_restored():
    import pyarrow
    import torch

    from archscale.training.evaluate import limited_threads

    torch_before, arrow_before = torch.get_num_threads(), pyarrow.cpu_count()
    with limited_threads(1) as in_force:
        assert torch.get_num_threads() == 1 == in_force["torch"] == pyarrow.cpu_count()
        assert os.environ["RAYON_NUM_THREADS"] == "1"
    assert (torch.get_num_threads(), pyarrow.cpu_count()) == (torch_before, arrow_before)
    with pytest.raises(EvalError, match="evaluation.threads is 0"):
        with limited_threads(0):
            pass


def test_missing_task_data_is_named(tiny_data, trained, tmp_path, monkeypatch):
    out, _ = trained
    monkeypatch.chdir(tmp_path)
    (tmp_path / "task").mkdir()
    (tmp_path / "task" / "corpus_mc.yaml").write_text(
        "task: corpus_mc\ndataset_path: json\n"
        "dataset_kwargs: {data_files: {test: nowhere/corpus_mc.jsonl}}\n")
    settings = {"val_tokens": 256, "tasks": ["corpus_mc"], "batch_size": 8, "limit": None}
    with pytest.raises(EvalError, match="nowhere/corpus_mc.jsonl"):
        evaluate_run(out / "model", tiny_data / "val.bin", tiny_data / "meta.json", SEQ_LEN,
                     settings, ["task"], "eval.json")


def test_runs_table_joins_accounting_and_results(tmp_path):
    pd.DataFrame([{"name": "a", "d_model": 8, "n_params_non_embedding": 100},
                  {"name": "b", "d_model": 16, "n_params_non_embedding": 400}]).to_csv(
        tmp_path / "architectures.csv", index=False)
    runs = []
    for arch, loss in (("b", 3.0), ("a", 4.0)):
        m, e = tmp_path / f"{arch}.metrics.json", tmp_path / f"{arch}.eval.json"
        m.write_text(json.dumps({"epochs": 0.5, "train_loss": loss + 0.1, "wall_s": 10.0,
                                 "tokens_per_s": 1000.0, "lr": {"lr": 0.01}}))
        e.write_text(json.dumps({"val_loss": loss, "val_bpb": loss / 3, "acc_corpus_mc": 0.4,
                                 "acc_avg": 0.4}))
        runs.append((arch, 2000, 0, m, e))
    table = runs_table(tmp_path / "architectures.csv", runs, ["corpus_mc"])
    assert list(table.columns) == ["name", "d_model", "n_params_non_embedding", "tokens", "seed",
                                   "epochs", "train_loss", "val_loss", "val_bpb",
                                   "acc_corpus_mc", "acc_avg", "wall_s", "tokens_per_s", "lr"]
    assert list(table["name"]) == ["b", "a"] and list(table["val_loss"]) == [3.0, 4.0]
    with pytest.raises(EvalError, match="missing from"):
        runs_table(tmp_path / "architectures.csv", [("zz", 1, 0, *runs[0][3:])], ["corpus_mc"])


def test_tasks_get_the_context_their_examples_need_not_config_json_s():
    """A corpus_mc example longer than data.seq_len raises lm-eval's max_length, never the
    config.json every training run reads (that would retrain the study)."""
    from archscale.training.evaluate import task_context_length

    mc = {"context_tokens": 100, "continuation_tokens": 28}
    assert task_context_length({"tasks": ["corpus_mc"], "corpus_mc": mc}, 64) == 128
    assert task_context_length({"tasks": ["corpus_mc"], "corpus_mc": mc}, 256) == 256
    assert task_context_length({"tasks": ["hellaswag"], "corpus_mc": mc}, 64) == 64
