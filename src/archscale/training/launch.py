"""Launching a training job: in this process, through torchrun for several GPUs, or through
one torchrun per node for several nodes.

`execute(job, gpus, nodes)` is what the train rule calls.
- One GPU (or none): `loop.run` in this process.
- Several GPUs on one node: the job is written as JSON next to its resume state and
  `python -m torch.distributed.run --standalone --nproc_per_node <gpus> -m
  archscale.training.launch --job <spec>` starts one process per GPU.
- Several nodes (inside a SLURM allocation): `srun` starts one task per node, each running
  `python -m archscale.training.launch --node ...`, which starts that node's torchrun with
  `--nnodes`; the torchruns meet at a c10d rendezvous on the first node (where this job runs),
  hosted by the task with SLURM_PROCID 0. torchrun numbers the nodes.
Every rank then runs `main`, which calls archscale.training.loop.run.

How the SLURM request is shaped for the executor plugin (snakemake-executor-plugin-slurm 2.x)
is `slurm_training_request`; docs/slurm.md shows a 3B run on 4 nodes.
"""
from __future__ import annotations

import argparse
import logging
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any, Mapping

from archscale.training.job import TrainJob
from archscale.training.loop import run

log = logging.getLogger("archscale.training.launch")


def _write_spec(job: TrainJob) -> str:
    """The job as JSON beside its resume state: what every rank's `--job` reads."""
    from archscale.io import write_text

    spec = Path(job.resume_dir) / "job.json"
    write_text(spec, job.to_json())
    return str(spec)


def _run_ranks(cmd: list[str], job: TrainJob, what: str, timeout: float | None) -> None:
    """Run the command that starts the ranks, its output into this job's log; a failure keeps
    the resume state, so rerunning continues from it."""
    sys.stdout.flush()
    sys.stderr.flush()
    proc = subprocess.run(cmd, stdout=sys.stdout, stderr=sys.stderr, timeout=timeout,
                          env=_package_env())
    if proc.returncode != 0:
        raise RuntimeError(f"{what} exited with status {proc.returncode}; the per-rank "
                           "tracebacks are above in this log. The resume state in "
                           f"{job.resume_dir} is kept, so rerunning continues from it")


def launch_torchrun(job: TrainJob, nproc: int, timeout: float | None = None) -> None:
    """Run the job as `nproc` DDP processes through torchrun (one node, free port)."""
    spec = _write_spec(job)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc_per_node={nproc}", "-m", "archscale.training.launch", "--job", spec]
    log.info("launching: %s", " ".join(cmd))
    _run_ranks(cmd, job, "torchrun", timeout)


