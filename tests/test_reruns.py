"""Rebuild exactly what changed: proven with the real `snakemake -n` on copies of the finished
tiny study (issue 8, part 1). docs/reruns.md is the table these tests check.

Every scenario copies the finished study (results/ and .snakemake/ metadata, mtimes kept),
changes one thing, dry-runs the default target (`all`: pareto, recommendations, fit quality,
plan) and compares the scheduled jobs with the jobs that change must rerun: not one more, not
one fewer. The dry runs of all scenarios run once, concurrently (each snakemake start spends
most of its ~10 s waiting, not computing), and each test then checks its own scenario.

Helpers here (copy_study, snapshot, dry_run, complete_study, ...) are shared with the other
issue-8 test modules.
"""
from __future__ import annotations

import hashlib
import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import pytest
import yaml

from conftest import REPO, run_snakemake, shared_build, tiny_config, write_workflow

# ---------------------------------------------------------------------------------------------
# Shared helpers
# ---------------------------------------------------------------------------------------------

DRY_RUN_WORKERS = 10  # each snakemake start mostly waits (see module docstring)
AGGREGATES = ("architectures_table", "collect_runs", "throughput_table", "fit_chinchilla",
              "fit_conditional", "fit_quality", "fit_forms", "search", "verdicts", "plan",
              "proposals")


def copy_study(src: Path, dst: Path) -> Path:
    """Copy a study folder (results/, .snakemake/ metadata, logs) keeping every mtime."""
    shutil.copytree(src, dst, copy_function=shutil.copy2, symlinks=True)
    return dst


def read_config(workdir: Path) -> dict[str, Any]:
    return yaml.safe_load((workdir / "config.yaml").read_text())


