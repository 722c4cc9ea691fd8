"""Bad input, tried as a new user would (issue 8, part 5).

Malformed config.yaml variants go through the REAL `snakemake -n` in copies of the finished
tiny study. Each must exit non-zero with one clear error naming the field, before any job
starts, and leave every existing file under results/ as it was (mtime and content).

Mistakes about the corpus (a `files` source that is empty or missing, a token budget larger
than the corpus with training.allow_repeats false) are tried by building the target for real,
as a user would: the corpus ones are refused when the config loads, the budget one when its
training job starts; each must give a clear error and lose no result.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Callable

import pytest
from test_reruns import copy_study, parallel, read_config, snapshot, snapshot_diff, write_config

from conftest import run_snakemake

pytestmark = pytest.mark.workflow

Mutation = Callable[[dict[str, Any]], Any]


def arch(config: dict[str, Any], name: str) -> dict[str, Any]:
    return next(a for a in config["architectures"] if a["name"] == name)


def setter(path: str, value: Any) -> Mutation:
    def mutate(config: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = config
        for key in parents:
            node = node[key]
        node[last] = value
    return mutate


def deleter(path: str) -> Mutation:
    def mutate(config: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = config
        for key in parents:
            node = node[key]
        del node[last]
    return mutate


def arch_setter(name: str, **fields: Any) -> Mutation:
    return lambda config: arch(config, name).update(fields)


# name -> (mutation of the config dict, or the raw text of config.yaml; substrings the error
# must contain, which name the field)
PARSE_TIME: dict[str, tuple[Mutation | str, list[str]]] = {
    "lr_wrong_type": (setter("training.lr", "fast"), ["training.lr", "'fast'"]),
    "lr_negative": (setter("training.lr", -0.01), ["training.lr"]),
    "budget_written_1e5": (setter("token_budgets", ["1e5"]), ["token_budgets[0]", "1e5"]),
    "budget_zero": (setter("token_budgets", [0]), ["token_budgets[0]"]),
    "budget_fractional": (setter("token_budgets", [8192.5]), ["token_budgets"]),
    "seeds_not_a_list": (setter("training.seeds", 0), ["training.seeds"]),
    "seq_len_text": (setter("data.seq_len", "64 tokens"), ["data.seq_len"]),
    "val_fraction_too_large": (setter("data.val_fraction", 1.5), ["data.val_fraction"]),
    "missing_data_section": (deleter("data"), ["'data' is a required property"]),
    "missing_architectures": (deleter("architectures"), ["'architectures' is a required"]),
    "no_architectures": (setter("architectures", []), ["architectures"]),
    "section_not_a_mapping": (setter("training", 5), ["training", "object"]),
    "misspelt_key": (setter("training.learning_rate", 0.01), ["training", "learning_rate"]),
    "heads_not_divisible": (arch_setter("b3", n_kv_heads=2), ["b3", "n_kv_heads"]),
    "more_kv_heads_than_heads": (arch_setter("a1", n_kv_heads=4), ["a1", "n_kv_heads"]),
    "zero_width": (arch_setter("a1", d_model=0), ["a1", "d_model"]),
    "missing_shape_field": (lambda c: arch(c, "a2").pop("ffn_dim"), ["a2", "ffn_dim"]),
    "impossible_targets": (
        lambda c: c["architectures"].append({
            "name": "t1", "n_layers": 2, "head_dim": 32,
            "targets": {"n_params": 1000, "d_over_sqrt_n": 0.08, "r_mlp_attn": 2.0,
                        "gqa_group": 1}}), ["t1"]),
    "targets_with_explicit_width": (
        lambda c: c["architectures"].append({
            "name": "t2", "n_layers": 2, "head_dim": 32, "d_model": 64,
            "targets": {"n_params": 100000, "d_over_sqrt_n": 0.1, "r_mlp_attn": 2.0,
                        "gqa_group": 1}}), ["t2", "d_model"]),
    "duplicate_name": (lambda c: c["architectures"].append(dict(arch(c, "a1"))),
                       ["duplicate", "a1"]),
    "max_position_too_short": (arch_setter("a1", max_position_embeddings=16),
                               ["a1", "max_position_embeddings"]),
    "unknown_engine": (setter("throughput.engines", ["tensorrt"]),
                       ["throughput.engines", "unknown engine(s) 'tensorrt'",
                        "known: ['torch', 'vllm', 'sglang']"]),
    "unknown_gpu_preset": (setter("throughput.gpu", "H999"), ["throughput.gpu", "H999"]),
    "search_engine_not_measured": (setter("search.engine", "vllm"), ["search.engine"]),
    "unknown_baseline": (lambda c: c["search"].update(baseline={"architecture": "zz"}),
                         ["search.baseline.architecture", "zz"]),
    "bos_outside_vocab": (setter("data.tokenizer.bos_token_id", 600),
                          ["data.tokenizer.bos_token_id"]),
    "batch_below_one_sequence": (setter("training.global_batch_tokens", 32),
                                 ["training.global_batch_tokens"]),
    "unknown_lr_rule": (lambda c: c["training"].update(lr_rule={"kind": "sqrt"}),
                        ["training.lr_rule.kind"]),
    "r_range_inverted": (lambda c: c.setdefault("fit", {}).update(r_range=[5.0, 0.5]),
                         ["fit.r_range"]),
    "files_source_without_paths": (setter("data.source", {"kind": "files"}),
                                   ["data.source.paths"]),
    # issue 15: caught when the config loads, so no job starts and nothing is deleted
    "arch_override_wrong_type": (arch_setter("a2", training={"lr": "fast"}),
                                 ["architectures[1] (architecture 'a2').training.lr", "'fast'"]),
    "arch_override_misspelt_key": (arch_setter("a2", training={"lrr": 0.02}),
                                   ["architectures[1] (architecture 'a2').training", "'lrr'"]),
    "duplicate_seeds": (setter("training.seeds", [0, 0]), ["training.seeds", "non-unique"]),
    "duplicate_token_budget": (setter("token_budgets", [8192, 8192]),
                               ["token_budgets", "non-unique"]),
    "duplicate_arch_token_budget": (arch_setter("a1", token_budgets=[8192, 8192]),
                                    ["architectures[0] (architecture 'a1').token_budgets"]),
    "dot_dot_architecture_name": (lambda c: arch(c, "a1").update(name=".."),
                                  ["architectures[0] (architecture '..').name"]),
    "budget_below_one_batch": (setter("token_budgets", [500]),
                               ["token_budgets", "500 tokens", "training.global_batch_tokens"]),
    # issue 29: vLLM's CPU attention has no head_dim 16 kernel; said before any job starts
    "vllm_cpu_head_dim_without_kernel": (
        lambda c: (c["throughput"].update(engines=["torch", "vllm"], device="cpu"),
                   arch(c, "a1").update(head_dim=16)),
        ["architecture 'a1'", "vLLM's CPU attention has no kernel for head_dim 16",
         "32, 64, 80"]),
    "yaml_syntax_error": ("data:\n  name: tiny\n  source: {kind: python-stdlib\n"
                          "token_budgets: [8192]\n", ["config.yaml", "line 3"]),
    "yaml_not_a_mapping": ("- data\n- architectures\n", ["config.yaml must be a mapping",
                                                          "got list"]),
}

def one_error(text: str) -> list[str]:
    """What makes an error message unclear: a Python traceback, more than one error headline,
    more than one listed problem."""
    problems = []
    if "Traceback (most recent call last)" in text:
        problems.append("a Python traceback")
    headlines = [l for l in text.splitlines() if re.match(r"^\w*(Error|Exception)\b", l)]
    if len(headlines) != 1:
        problems.append(f"{len(headlines)} error headlines: {headlines}")
    bullets = [l for l in text.splitlines() if l.startswith("  - ")]
    if len(bullets) > 1:
        problems.append(f"{len(bullets)} problems listed for one mistake: {bullets}")
    return problems


@pytest.fixture(scope="module")
def parse_time_results(tiny_study_done, tmp_path_factory) -> dict[str, dict[str, Any]]:
    """Every parse-time variant's dry run, each in its own copy, run concurrently."""
    root = tmp_path_factory.mktemp("fuzz")

    def one(name: str) -> dict[str, Any]:
        workdir = copy_study(tiny_study_done, root / name)
        mutation, _ = PARSE_TIME[name]
        if isinstance(mutation, str):
            (workdir / "config.yaml").write_text(mutation)
        else:
            config = read_config(workdir)
            mutation(config)
            write_config(workdir, config)
        before = snapshot(workdir)
        proc = run_snakemake(workdir, "-n", "--cores", "2", "results/pareto.csv", timeout=300)
        return {"proc": proc, "text": proc.stdout + proc.stderr,
                "diff": snapshot_diff(before, snapshot(workdir))}

    names = list(PARSE_TIME)
    return dict(zip(names, parallel([lambda n=n: one(n) for n in names])))