def slurm_training_request(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The resources a training job hands the SLURM executor plugin (2.x), from `training.gpus`
    (per node) and `training.nodes`.

    What the plugin sends: `gpu` becomes `--gpus=[<gpu_model>:]<gpu>`, a total for the job (not
    per node), so it is gpus x nodes, and at least one (a GPU profile with a GPU model would
    otherwise send `--gpus=<model>:0`); `nodes` becomes `--nodes`; `slurm_extra` is appended as
    is. A job of several nodes takes them whole (`--exclusive`) with one task each
    (`--ntasks-per-node=1`): that task is the node's torchrun, and whole nodes make the
    total --gpus land evenly. No `tasks` resource is set: on a GPU job the plugin would send it
    as --ntasks-per-gpu. The plugin's job step runs the job itself as `srun -n1` on the first
    node, and `launch_nodes` starts the per-node tasks from there with `srun --overlap`.
    """
    nodes, gpus = int(settings.get("nodes", 1)), int(settings.get("gpus", 0))
    return {"gpu": max(1, gpus) * nodes, "nodes": nodes,
            "slurm_extra": "--ntasks-per-node=1 --exclusive" if nodes > 1 else ""}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("", 0))
        return sock.getsockname()[1]


def srun_nodes_command(spec: str, nodes: int, nproc: int, endpoint: str, run_id: str,
                       python: str = sys.executable) -> list[str]:
    """One task per node, each running this module's `--node` mode. Tasks go round-robin over
    the allocation's nodes (`--distribution=cyclic`: one per node on a real multi-node
    allocation; on a one-node allocation with several tasks, as in CI, all on that node);
    `--overlap` lets the first node's task share the resources of the job step this runs in;
    one failed task ends them all."""
    alloc_nodes = os.environ.get("SLURM_JOB_NUM_NODES") or os.environ.get("SLURM_NNODES")
    cmd = ["srun", "--overlap", f"--ntasks={nodes}", "--distribution=cyclic",
           "--kill-on-bad-exit=1"]
    if alloc_nodes:
        cmd.append(f"--nodes={alloc_nodes}")
    return cmd + [python, "-m", "archscale.training.launch", "--node", "--job", spec,
                  "--nnodes", str(nodes), "--nproc", str(nproc), "--endpoint", endpoint,
                  "--run-id", run_id]


def node_torchrun_command(spec: str, nodes: int, nproc: int, endpoint: str, run_id: str,
                          is_host: bool, python: str = sys.executable) -> list[str]:
    """One node's torchrun: `nproc` processes, joining `nodes` nodes at a c10d rendezvous on
    `endpoint`, which the task with `is_host` serves (so two tasks on one host, as in CI, do
    not both try to)."""
    return [python, "-m", "torch.distributed.run", f"--nnodes={nodes}",
            f"--nproc-per-node={nproc}", "--rdzv-backend=c10d", f"--rdzv-endpoint={endpoint}",
            f"--rdzv-id={run_id}", f"--rdzv-conf=is_host={str(is_host).lower()}",
            "-m", "archscale.training.launch", "--job", spec]


def _package_env() -> dict[str, str]:
    """The environment for child processes: this package's src/ first, so every rank (on
    every node) imports the same code."""
    package_root = str(Path(__file__).resolve().parents[2])
    return dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (package_root, os.environ.get("PYTHONPATH")) if p))


def launch_nodes(job: TrainJob, nodes: int, nproc: int, timeout: float | None = None) -> None:
    """Run the job on `nodes` nodes of the current SLURM allocation, `nproc` processes each."""
    if not os.environ.get("SLURM_JOB_ID"):
        raise RuntimeError(
            f"training.nodes is {nodes}: a multi-node run needs a SLURM allocation to start "
            "one torchrun per node (run the study with --profile slurm), or set nodes: 1")
    spec = _write_spec(job)
    endpoint = f"{socket.gethostname()}:{_free_port()}"
    cmd = srun_nodes_command(spec, nodes, nproc, endpoint, os.environ["SLURM_JOB_ID"])
    log.info("launching %d nodes x %d processes: %s", nodes, nproc, " ".join(cmd))
    _run_ranks(cmd, job, f"srun of {nodes} node tasks", timeout)


def run_node(spec: str, nodes: int, nproc: int, endpoint: str, run_id: str) -> int:
    """What each srun task runs: its node's torchrun (the task with SLURM_PROCID 0 hosts the
    rendezvous)."""
    is_host = int(os.environ.get("SLURM_PROCID", "0")) == 0
    cmd = node_torchrun_command(spec, nodes, nproc, endpoint, run_id, is_host)
    log.info("node task %s: %s", os.environ.get("SLURM_PROCID", "0"), " ".join(cmd))
    return subprocess.run(cmd, env=_package_env()).returncode


def execute(job: TrainJob, gpus: int = 0, nodes: int = 1) -> None:
    """Train in this process, through torchrun when a job has more than one GPU, or on several
    nodes (one torchrun each, one process per GPU, at least one per node)."""
    if nodes > 1:
        launch_nodes(job, nodes, max(1, gpus))
    elif gpus > 1:
        launch_torchrun(job, gpus)
    else:
        run(job)


def main(argv: list[str] | None = None) -> int:
    """`python -m archscale.training.launch --job job.json` (what torchrun runs on every rank)."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--job", required=True, help="a TrainJob as JSON (TrainJob.to_json)")
    parser.add_argument("--node", action="store_true",
                        help="start this node's torchrun (one srun task of a multi-node job)")
    parser.add_argument("--nnodes", type=int, default=1)
    parser.add_argument("--nproc", type=int, default=1)
    parser.add_argument("--endpoint", help="host:port of the c10d rendezvous")
    parser.add_argument("--run-id", default="archscale")
    args = parser.parse_args(argv)
    root = logging.getLogger("archscale")
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        rank = os.environ.get("RANK")
        prefix = f"[rank {rank}] " if rank is not None else ""
        handler.setFormatter(logging.Formatter(f"%(asctime)s {prefix}%(message)s"))
        root.addHandler(handler)
        root.setLevel(logging.INFO)
    if args.node:
        return run_node(args.job, args.nnodes, args.nproc, args.endpoint, args.run_id)
    run(TrainJob.from_json(Path(args.job).read_text()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