def write_config(workdir: Path, config: dict[str, Any]) -> None:
    (workdir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def snapshot(workdir: Path, under: str = "results") -> dict[str, tuple[int, str]]:
    """{relative path: (mtime_ns, sha256)} of every file under `under`."""
    root = workdir / under
    return {str(p.relative_to(workdir)): (p.stat().st_mtime_ns, sha256(p))
            for p in sorted(root.rglob("*")) if p.is_file()}


def snapshot_diff(before: dict, after: dict) -> dict[str, list[str]]:
    """What changed between two snapshots, by kind (empty lists when nothing did)."""
    return {"removed": sorted(set(before) - set(after)),
            "added": sorted(set(after) - set(before)),
            "changed": sorted(k for k in set(before) & set(after) if before[k] != after[k])}


def job_id(rule: str, **wildcards: Any) -> str:
    """A readable, order-free name for one job: train[arch=a1,seed=0,tokens=8192]."""
    if not wildcards:
        return rule
    return f"{rule}[{','.join(f'{k}={wildcards[k]}' for k in sorted(wildcards))}]"


@dataclass
class DryRun:
    """A parsed `snakemake -n`: the jobs it lists (with their reason) and its job-stats table."""

    returncode: int
    text: str
    jobs: dict[str, str] = field(default_factory=dict)      # job_id -> reason
    stats: dict[str, int] = field(default_factory=dict)     # rule -> count (Job stats table)

    @property
    def nothing_to_do(self) -> bool:
        return "Nothing to be done" in self.text and not self.jobs

    def scheduled(self, ignore: Iterable[str] = ("all",)) -> set[str]:
        skip = set(ignore)
        return {j for j in self.jobs if j.split("[")[0] not in skip}

    def rules(self) -> set[str]:
        return {j.split("[")[0] for j in self.scheduled()}

    def reason(self, job: str) -> str:
        return self.jobs[job]


_RULE_LINE = re.compile(r"^(?:local)?(?:rule|checkpoint) (\w+):\s*$")


def parse_dry_run(proc: subprocess.CompletedProcess) -> DryRun:
    """Parse the job blocks (rule, wildcards, reason) and the first Job stats table."""
    text = proc.stdout + proc.stderr
    run = DryRun(proc.returncode, text)
    blocks: list[dict[str, str]] = []
    current: dict[str, str] | None = None
    for line in text.splitlines():
        head = _RULE_LINE.match(line.strip())
        if head:
            current = {"rule": head.group(1), "wildcards": "", "reason": ""}
            blocks.append(current)
            continue
        if current is None:
            continue
        stripped = line.strip()
        if not stripped or stripped.startswith("Job stats") or stripped.startswith("["):
            current = None
        elif stripped.startswith("wildcards:"):
            current["wildcards"] = stripped.split(":", 1)[1].strip()
        elif stripped.startswith("reason:"):
            current["reason"] = stripped.split(":", 1)[1].strip()
    for block in blocks:
        wildcards = dict(part.strip().split("=", 1) for part in block["wildcards"].split(",")
                         if "=" in part)
        run.jobs[job_id(block["rule"], **wildcards)] = block["reason"]
    stats = re.search(r"Job stats:\njob\s+count\n[- ]+\n(.*?)\n\s*total\s+(\d+)", text, re.S)
    if stats:
        for row in stats.group(1).splitlines():
            name, count = row.split()
            run.stats[name] = int(count)
    return run


def dry_run(workdir: Path, *targets: str) -> DryRun:
    """`snakemake -n` of the targets (default: the `all` rule); the job table is cross-checked."""
    proc = run_snakemake(workdir, "-n", "--cores", "2", *targets, timeout=300)
    run = parse_dry_run(proc)
    assert proc.returncode == 0, f"dry run failed in {workdir}:\n{run.text[-6000:]}"
    counted = {}
    for job in run.jobs:
        counted[job.split("[")[0]] = counted.get(job.split("[")[0], 0) + 1
    assert counted == run.stats, f"parsed job blocks {counted} != Job stats {run.stats}"
    return run


def parallel(calls: list[Callable[[], Any]], workers: int = DRY_RUN_WORKERS) -> list[Any]:
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return [f.result() for f in [pool.submit(c) for c in calls]]


def complete_study(tiny_study_done: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the tiny study with the default target `all` built too (fit quality, plan);
    built once per session (for all xdist workers) and shared, read-only, by the modules that
    need it."""
    def build(folder: Path) -> None:
        workdir = copy_study(tiny_study_done, folder / "study")
        run_snakemake(workdir, "--cores", "2", check=True, timeout=900)

    return shared_build(tmp_path_factory, "complete", build) / "study"


# ---------------------------------------------------------------------------------------------
# What each change must schedule, from the config alone
# ---------------------------------------------------------------------------------------------

def runs_of(config: dict[str, Any], arch: str | None = None) -> list[tuple[str, int, int]]:
    """(architecture, token budget, seed) of every run (of one architecture)."""
    seeds_default = config.get("training", {}).get("seeds", [0])
    out = []
    for spec in config["architectures"]:
        if arch is not None and spec["name"] != arch:
            continue
        seeds = (spec.get("training") or {}).get("seeds", seeds_default)
        for tokens in spec.get("token_budgets") or config["token_budgets"]:
            out += [(spec["name"], int(tokens), int(s)) for s in seeds]
    return out


def run_jobs(config: dict[str, Any], rules: Iterable[str], arch: str | None = None) -> set[str]:
    return {job_id(rule, arch=a, tokens=t, seed=s)
            for a, t, s in runs_of(config, arch) for rule in rules}


def throughput_jobs(config: dict[str, Any], arch: str | None = None) -> set[str]:
    engines = config.get("throughput", {}).get("engines", ["torch"])
    names = [a["name"] for a in config["architectures"] if arch in (None, a["name"])]
    return {job_id("throughput", arch=a, engine=e) for a in names for e in engines}


def own_jobs(config: dict[str, Any], arch: str) -> set[str]:
    """One architecture's jobs: config export, train + evaluate per run, throughput per engine."""
    return ({job_id("architecture_config", arch=arch)}
            | run_jobs(config, ("train", "evaluate"), arch) | throughput_jobs(config, arch))


DATA_JOBS = {"tokenizer", "tokenize_shard[shard=0]", "tokenize_shard[shard=1]", "merge_shards"}
LOSS_READERS = {"collect_runs", "fit_chinchilla", "fit_conditional", "fit_quality", "fit_forms",
                "search"}


# ---------------------------------------------------------------------------------------------
# The scenarios: a change to a copy of the finished study, and the jobs it must schedule
# ---------------------------------------------------------------------------------------------

def with_downstream(jobs: set[str]) -> set[str]:
    """`jobs` with what follows them without a scenario naming it, rerun exactly when what
    they read does: the verdicts after the form comparison, the search or the throughput
    table; the report's figures and tables (rules/report.smk): the training curves after any
    training job, the throughput figure after the throughput table, the data summary after the
    merged corpus, the tables after the search, collect_runs or the fit quality."""
    out = set(jobs)
    if any(job.startswith("train[") for job in jobs):
        out.add("training_curves")
    if "throughput_table" in jobs:
        out.add("throughput_plot")
    if "merge_shards" in jobs:
        out.add("data_summary")
    # the verdicts read the form comparison, the recommendations and the throughput table
    if out & {"fit_forms", "search", "throughput_table"}:
        out.add("verdicts")
    # the proposals read runs.csv, the conditional law and the evaluate jobs' durations
    if out & {"collect_runs", "fit_conditional"}:
        out.add("proposals")
    # the report's tables (rules/report.smk) read the search's outputs, runs.csv and quality.csv
    if out & {"search", "collect_runs", "fit_quality"}:
        out.add("report_tables")
    return out


@dataclass
class Scenario:
    change: Callable[[Path, dict[str, Any]], None]  # edits the copy (config and/or files)
    expected: Callable[[dict[str, Any]], set[str]]  # the jobs, from the changed config
    must_not: set[str] = field(default_factory=set)  # rules that must not appear (for subsets)
    with_src: bool = False                         # put a copy of src/ in the study (code edits)


def _set(path: str, value: Any, **siblings: Any) -> Callable[[Path, dict[str, Any]], None]:
    """A change that sets one dotted config field (and fields beside it)."""
    def change(workdir: Path, config: dict[str, Any]) -> None:
        node = config
        *parents, last = path.split(".")
        for key in parents:
            node = node.setdefault(key, {})
        node[last] = value
        node.update(siblings)
        write_config(workdir, config)
    return change


def _speed_knobs(workdir: Path, config: dict[str, Any]) -> None:
    """Settings that change how fast a result is made, or its label, never the result."""
    config["training"].update(threads=2, checkpoint_every_steps=3, compile=True)
    config["evaluation"]["threads"] = 2
    config["study"] = "renamed"
    write_config(workdir, config)


def _arch(name: str, **fields: Any) -> Callable[[Path, dict[str, Any]], None]:
    def change(workdir: Path, config: dict[str, Any]) -> None:
        spec = next(a for a in config["architectures"] if a["name"] == name)
        spec.update(fields)
        write_config(workdir, config)
    return change


def _add_arch(workdir: Path, config: dict[str, Any]) -> None:
    config["architectures"].append({"name": "d1", "d_model": 56, "n_layers": 2, "n_heads": 2,
                                    "n_kv_heads": 1, "head_dim": 32, "ffn_dim": 128})
    write_config(workdir, config)


def _same_meaning_resaved(workdir: Path, config: dict[str, Any]) -> None:
    """The same config re-saved with its keys sorted and whole numbers written as floats."""
    config["training"]["global_batch_tokens"] = float(config["training"]["global_batch_tokens"])
    config["architectures"] = [dict(sorted(spec.items(), reverse=True))
                               for spec in config["architectures"]]
    (workdir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=True))


def _touch_config(workdir: Path, config: dict[str, Any]) -> None:
    (workdir / "config.yaml").touch()


def _nothing(workdir: Path, config: dict[str, Any]) -> None:
    pass


def _edit_module(relpath: str) -> Callable[[Path, dict[str, Any]], None]:
    """Append a comment to one module of the study's own copy of the package (src/)."""
    def change(workdir: Path, config: dict[str, Any]) -> None:
        path = workdir / "src" / "archscale" / relpath
        path.write_text(path.read_text() + "\n# an edit that must rerun this module's stage\n")
    return change


def _none(config: dict[str, Any]) -> set[str]:
    return set()


SCENARIOS: dict[str, Scenario] = {
    "nothing_changed": Scenario(_nothing, _none),
    "touch_config": Scenario(_touch_config, _none),
    # knobs that change speed or labels, never results
    # ... except the proposals' device-hours: a job's threads are the devices it occupies
    "speed_knobs": Scenario(_speed_knobs, lambda c: {"proposals"}),
    # issue 15: params are canonical (sorted keys, whole floats as ints), and micro_batch_size
    # only splits the same global batch (gradient accumulation)
    "same_meaning_resaved": Scenario(_same_meaning_resaved, _none),
    "micro_batch_size": Scenario(_set("training.micro_batch_size", 4), _none),
    "architectures_reordered": Scenario(
        _set("architectures", list(reversed(tiny_config()["architectures"]))),
        lambda c: {"architectures_table", "training_curves"} | LOSS_READERS | {"plan"}),
    "add_architecture": Scenario(
        _add_arch, lambda c: own_jobs(c, "d1") | set(AGGREGATES)),
    "change_architecture_field": Scenario(
        _arch("a2", ffn_dim=96), lambda c: own_jobs(c, "a2") | set(AGGREGATES)),
    "throughput_output_len": Scenario(
        _set("throughput.output_len", 12),
        lambda c: throughput_jobs(c) | {"throughput_table", "search"}),
    "throughput_workload_longer_than_training": Scenario(  # 64 + 32 > data.seq_len 64
        _set("throughput.input_len", 64, output_len=32),
        lambda c: throughput_jobs(c) | {"throughput_table", "search"}),
    "throughput_served_setting": Scenario(
        # a vLLM/SGLang-only knob: no torch measurement reads it; the search's roofline does
        _set("throughput.gpu_memory_utilization", 0.8), lambda c: {"search"}),
    "throughput_add_engine": Scenario(
        _set("throughput.engines", ["torch", "vllm"]),
        lambda c: {j for j in throughput_jobs(c) if "engine=vllm" in j}
        | {"throughput_table", "search", "plan"}),
    "throughput_gpu": Scenario(
        _set("throughput.gpu", "H100"), lambda c: {"throughput_table", "search"}),
    "training_lr": Scenario(
        _set("training.lr", 0.02),
        lambda c: run_jobs(c, ("train", "evaluate")) | LOSS_READERS),
    "architecture_training_override": Scenario(
        _arch("b2", training={"lr": 0.02}),
        lambda c: run_jobs(c, ("train", "evaluate"), "b2") | LOSS_READERS),
    "new_seed": Scenario(
        _set("training.seeds", [0, 1]),
        lambda c: {j for j in run_jobs(c, ("train", "evaluate")) if "seed=1" in j}
        | LOSS_READERS | {"plan"}),
    "new_token_budget": Scenario(
        _set("token_budgets", [8192, 4096]),
        lambda c: {j for j in run_jobs(c, ("train", "evaluate")) if "tokens=4096" in j}
        | LOSS_READERS | {"plan"}),
    "evaluation_val_tokens": Scenario(
        _set("evaluation.val_tokens", 2048),
        lambda c: run_jobs(c, ("evaluate",)) | LOSS_READERS),
    "corpus_mc_examples": Scenario(
        _set("evaluation.corpus_mc.n_examples", 12),
        lambda c: {"corpus_mc_task"} | run_jobs(c, ("evaluate",)) | LOSS_READERS),
    "corpus_mc_longer_than_training": Scenario(  # 64 + 8 > data.seq_len 64
        _set("evaluation.corpus_mc.context_tokens", 64),
        lambda c: {"corpus_mc_task"} | run_jobs(c, ("evaluate",)) | LOSS_READERS),
    "fit_bootstrap": Scenario(
        _set("fit.bootstrap", 6),
        lambda c: {"fit_chinchilla", "fit_conditional", "fit_forms", "search"}),
    "search_step": Scenario(_set("search.d_model_step", 16), lambda c: {"search"}),
    "data_val_fraction": Scenario(
        _set("data.val_fraction", 0.12),
        lambda c: (DATA_JOBS - {"tokenizer"}) | {"corpus_mc_task"}
        | run_jobs(c, ("train", "evaluate")) | LOSS_READERS),
    "data_seq_len": Scenario(
        _set("data.seq_len", 80),
        lambda c: {"merge_shards", "corpus_mc_task", "plan"}
        | run_jobs(c, ("train", "evaluate")) | LOSS_READERS,
        must_not={"tokenizer", "tokenize_shard"}),
    # code: the study gets its own copy of the package in src/ (rules/common.smk puts the
    # workflow's src/ first on sys.path), so editing it changes code_version() in the DAG
    "code_unchanged_copy": Scenario(_nothing, _none, with_src=True),
    "code_edit_data": Scenario(
        _edit_module("data/corpus.py"),
        lambda c: DATA_JOBS | {"corpus_mc_task", "plan"} | run_jobs(c, ("train", "evaluate"))
        | LOSS_READERS, with_src=True),  # plan_study reads data.token_dtype
    "code_edit_fit": Scenario(
        _edit_module("fit/quality.py"),
        lambda c: {"fit_chinchilla", "fit_conditional", "fit_quality", "fit_forms", "verdicts",
                   "search"}, with_src=True),
    "code_edit_throughput_model": Scenario(
        _edit_module("throughput/model.py"), lambda c: {"throughput_table", "search"},
        with_src=True),
    "code_edit_torch_engine": Scenario(
        _edit_module("throughput/engines/torch.py"),
        lambda c: throughput_jobs(c) | {"throughput_table", "search"}, with_src=True),
    "code_edit_search_run": Scenario(
        _edit_module("search/study.py"), lambda c: {"search"}, with_src=True),
    # the proposals price runs with costs.py's fitted cost model
    "code_edit_plan": Scenario(_edit_module("costs.py"), lambda c: {"plan", "proposals"},
                               with_src=True),
    "code_edit_cli_only": Scenario(_edit_module("cli/search.py"), _none, with_src=True),
}


@pytest.fixture(scope="module")
def dry_runs(tiny_study_done, tmp_path_factory) -> dict[str, tuple[DryRun, dict[str, Any]]]:
    """Every scenario's dry run, on its own copy of the complete study, run concurrently."""
    base = complete_study(tiny_study_done, tmp_path_factory)
    root = tmp_path_factory.mktemp("reruns")

    def one(name: str) -> tuple[DryRun, dict[str, Any]]:
        scenario = SCENARIOS[name]
        workdir = copy_study(base, root / name)
        if scenario.with_src:
            shutil.copytree(REPO / "src", workdir / "src",
                            ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"),
                            dirs_exist_ok=True)
        config = read_config(workdir)
        scenario.change(workdir, config)
        return dry_run(workdir), read_config(workdir)

    names = list(SCENARIOS)
    return dict(zip(names, parallel([lambda n=n: one(n) for n in names])))


def check(dry_runs, name: str) -> DryRun:
    """Assert the scenario scheduled exactly its expected jobs. Rule `plan` is left out here
    and checked across all scenarios by test_plan_reruns_exactly_when_its_inputs_change."""
    run, config = dry_runs[name]
    expected = with_downstream(SCENARIOS[name].expected(config)) - {"plan"}
    scheduled = run.scheduled() - {"plan"}
    assert scheduled == expected, (
        f"{name}: unexpected {sorted(scheduled - expected)}, "
        f"missing {sorted(expected - scheduled)}")
    if not expected and "plan" not in run.scheduled():
        assert run.nothing_to_do, run.text[-3000:]
    return run


def plan_scheduled(dry_runs, name: str) -> bool:
    return "plan" in dry_runs[name][0].scheduled()


def plan_mismatches(dry_runs, names) -> dict[str, bool]:
    """Scenarios where plan is scheduled (True) or not (False) against the expectation."""
    return {name: plan_scheduled(dry_runs, name) for name in names
            if plan_scheduled(dry_runs, name) != (
                "plan" in SCENARIOS[name].expected(dry_runs[name][1]))}


# ---------------------------------------------------------------------------------------------
# The tests
# ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["nothing_changed", "touch_config",
                                  "same_meaning_resaved", "micro_batch_size"])