@pytest.mark.parametrize("name", list(PARSE_TIME))
def test_bad_config_fails_at_parse_time_with_one_clear_error(parse_time_results, name):
    result = parse_time_results[name]
    text = result["text"]
    assert result["proc"].returncode != 0, f"{name} was accepted:\n{text[-2000:]}"
    assert "Building DAG of jobs" not in text, "the error came after the DAG was built"
    for needle in PARSE_TIME[name][1]:
        assert needle in text, f"{name}: the error does not name {needle!r}:\n{text[-2000:]}"
    assert not one_error(text), (one_error(text), text[-3000:])


@pytest.mark.parametrize("name", list(PARSE_TIME))
def test_bad_config_loses_no_result(parse_time_results, name):
    diff = parse_time_results[name]["diff"]
    assert diff == {"removed": [], "added": [], "changed": []}, diff


# ---------------------------------------------------------------------------------------------
# Corpus mistakes: build the target for real
# ---------------------------------------------------------------------------------------------

def _empty_corpus(workdir: Path, config: dict[str, Any]) -> str:
    (workdir / "corpus").mkdir()
    (workdir / "corpus" / "empty.txt").write_text("")
    config["data"]["source"] = {"kind": "files", "paths": ["corpus/empty.txt"]}
    return "results/pareto.csv"


