"""The resume state a killed or preempted run continues from (see docs/training.md).

Every `checkpoint_every_steps` steps (and on SIGTERM) rank 0 writes `state.pt` atomically into
the run's resume folder, `results/resume/{arch}/{tokens}/seed{seed}/`: model and optimizer
state, the next step, the per-step losses and log rows so far, the steps resumed from, the time
spent and the RNG states (`training_state`). The folder is not a rule output (Snakemake deletes
a failed job's outputs, and this state must survive the failure); a rerun loads it when its
fingerprint (`TrainJob.fingerprint`, which includes STATE_VERSION, the state's format; both in
archscale.training.job) matches, and the successful run removes it (`remove_state`).

That is the state of single-process and DDP runs. An fsdp run (training.parallel) keeps the
same folder and fingerprint rule but writes the model and optimizer sharded, one file per rank,
through torch.distributed.checkpoint (archscale.training.sharded_state); both forms hold the
same `training_progress`.
"""
from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from archscale.training.job import STATE_VERSION, TrainJob

if TYPE_CHECKING:
    import torch

log = logging.getLogger("archscale.training.state")

STATE_FILE = "state.pt"
RESUME_DIR = "results/resume/{arch}/{tokens}/seed{seed}"  # not a rule output: see docs/training.md


def resume_dir(arch: str, tokens: int, seed: int) -> str:
    """Where a run keeps its resume state (relative to the workflow directory)."""
    return RESUME_DIR.format(arch=arch, tokens=tokens, seed=seed)


def load_state(job: TrainJob, fingerprint: str, device: torch.device) -> dict | None:
    """The job's saved state, or None when there is none, it is unreadable, or it belongs to
    other settings (another fingerprint); the last two are logged as warnings."""
    path = Path(job.resume_dir) / STATE_FILE
    if not path.exists():
        return None
    return load_if_fingerprint(path, fingerprint, device, shown_as=path)


def load_if_fingerprint(path: Path, fingerprint: str, map_location: Any,
                        shown_as: Path) -> dict | None:
    """The torch file at `path` (state.pt, or a sharded state's progress file), or None when it
    is unreadable or belongs to other settings; `shown_as` names the state in the warning."""
    import torch

    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # a state from another torch version, or a foreign file
        log.warning("ignoring unreadable resume state %s (%s); starting from step 0", shown_as,
                    exc)
        return None
    if state.get("fingerprint") != fingerprint:
        log.warning("resume state %s belongs to other settings (fingerprint %s, this run %s); "
                    "starting from step 0", shown_as, state.get("fingerprint"), fingerprint)
        return None
    return state


def training_progress(*, fingerprint: str, step: int, losses: torch.Tensor,
                      log_rows: list[dict[str, Any]], resumes: list[int], train_s: float,
                      wall_s: float, device: torch.device) -> dict[str, Any]:
    """Everything a resume state holds besides the model and optimizer, after `step` steps
    (`losses` of the steps done); `train_s` and `wall_s` are the totals over every attempt."""
    import torch

    return {"version": STATE_VERSION, "fingerprint": fingerprint, "step": step,
            "losses": losses.cpu(), "log_rows": log_rows, "resumes": resumes,
            "train_s": train_s, "wall_s": wall_s,
            "rng_cpu": torch.get_rng_state(),
            **({"rng_cuda": torch.cuda.get_rng_state(device)}
               if device.type == "cuda" else {})}


def training_state(*, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                   **progress: Any) -> dict[str, Any]:
    """The dict `save_state` writes: `training_progress(**progress)` with the (unwrapped)
    model's and the optimizer's state dicts."""
    return {**training_progress(**progress), "model": model.state_dict(),
            "optimizer": optimizer.state_dict()}


def save_state(job: TrainJob, state: dict[str, Any]) -> None:
    """Write `state` (see training_state) under a temporary name, then rename it into place."""
    import torch

    from archscale.io import atomic_path

    with atomic_path(Path(job.resume_dir) / STATE_FILE) as tmp:
        torch.save(state, tmp)


def remove_empty_parents(folder: Path, stop_after: int) -> None:
    """Remove results/resume/{arch}/{tokens}/ folders left empty (at most `stop_after` levels)."""
    for _ in range(stop_after):
        try:
            folder.rmdir()  # only succeeds when empty; another run's state is never touched
        except OSError:
            return
        folder = folder.parent


def remove_state(job: TrainJob) -> None:
    """Delete a finished run's resume folder, and its parents when that leaves them empty."""
    shutil.rmtree(job.resume_dir, ignore_errors=True)
    remove_empty_parents(Path(job.resume_dir).parent, stop_after=3)