@pytest.mark.workflow
def test_nothing_reruns_without_a_result_changing_change(dry_runs, name):
    check(dry_runs, name)


@pytest.mark.workflow
def test_speed_knobs_rerun_only_the_proposals_device_hours(dry_runs):
    """Threads change how fast runs train, not their results; only the proposals, which price
    runs in device-hours (a thread is a device on a CPU study), are redone."""
    check(dry_runs, "speed_knobs")


@pytest.mark.workflow
def test_reordering_architectures_reruns_only_what_lists_them(dry_runs):
    run = check(dry_runs, "architectures_reordered")
    assert not run.rules() & {"train", "evaluate", "throughput", "architecture_config"}


@pytest.mark.workflow
def test_adding_an_architecture_schedules_only_its_jobs_and_the_aggregates(dry_runs):
    run = check(dry_runs, "add_architecture")
    assert "Missing output files" in run.reason("train[arch=d1,seed=0,tokens=8192]")
    assert not run.rules() & {"tokenizer", "tokenize_shard", "merge_shards", "corpus_mc_task"}


@pytest.mark.workflow
def test_changing_an_architecture_field_reruns_only_that_architecture(dry_runs):
    run = check(dry_runs, "change_architecture_field")
    assert "Params have changed" in run.reason("architecture_config[arch=a2]")
    # snakemake names one reason per job: the downstream jobs show the rewritten config.json
    assert "results/architectures/a2/config.json" in run.reason("train[arch=a2,seed=0,tokens=8192]")


