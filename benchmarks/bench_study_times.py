"""Where a finished study's job time went, per rule, and its training speed against a solo run.

    python benchmarks/bench_study_times.py STUDY_DIR [--config FILE] [--arch NAME] [--steps 40]

Why: a study's wall time is the sum of many small jobs sharing a few cores; this says which
rules take it (issue 26: evaluation was 28 % of the default study's job time) and how much
slower training runs inside the study than alone, i.e. what sharing the cores costs.

Reads STUDY_DIR/logs/benchmarks/**.tsv (every rule's Snakemake `benchmark:` file: `s` wall
seconds, `cpu_time` user + system seconds; a TSV with Snakemake's extended columns names its
rule, otherwise the path does) and prints, per rule, the jobs, their total wall and CPU seconds
and the rule's share of all job wall time. Then it trains one of the study's shapes (--arch,
default the one with the most runs) alone, in this process, for --steps steps with the
project's trainer, the study's training settings and threads, and prints the study runs'
tokens/s (their metrics.json) over that solo figure. Offline; the default study takes ~15 s.
"""
from __future__ import annotations

import argparse
import csv
import fnmatch
import json
import os
import statistics
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

BENCHMARKS = Path("logs/benchmarks")
# Benchmark files whose first folder is not their rule's name (see rules/*.smk `benchmark:`);
# any other file is logs/benchmarks/<rule>/... or logs/benchmarks/<rule>.tsv.
RULE_OF_PATTERN = (("data/*/tokenizer.tsv", "tokenizer"),
                   ("data/*/shard_*.tsv", "tokenize_shard"),
                   ("validation/train/*", "validation_train"),
                   ("validation/evaluate/*", "validation_evaluate"),
                   ("validation/throughput/*", "validation_throughput"),
                   ("optimum_check/train/*", "optimum_check_train"),
                   ("optimum_check/evaluate/*", "optimum_check_evaluate"))
EVALUATION_RULES = ("evaluate", "validation_evaluate", "optimum_check_evaluate")


@dataclass(frozen=True)
class RuleTime:
    """One rule's jobs and their summed wall and CPU seconds."""

    rule: str
    jobs: int
    wall_s: float
    cpu_s: float
    share: float  # of all jobs' wall seconds


def rule_of(relative: Path) -> str:
    """The rule that wrote a benchmark file, from its path under logs/benchmarks."""
    text = relative.as_posix()
    for pattern, rule in RULE_OF_PATTERN:
        if fnmatch.fnmatch(text, pattern):
            return rule
    return relative.parts[0] if len(relative.parts) > 1 else relative.stem


def read_benchmark(path: Path) -> tuple[str | None, float, float]:
    """(rule named in the file or None, wall s, CPU s) of one benchmark TSV, summed over its
    rows (a rule with `repeat` writes one row per run); an unmeasured CPU time ("NA") is 0."""
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t"))
    if not rows or "s" not in rows[0]:
        raise ValueError(f"{path} is not a Snakemake benchmark file (no 's' column)")

    def number(value: str | None) -> float:
        try:
            return float(value)
        except (TypeError, ValueError):
            return 0.0

    rule = rows[0].get("rule_name") or None
    return (rule, sum(number(r["s"]) for r in rows),
            sum(number(r.get("cpu_time")) for r in rows))


def rule_times(study: Path) -> list[RuleTime]:
    """Per rule: jobs, total wall and CPU seconds, share of the job wall time; largest first."""
    root = study / BENCHMARKS
    files = sorted(root.rglob("*.tsv"))
    if not files:
        raise SystemExit(f"no benchmark files under {root}: run the study first "
                         "(snakemake --cores 2 results/pareto.csv)")
    jobs: Counter[str] = Counter()
    wall: Counter[str] = Counter()
    cpu: Counter[str] = Counter()
    for path in files:
        named, seconds, cpu_seconds = read_benchmark(path)
        rule = named or rule_of(path.relative_to(root))
        jobs[rule] += 1
        wall[rule] += seconds
        cpu[rule] += cpu_seconds
    total = sum(wall.values()) or 1.0
    return sorted((RuleTime(r, jobs[r], wall[r], cpu[r], wall[r] / total) for r in jobs),
                  key=lambda t: (-t.wall_s, t.rule))


def study_speeds(study: Path) -> dict[str, list[float]]:
    """Training tokens/s of every study run (results/runs/**/metrics.json), by architecture."""
    speeds: dict[str, list[float]] = {}
    for path in sorted((study / "results" / "runs").rglob("metrics.json")):
        metrics = json.loads(path.read_text())
        if metrics.get("tokens_per_s"):
            speeds.setdefault(metrics["arch"], []).append(float(metrics["tokens_per_s"]))
    return speeds