def _missing_corpus(workdir: Path, config: dict[str, Any]) -> str:
    config["data"]["source"] = {"kind": "files", "paths": ["corpus/no-such-file.txt"]}
    return "results/pareto.csv"


def _budget_beyond_corpus(workdir: Path, config: dict[str, Any]) -> str:
    """One new run of a2 needs four epochs of train.bin, with repeats off for the study."""
    meta = json.loads(next((workdir / "results/data").glob("*/meta.json")).read_text())
    budget = 4 * meta["train_tokens"]
    config["training"]["allow_repeats"] = False
    arch(config, "a2")["token_budgets"] = [8192, budget]
    return f"results/runs/a2/{budget}/seed0/metrics.json"


RUN_TIME: dict[str, tuple[Callable[[Path, dict[str, Any]], str], list[str], str | None]] = {
    # name -> (change, returning the target to build; error substrings; the rule that fails,
    # or None where the mistake is caught when the config loads, before any job)
    "empty_corpus": (_empty_corpus, ["data.source.paths", "empty"], None),
    "missing_corpus_file": (_missing_corpus, ["data.source.paths", "no-such-file.txt"], None),
    "budget_beyond_corpus": (_budget_beyond_corpus,
                             ["training.allow_repeats", "token budget"], "train"),
}