@pytest.mark.workflow
def test_throughput_setting_reruns_only_throughput_and_its_readers(dry_runs):
    run = check(dry_runs, "throughput_output_len")
    assert all("Params have changed" in run.reason(j) for j in run.scheduled()
               if j.startswith("throughput["))


@pytest.mark.workflow
def test_longer_throughput_workload_does_not_retrain(dry_runs):
    """config.json's max_position_embeddings follows data.seq_len only; the engines raise it in
    their own copy, so a workload longer than training rewrites no config.json."""
    run = check(dry_runs, "throughput_workload_longer_than_training")
    assert "architecture_config" not in run.rules()


@pytest.mark.workflow
def test_longer_evaluation_examples_do_not_retrain(dry_runs):
    check(dry_runs, "corpus_mc_longer_than_training")


@pytest.mark.workflow
def test_throughput_gpu_reruns_only_the_model_not_measurements(dry_runs):
    run = check(dry_runs, "throughput_gpu")
    assert "Params have changed" in run.reason("throughput_table")


@pytest.mark.workflow
def test_training_hyperparameter_reruns_training_evaluation_and_readers(dry_runs):
    run = check(dry_runs, "training_lr")
    for job in run_jobs(dry_runs["training_lr"][1], ("train",)):
        assert "Params have changed" in run.reason(job)
    assert not run.rules() & {"tokenizer", "tokenize_shard", "merge_shards", "throughput",
                              "throughput_table", "architecture_config", "corpus_mc_task"}


