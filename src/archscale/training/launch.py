"""Launching a training job: in this process, or through torchrun for several GPUs.

`execute(job, gpus)` is what the train rule calls. With more than one GPU it writes the job as
JSON next to its resume state and runs `python -m torch.distributed.run --standalone
--nproc_per_node <gpus> -m archscale.training.launch --job <spec>`; every rank then runs `main`,
which calls archscale.training.loop.run.
"""
from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
from pathlib import Path

from archscale.training.loop import TrainJob, run

log = logging.getLogger("archscale.training.launch")


def launch_torchrun(job: TrainJob, nproc: int, timeout: float | None = None) -> None:
    """Run the job as `nproc` DDP processes through torchrun (one node, free port)."""
    spec = Path(job.resume_dir) / "job.json"
    from archscale.io import write_text

    write_text(spec, job.to_json())
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc_per_node={nproc}", "-m", "archscale.training.launch", "--job", str(spec)]
    log.info("launching: %s", " ".join(cmd))
    sys.stdout.flush()
    sys.stderr.flush()
    package_root = str(Path(__file__).resolve().parents[2])  # src/: ranks import this package
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (package_root, os.environ.get("PYTHONPATH")) if p))
    proc = subprocess.run(cmd, stdout=sys.stdout, stderr=sys.stderr, timeout=timeout, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"torchrun exited with status {proc.returncode}; the per-rank "
                           "tracebacks are above in this log. The resume state in "
                           f"{job.resume_dir} is kept, so rerunning continues from it")


def execute(job: TrainJob, gpus: int = 0) -> None:
    """Train in this process, or through torchrun when a job has more than one GPU."""
    if gpus > 1:
        launch_torchrun(job, gpus)
    else:
        run(job)


def main(argv: list[str] | None = None) -> int:
    """`python -m archscale.training.launch --job job.json` (what torchrun runs on every rank)."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--job", required=True, help="a TrainJob as JSON (TrainJob.to_json)")
    args = parser.parse_args(argv)
    root = logging.getLogger("archscale")
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        rank = os.environ.get("RANK")
        prefix = f"[rank {rank}] " if rank is not None else ""
        handler.setFormatter(logging.Formatter(f"%(asctime)s {prefix}%(message)s"))
        root.addHandler(handler)
        root.setLevel(logging.INFO)
    run(TrainJob.from_json(Path(args.job).read_text()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
