"""benchmarks/bench_study_times.py: per-rule job time of a study, read from the benchmark TSVs
Snakemake writes (a synthetic study folder here; the solo training run is not exercised)."""
from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from conftest import REPO

HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"


def bench_module():
    spec = importlib.util.spec_from_file_location(
        "bench_study_times", REPO / "benchmarks" / "bench_study_times.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def write_tsv(path: Path, *rows: tuple[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(HEADER + "".join(f"{s}\t0:00:01\t1\t1\t1\t1\t0\t0\t50\t{cpu}\n"
                                     for s, cpu in rows))


@pytest.fixture
def study(tmp_path: Path) -> Path:
    bench = tmp_path / "logs" / "benchmarks"
    write_tsv(bench / "train/a1/8192/seed0.tsv", ("6.0", "5.5"))
    write_tsv(bench / "train/a2/8192/seed0.tsv", ("4.0", "3.5"))
    write_tsv(bench / "evaluate/a1/8192/seed0.tsv", ("2.5", "2.0"))
    write_tsv(bench / "evaluate/a2/8192/seed0.tsv", ("1.5", "NA"))  # CPU time not collected
    write_tsv(bench / "data/stdlib/tokenizer.tsv", ("1.0", "1.5"))
    write_tsv(bench / "data/stdlib/shard_0.tsv", ("0.5", "0.4"), ("0.5", "0.4"))  # repeat: 2
    write_tsv(bench / "validation/evaluate/v1.tsv", ("2.0", "1.0"))
    write_tsv(bench / "collect_runs.tsv", ("1.0", "0.25"))
    extended = bench / "odd/place.tsv"  # --benchmark-extended files name their rule
    extended.parent.mkdir()
    extended.write_text("s\tcpu_time\trule_name\n1.0\t0.5\tthroughput\n")
    for arch, seed, rate in (("a1", 0, 1000.0), ("a1", 1, 1100.0), ("a2", 0, 900.0)):
        run = tmp_path / f"results/runs/{arch}/8192/seed{seed}"
        run.mkdir(parents=True)
        (run / "metrics.json").write_text(json.dumps({"arch": arch, "tokens_per_s": rate}))
    return tmp_path


def test_rule_times_sum_jobs_wall_and_cpu_per_rule(study):
    bench = bench_module()
    times = {t.rule: t for t in bench.rule_times(study)}
    assert set(times) == {"train", "evaluate", "tokenizer", "tokenize_shard",
                          "validation_evaluate", "collect_runs", "throughput"}
    total = 6 + 4 + 2.5 + 1.5 + 1 + 1 + 2 + 1 + 1
    expected = {"train": (2, 10.0, 9.0), "evaluate": (2, 4.0, 2.0), "tokenizer": (1, 1.0, 1.5),
                "tokenize_shard": (1, 1.0, 0.8), "validation_evaluate": (1, 2.0, 1.0),
                "collect_runs": (1, 1.0, 0.25), "throughput": (1, 1.0, 0.5)}
    for rule, (jobs, wall, cpu) in expected.items():
        t = times[rule]
        assert (t.jobs, t.wall_s, t.cpu_s) == (jobs, pytest.approx(wall), pytest.approx(cpu))
        assert t.share == pytest.approx(wall / total)
    assert sum(t.share for t in times.values()) == pytest.approx(1.0)
    assert [t.rule for t in bench.rule_times(study)][:2] == ["train", "evaluate"]


def test_study_speeds_and_missing_benchmarks(study, tmp_path_factory):
    bench = bench_module()
    assert bench.study_speeds(study) == {"a1": [1000.0, 1100.0], "a2": [900.0]}
    with pytest.raises(SystemExit, match="no benchmark files"):
        bench.rule_times(tmp_path_factory.mktemp("empty"))
    bad = study / "logs/benchmarks/train/bad.tsv"
    bad.write_text("wall\n1\n")
    with pytest.raises(ValueError, match="not a Snakemake benchmark file"):
        bench.rule_times(study)