@pytest.mark.workflow
def test_per_architecture_training_override_reruns_only_its_runs(dry_runs):
    check(dry_runs, "architecture_training_override")


@pytest.mark.workflow
def test_new_seed_or_budget_trains_only_the_new_runs(dry_runs):
    check(dry_runs, "new_seed")
    check(dry_runs, "new_token_budget")


@pytest.mark.workflow
def test_evaluation_settings_rerun_evaluation_not_training(dry_runs):
    check(dry_runs, "evaluation_val_tokens")
    check(dry_runs, "corpus_mc_examples")


@pytest.mark.workflow
def test_fit_setting_reruns_only_the_fits_that_read_it(dry_runs):
    check(dry_runs, "fit_bootstrap")


@pytest.mark.workflow
def test_search_setting_reruns_only_search(dry_runs):
    check(dry_runs, "search_step")


@pytest.mark.workflow
def test_data_split_does_not_retrain_the_tokenizer(dry_runs):
    check(dry_runs, "data_val_fraction")


@pytest.mark.workflow
def test_sequence_length_does_not_retokenize(dry_runs):
    run = check(dry_runs, "data_seq_len")   # nor rewrite config.json: its context is 2048
    assert "merge_shards" in run.scheduled()
    assert not run.rules() & SCENARIOS["data_seq_len"].must_not, sorted(run.rules())