# The outputs of the rule that fails (Snakemake deletes them before it runs the job).
TOKENIZER_OUTPUTS = ("results/data/tiny/tokenizer/tokenizer.json",
                     "results/data/tiny/tokenizer/tokenizer_config.json")


@pytest.fixture(scope="module")
def run_time_results(tiny_study_done, tmp_path_factory) -> dict[str, dict[str, Any]]:
    root = tmp_path_factory.mktemp("fuzz_run")

    def one(name: str) -> dict[str, Any]:
        workdir = copy_study(tiny_study_done, root / name)
        config = read_config(workdir)
        target = RUN_TIME[name][0](workdir, config)
        write_config(workdir, config)
        before = snapshot(workdir)
        proc = run_snakemake(workdir, "--cores", "1", target, timeout=600)
        logs = "".join(p.read_text(errors="replace") for p in (workdir / "logs").rglob("*.log")
                       if p.stat().st_mtime_ns > max(m for m, _ in before.values()))
        return {"proc": proc, "text": proc.stdout + proc.stderr, "logs": logs,
                "diff": snapshot_diff(before, snapshot(workdir)), "workdir": workdir,
                "target": target}

    names = list(RUN_TIME)
    return dict(zip(names, parallel([lambda n=n: one(n) for n in names], workers=2)))


@pytest.mark.parametrize("name", list(RUN_TIME))
def test_run_time_mistake_gives_a_clear_error_in_the_output(run_time_results, name):
    result = run_time_results[name]
    assert result["proc"].returncode != 0, result["text"][-2000:]
    _, needles, rule = RUN_TIME[name]
    if rule is None:  # refused at load time: one clear error, no DAG, no job
        assert "Building DAG of jobs" not in result["text"], result["text"][-3000:]
        assert not one_error(result["text"]), (one_error(result["text"]), result["text"])
    else:
        assert f"Error in rule {rule}" in result["text"], result["text"][-3000:]
    for needle in needles:
        assert needle in result["text"], (
            f"{name}: the output does not say {needle!r} (the log has it: "
            f"{needle in result['logs']}):\n{result['text'][-3000:]}")


@pytest.mark.parametrize("name", list(RUN_TIME))
def test_run_time_mistake_loses_nothing_but_the_failed_jobs_own_outputs(run_time_results, name):
    result = run_time_results[name]
    diff = result["diff"]
    assert diff["added"] == [] and diff["changed"] == [], diff
    assert set(diff["removed"]) <= set(TOKENIZER_OUTPUTS), diff
    assert not list((result["workdir"] / "results").rglob(".*.tmp*")), "temporary files left"
    run_dir = (result["workdir"] / result["target"]).parent
    if name == "budget_beyond_corpus" and run_dir.exists():
        assert not [p for p in run_dir.rglob("*") if p.is_file()], "the failed run left files"


@pytest.mark.parametrize("name", ["empty_corpus", "missing_corpus_file"])
def test_corpus_mistake_is_caught_before_any_job_runs(run_time_results, name):
    """An empty or missing `files` corpus is refused when the config loads, so no job starts
    and Snakemake deletes nothing (the tokenizer of the previous corpus stays)."""
    assert RUN_TIME[name][2] is None
    assert run_time_results[name]["diff"]["removed"] == []


# ---------------------------------------------------------------------------------------------
# A valid config must not fail in a job either
# ---------------------------------------------------------------------------------------------

def test_plan_accepts_an_explicit_max_position_that_fits_the_study(tiny_study_done,
                                                                   tmp_path):
    workdir = copy_study(tiny_study_done, tmp_path / "study")
    config = read_config(workdir)
    arch(config, "a1")["max_position_embeddings"] = 64  # the study's longest sequence
    write_config(workdir, config)
    dry = run_snakemake(workdir, "-n", "--cores", "1", "results/plan.csv")
    assert dry.returncode == 0, dry.stderr[-2000:]
    proc = run_snakemake(workdir, "--cores", "1", "results/plan.csv", timeout=300)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
