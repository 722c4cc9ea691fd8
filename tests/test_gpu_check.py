"""benchmarks/gpu_check.sh --dry: the prepared GPU check runs here, on CPU, in seconds, without
the packages the lent H200 lacks (issue 16, part 4); and its time box keeps a late part's work.

The dry run is the script the H200 will run, with tiny shapes: if it passes here, the GPU run
fails only on what needs a GPU.
"""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

from gpu_check_parts import runner  # noqa: E402  (imports nothing that installs the blocker)
from gpu_check_parts.blocker import BLOCKED, MESSAGE  # noqa: E402

PARTS = ("train_mfu", "fsdp_memory", "parallel_loss", "throughput", "calibration")


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("gpu_check")
    proc = subprocess.run(["bash", "benchmarks/gpu_check.sh", "--dry", "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return {"out": out, "stdout": proc.stdout,
            "results": json.loads((out / "gpu_check.json").read_text())}


def test_dry_run_is_marked_dry(dry_run):
    # its time is printed by the script itself ("done in N s"), not asserted: about 25 s on an
    # idle 2-core machine, more while the parallel suite runs beside it
    assert dry_run["results"]["dry"] is True
    assert f"results in {dry_run['out'] / 'gpu_check.json'}" in dry_run["stdout"]


def test_every_part_has_a_result_or_a_reason_to_skip(dry_run):
    parts = dry_run["results"]["parts"]
    assert sorted(parts) == sorted(PARTS)
    for name, part in parts.items():
        assert part["status"] in ("ok", "skipped"), (name, part.get("reason"),
                                                     part.get("traceback"))
        if part["status"] == "skipped":
            assert part["reason"], name
        else:
            assert part["result"], name


def test_parts_measure_what_they_claim(dry_run):
    parts = {n: p["result"] for n, p in dry_run["results"]["parts"].items()
             if p["status"] == "ok"}
    mfu = parts["train_mfu"]
    assert mfu["trainer"]["tokens_per_s"] > 0 and mfu["bare"]["tokens_per_s"] > 0
    assert mfu["trainer_over_bare"] == pytest.approx(
        mfu["trainer"]["tokens_per_s"] / mfu["bare"]["tokens_per_s"])
    runs = parts["throughput"]["runs"]
    assert len(runs) == 6 and all(r["output_tokens_per_s"] > 0 for r in runs)
    assert {r["batch"] for r in runs} == {4, 2}  # the workload and one more batch size
    assert parts["calibration"]["n_measurements"] == 6
    assert parts["calibration"]["leave_one_out"]["n_measurements"] == 6
    assert (dry_run["out"] / "calibration.json").exists()
    if "parallel_loss" in parts:
        loss = parts["parallel_loss"]
        assert len(loss["ddp_losses"]) == len(loss["fsdp_losses"]) == 10
        assert loss["same_loss"] and loss["fall_exceeds_tolerance"]
    if "fsdp_memory" in parts:
        assert parts["fsdp_memory"]["measured"]["outcome"] == "trained"
        assert parts["fsdp_memory"]["plan"]["allocated_gb"] is not None


def test_the_blocker_refused_every_missing_package(dry_run):
    blocker = dry_run["results"]["blocker"]
    assert blocker["installed_first"]
    assert sorted(blocker["probe"]) == sorted(BLOCKED)
    for name, outcome in blocker["probe"].items():
        # the blocker's own message: an ImportError for a package that is merely absent here
        # would not prove that the blocker was active
        assert outcome == f"ModuleNotFoundError: {MESSAGE.format(name=name)}"
    for name, part in dry_run["results"]["parts"].items():  # and in every part's process
        assert part["blocker_active"], name


def test_markdown_summary_names_every_part(dry_run):
    text = (dry_run["out"] / "gpu-results.md").read_text()
    assert "**Dry run**" in text
    for number in range(1, 6):
        assert f"## {number}. " in text
    assert "could not render" not in text


# --- the time box ----------------------------------------------------------------------------

def test_sigterm_keeps_the_finished_parts(tmp_path):
    """gpu_check.sh's limit sends SIGTERM: the parts done stay, the running one keeps its
    partial result, the rest are skipped, and both files are written."""
    proc = subprocess.Popen([sys.executable, "benchmarks/gpu_check.py", "--dry", "--out",
                             str(tmp_path)], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    results = tmp_path / "gpu_check.json"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if results.exists() and "fsdp_memory" in json.loads(results.read_text())["parts"]:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    output = proc.communicate(timeout=60)[0]
    assert proc.returncode == 124, output
    parts = json.loads(results.read_text())["parts"]
    assert parts["train_mfu"]["status"] == "ok" and parts["fsdp_memory"]["status"] == "ok"
    running = parts["parallel_loss"]  # "skipped" if the signal fell between two parts
    assert running["status"] == "skipped" or running.get("interrupted"), running
    assert [parts[p]["status"] for p in ("throughput", "calibration")] == ["skipped"] * 2
    assert (tmp_path / "gpu-results.md").exists()


def _records_then_hangs(ctx: runner.Context, rec: runner.Recorder) -> None:
    rec.update(first="done")
    time.sleep(60)


def _fails(ctx: runner.Context, rec: runner.Recorder) -> None:
    rec.update(before="kept")
    raise RuntimeError("boom")


def _skips(ctx: runner.Context, rec: runner.Recorder) -> None:
    raise runner.Skip("no GPU here")


def _context(tmp_path: Path, seconds: float) -> runner.Context:
    return runner.Context(dry=True, out_dir=tmp_path, work_dir=tmp_path, options={},
                          deadline=time.monotonic() + seconds)


def test_a_part_past_its_deadline_is_killed_and_keeps_what_it_recorded(tmp_path):
    part = runner.Part("slow", "slow", 1.0, _records_then_hangs)
    start = time.monotonic()
    record = runner.run_part(part, _context(tmp_path, 2.0), tmp_path / "slow.json")
    assert time.monotonic() - start < 120  # killed, not left hanging (the deadline is 2 s)
    assert record["status"] == "timed out"
    assert record["result"] == {"first": "done"}


def test_a_failing_part_is_recorded_and_a_skipping_one_says_why(tmp_path):
    failed = runner.run_part(runner.Part("f", "f", 1.0, _fails), _context(tmp_path, 20),
                             tmp_path / "f.json")
    assert failed["status"] == "failed" and "RuntimeError: boom" in failed["reason"]
    assert failed["result"] == {"before": "kept"}
    skipped = runner.run_part(runner.Part("s", "s", 1.0, _skips), _context(tmp_path, 20),
                              tmp_path / "s.json")
    assert skipped["status"] == "skipped" and skipped["reason"] == "no GPU here"


def test_spawned_parts_record_too(tmp_path):
    """The fallback for a parent that made a CUDA context: a spawned part, not a forked one."""
    record = runner.run_part(runner.Part("f", "f", 1.0, _fails), _context(tmp_path, 60),
                             tmp_path / "f.json", start_method="spawn")
    assert record["status"] == "failed" and record["result"] == {"before": "kept"}