@pytest.mark.workflow
def test_served_engine_setting_never_reruns_torch_measurements(dry_runs):
    check(dry_runs, "throughput_served_setting")


@pytest.mark.workflow
def test_adding_an_engine_measures_only_it(dry_runs):
    check(dry_runs, "throughput_add_engine")


@pytest.mark.workflow
def test_plan_reruns_exactly_when_its_inputs_change(dry_runs):
    assert plan_mismatches(dry_runs, SCENARIOS) == {}


@pytest.mark.workflow
def test_plan_reruns_exactly_when_the_config_fields_it_reads_change(dry_runs):
    config_scenarios = [n for n in SCENARIOS if not SCENARIOS[n].with_src]
    assert plan_mismatches(dry_runs, config_scenarios) == {}


@pytest.mark.workflow
def test_plan_reruns_when_architectures_or_runs_change(dry_runs):
    for name in ("add_architecture", "change_architecture_field", "new_seed"):
        assert plan_scheduled(dry_runs, name), name


@pytest.mark.workflow
def test_adding_an_engine_measures_only_the_new_engine(dry_runs):
    run, config = dry_runs["throughput_add_engine"]
    measured = {j for j in run.scheduled() if j.startswith("throughput[")}
    assert measured == {j for j in throughput_jobs(config) if "engine=vllm" in j}
    assert not run.rules() & {"train", "evaluate", "architecture_config", "tokenizer"}