def solo_speed(study: Path, config: Path, arch: str, steps: int) -> tuple[float, dict]:
    """Tokens/s of the project's trainer on `arch` alone: `steps` steps with the study's
    training settings for it (threads included); returns (tokens/s, those settings)."""
    from archscale.config import load_study
    from archscale.training.job import TrainJob
    from archscale.training.loop import run

    spec = load_study(config)
    settings = spec.training_settings(arch)
    seq_len = int(spec.config["data"]["seq_len"])
    data = study / "results" / "data" / spec.config["data"]["name"]
    arch_config = study / "results" / "architectures" / arch / "config.json"
    for needed in (data / "train.bin", data / "meta.json", data / "tokenizer", arch_config):
        if not needed.exists():
            raise SystemExit(f"{needed} is missing: is {study} a finished study of {config}?")
    batch_tokens = int(settings["global_batch_tokens"]) // seq_len * seq_len
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        job = TrainJob(arch_config=str(arch_config), train_bin=str(data / "train.bin"),
                       meta=str(data / "meta.json"), tokenizer_dir=str(data / "tokenizer"),
                       model_dir=str(out / "model"), log_csv=str(out / "train_log.csv"),
                       metrics_json=str(out / "metrics.json"), resume_dir=str(out / "resume"),
                       tokens=steps * batch_tokens, seed=0, seq_len=seq_len, settings=settings,
                       threads=int(settings["threads"]), label={"arch": arch})
        return float(run(job)["tokens_per_s"]), settings


def print_rule_times(times: list[RuleTime]) -> None:
    print(f"{'rule':24s} {'jobs':>5s} {'wall s':>9s} {'CPU s':>9s} {'share':>7s}")
    for t in times:
        print(f"{t.rule:24s} {t.jobs:5d} {t.wall_s:9.1f} {t.cpu_s:9.1f} {100 * t.share:6.1f} %")
    print(f"{'all jobs':24s} {sum(t.jobs for t in times):5d} "
          f"{sum(t.wall_s for t in times):9.1f} {sum(t.cpu_s for t in times):9.1f}")
    evaluation = [t for t in times if t.rule in EVALUATION_RULES]
    if evaluation:
        jobs = sum(t.jobs for t in evaluation)
        wall, cpu = sum(t.wall_s for t in evaluation), sum(t.cpu_s for t in evaluation)
        all_cpu = sum(t.cpu_s for t in times) or 1.0
        print(f"evaluation ({', '.join(t.rule for t in evaluation)}): {jobs} jobs, "
              f"{100 * sum(t.share for t in evaluation):.1f} % of job wall time, "
              f"{100 * cpu / all_cpu:.1f} % of job CPU time; {wall / jobs:.2f} s wall, "
              f"{cpu / jobs:.2f} s CPU per job")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study", type=Path, help="the study's working directory")
    parser.add_argument("--config", type=Path, default=None,
                        help="the study's config (default: STUDY/config.yaml)")
    parser.add_argument("--arch", default=None,
                        help="the shape to train alone (default: the one with the most runs)")
    parser.add_argument("--steps", type=int, default=40, help="solo training steps")
    parser.add_argument("--no-solo", action="store_true", help="skip the solo training run")
    args = parser.parse_args()
    study = args.study.resolve()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

    print(f"study {study}")
    print_rule_times(rule_times(study))
    speeds = study_speeds(study)
    if not speeds or args.no_solo:
        return
    arch = args.arch or max(sorted(speeds), key=lambda a: len(speeds[a]))
    if arch not in speeds:
        raise SystemExit(f"no run of {arch!r} under {study}/results/runs; "
                         f"the study trained {sorted(speeds)}")
    import logging

    logging.getLogger("archscale").setLevel(logging.WARNING)
    solo, settings = solo_speed(study, args.config or study / "config.yaml", arch, args.steps)
    runs = speeds[arch]
    median = statistics.median(runs)
    print(f"\ntraining {arch}: {len(runs)} study run(s), tokens/s median {median:.0f} "
          f"(min {min(runs):.0f}, max {max(runs):.0f})")
    print(f"alone, {args.steps} steps, {settings['threads']} thread(s), same settings: "
          f"{solo:.0f} tokens/s (load average {os.getloadavg()[0]:.2f} at the end)")
    print(f"ratio study/solo: {median / solo:.3f}")


if __name__ == "__main__":
    main()