@pytest.mark.workflow
def test_data_split_never_reruns_configs_or_throughput(dry_runs):
    run, _ = dry_runs["data_val_fraction"]
    assert not run.rules() & {"architecture_config", "architectures_table", "throughput",
                              "throughput_table"}
    assert "shards/0.train.bin" in run.reason("merge_shards")


@pytest.mark.parametrize("name", ["code_unchanged_copy", "code_edit_data", "code_edit_fit",
                                  "code_edit_throughput_model", "code_edit_torch_engine",
                                  "code_edit_cli_only"])
@pytest.mark.workflow
def test_editing_a_stage_module_reruns_that_stage(dry_runs, name):
    run = check(dry_runs, name)
    first = {"code_edit_data": "tokenizer", "code_edit_fit": "fit_quality",
             "code_edit_throughput_model": "throughput_table",
             "code_edit_torch_engine": "throughput[arch=a1,engine=torch]"}.get(name)
    if first:
        assert "Params have changed" in run.reason(first)


@pytest.mark.workflow
def test_editing_search_run_reruns_search(dry_runs):
    check(dry_runs, "code_edit_search_run")


@pytest.mark.workflow
def test_editing_plan_reruns_plan(dry_runs):
    assert plan_scheduled(dry_runs, "code_edit_plan")


# ---------------------------------------------------------------------------------------------
# That every rule's library code is hashed by it or by an ancestor (code_version itself, and
# each script against its own stage: tests/test_code_versions.py; every setting against the
# stages it declares: tests/test_settings.py)
# ---------------------------------------------------------------------------------------------

def _rule_blocks() -> dict[str, str]:
    """rule name -> its text, from rules/*.smk."""
    blocks = {}
    for smk in sorted((REPO / "rules").glob("*.smk")):
        parts = re.split(r"^(?:rule|checkpoint) (\w+):\n", smk.read_text(), flags=re.M)
        for name, body in zip(parts[1::2], parts[2::2]):
            blocks[name] = re.split(r"^\S", body, maxsplit=1, flags=re.M)[0]
    return blocks


def _stage_of(body: str) -> str | None:
    match = re.search(r"code=code_version\(\"(\w+)\"\)", body)
    return match.group(1) if match else None


def _closure(source: str) -> set[str]:
    """The files of the archscale modules a rule's script runs: its imports followed the way
    code_version follows them, bookkeeping left out (archscale.workflow.code_versions)."""
    from archscale.workflow.code_versions import (BOOKKEEPING_IMPORTS, PACKAGE_DIR,
                                                  is_bookkeeping)
    from archscale.workflow.imports import PackageReader, archscale_imports, enclosing_packages

    reader = PackageReader(PACKAGE_DIR)
    todo = sorted(archscale_imports(source, "script", False, reader.names, dynamic=True))
    seen: set[str] = set()
    while todo:
        module = todo.pop()
        if module in seen or is_bookkeeping(module):
            continue
        seen.add(module)
        todo += enclosing_packages(module)
        todo += [m for m in reader.read(module).imports if (module, m) not in BOOKKEEPING_IMPORTS]
    return {reader.files[m].relative_to(PACKAGE_DIR).as_posix() for m in seen
            if reader.read(m).runs_code}


def _rule_source(body: str) -> str:
    script = re.search(r"script:\s*\n\s*\"\.\./(scripts/[\w.]+)\"", body)
    if script:
        return (REPO / script.group(1)).read_text()
    run = re.search(r"run:\n(.*)", body, re.S)
    return "\n".join(line.strip() for line in run.group(1).splitlines()) if run else ""


def _ancestors(rulegraph: str) -> dict[str, set[str]]:
    labels = dict(re.findall(r"\t(\d+)\[label = \"(\w+)\"", rulegraph))
    parents: dict[str, set[str]] = {name: set() for name in labels.values()}
    for src, dst in re.findall(r"\t(\d+) -> (\d+)", rulegraph):
        parents[labels[dst]].add(labels[src])
    out = {}
    for rule in parents:
        seen, todo = set(), list(parents[rule])
        while todo:
            r = todo.pop()
            if r not in seen:
                seen.add(r)
                todo.extend(parents[r])
        out[rule] = seen
    return out


# Rules that only enter the DAG once the validation checkpoint has run (so --rulegraph cannot
# show them): each reads what its study twin reads, plus the checkpoint's config.json files.
AFTER_CHECKPOINT = {"validation_config": "architecture_config", "validation_train": "train",
                    "validation_evaluate": "evaluate", "validation_throughput": "throughput"}
#: `use rule ... with:` twins that are in the rule graph from the start: their code is their
#: study twin's.
TWINS = {"lr_check_train": "train", "lr_check_evaluate": "evaluate"}


@pytest.fixture(scope="module")
def rule_coverage(tmp_path_factory) -> dict[str, set[str]]:
    """rule -> the archscale modules it runs that neither its code param nor any upstream
    rule's code param hashes (an upstream rerun rewrites this rule's inputs, so it reruns)."""
    from archscale.workflow.code_versions import STAGE_MODULES

    config = tiny_config()
    config["search"]["validation"] = {"enabled": True}   # its checkpoint is in the graph too
    config["search"]["gqa_search"] = {"enabled": True}   # and the GQA search's
    config["optimum_check"] = {"enabled": True}          # and the optimum check's
    config["loop"] = {"enabled": True}                    # and the closed loop's
    config["lr_check"] = {"enabled": True, "architectures": ["a1"]}  # and the lr check's
    workdir = write_workflow(tmp_path_factory.mktemp("rulegraph") / "study", config)
    graph = run_snakemake(workdir, "--rulegraph", check=True).stdout
    ancestors = _ancestors(graph)
    for rule, twin in AFTER_CHECKPOINT.items():
        ancestors[rule] = ancestors[twin] | {"validation_plan"} | ancestors["validation_plan"]
    # gqa_step enters once gqa_plan has run: it reads the plan and the outputs of the validation
    # rules, which hash what their study twins hash
    ancestors["gqa_step"] = ({"gqa_plan"} | ancestors["gqa_plan"]
                             | {r for twin in AFTER_CHECKPOINT.values()
                                for r in {twin} | ancestors[twin]})
    # loop_runs enters once a loop round has run: it reads the round's plan and the loop's
    # runs, which the study's rules train, evaluate and describe (use rule ... with:)
    ancestors["loop_runs"] = ({"loop_round"} | ancestors["loop_round"]
                              | {r for twin in ("architecture_config", "train", "evaluate")
                                 for r in {twin} | ancestors[twin]})
    blocks = _rule_blocks()
    assert set(blocks) <= set(ancestors) | {"all"}, set(blocks) - set(ancestors)
    uncovered = {}
    for rule, body in blocks.items():
        used = _closure(_rule_source(body))
        covered: set[str] = set()
        for r in {rule} | ancestors.get(rule, set()):
            stage = _stage_of(blocks[TWINS.get(r, r)])
            if stage:
                covered |= set(STAGE_MODULES[stage])
        uncovered[rule] = used - covered
    return uncovered


@pytest.mark.parametrize("rule", sorted(set(_rule_blocks())))
@pytest.mark.workflow
def test_every_module_a_rule_runs_is_hashed_by_it_or_upstream(rule_coverage, rule):
    assert rule_coverage[rule] == set(), (
        f"rule {rule} runs {sorted(rule_coverage[rule])}, which no code_version() param of it "
        "or of an upstream rule hashes: editing them reruns nothing")


def test_rules_that_run_library_code_pass_a_code_version_param():
    """Rules with their own stage pass code_version(stage); the rest are aggregates whose
    inputs are rewritten whenever their code's stage reruns (checked above)."""
    blocks = _rule_blocks()
    without = {rule for rule, body in blocks.items() if _stage_of(body) is None}
    assert without <= {"architectures_table", "collect_runs", "plan"}, without
    for rule, body in blocks.items():
        stage = _stage_of(body)
        if stage:
            from archscale.workflow.code_versions import STAGE_MODULES
            assert stage in STAGE_MODULES, f"rule {rule}: unknown stage {stage!r}"
