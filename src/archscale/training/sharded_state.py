"""The resume state of an fsdp run: sharded, through torch.distributed.checkpoint (DCP).

Under FSDP2 no rank holds the whole model or optimizer, so every rank writes its own shards
(`get_state_dict` of the sharded model and AdamW) into
`<resume folder>/sharded/step-<NNNNNNNN>/`, and rank 0 adds `progress.pt`: the step, losses,
log rows, times, RNG and fingerprint (`state.training_progress`, the same as in a state.pt).
The folder is written as `.step-<N>.partial` and renamed once every rank's shards and DCP's
metadata are in it, so a kill at any moment leaves the previous step's folder whole; the older
folders are removed after the rename. DCP reshards when it loads, so a state written by 2 ranks
resumes on 1 or on 8.

The resume folder keeps the rules of archscale.training.state: not a rule output, used only
when the fingerprint matches, removed (with this subfolder) when the run succeeds.
"""
from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from archscale.training.distributed import Dist
from archscale.training.job import TrainJob
from archscale.training.state import load_if_fingerprint

if TYPE_CHECKING:
    import torch

log = logging.getLogger("archscale.training.sharded_state")

SHARDED_DIR = "sharded"
PROGRESS_FILE = "progress.pt"
_STEP_DIR = re.compile(r"step-(\d+)")


def step_folder(job: TrainJob, step: int) -> Path:
    """Where the sharded state after `step` steps lives once complete."""
    return Path(job.resume_dir) / SHARDED_DIR / f"step-{step:08d}"


def latest_step_folder(job: TrainJob) -> Path | None:
    """The complete sharded state with the most steps, or None."""
    root = Path(job.resume_dir) / SHARDED_DIR
    if not root.is_dir():
        return None
    complete = [(int(m.group(1)), p) for p in root.iterdir()
                if p.is_dir() and (m := _STEP_DIR.fullmatch(p.name))]
    return max(complete)[1] if complete else None


def _model_and_optimizer(model: torch.nn.Module, optimizer: torch.optim.Optimizer
                         ) -> dict[str, Any]:
    from torch.distributed.checkpoint.state_dict import get_state_dict

    model_state, optimizer_state = get_state_dict(model, optimizer)
    return {"model": model_state, "optimizer": optimizer_state}


def save_sharded_state(job: TrainJob, progress: dict[str, Any], model: torch.nn.Module,
                       optimizer: torch.optim.Optimizer, dist: Dist) -> Path:
    """Write the state after progress["step"] steps; a collective (every rank calls it).
    Returns the folder."""
    import torch
    import torch.distributed as td
    import torch.distributed.checkpoint as dcp

    from archscale.io import reporting_write_errors

    final = step_folder(job, int(progress["step"]))
    partial = final.with_name(f".{final.name}.partial")
    if dist.main:  # a killed attempt's leftover at this step
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
    td.barrier()
    with reporting_write_errors(final):  # a full disk is named, not "unexpected pos"
        dcp.save(_model_and_optimizer(model, optimizer), checkpoint_id=str(partial))
        if dist.main:  # DCP's metadata is written when save returns on any rank
            torch.save(progress, partial / PROGRESS_FILE)
    if dist.main:
        shutil.rmtree(final, ignore_errors=True)  # only a state of other settings has its name
        partial.rename(final)
        for other in final.parent.iterdir():
            if other != final:
                shutil.rmtree(other, ignore_errors=True)
    td.barrier()
    return final


def load_sharded_state(job: TrainJob, fingerprint: str, model: torch.nn.Module,
                       optimizer: torch.optim.Optimizer) -> dict[str, Any] | None:
    """Load the latest sharded state into the (sharded or plain) model and optimizer and return
    its progress, or None when there is none, it is unreadable, or it belongs to other settings
    (the last two logged as warnings). A collective: every rank reads the same folder."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import set_state_dict

    folder = latest_step_folder(job)
    if folder is None:
        return None
    progress = load_if_fingerprint(folder / PROGRESS_FILE, fingerprint, "cpu", shown_as=folder)
    if progress is None:
        return None
    state = _model_and_optimizer(model, optimizer)
    dcp.load(state, checkpoint_id=str(folder))
    set_state_dict(model, optimizer, model_state_dict=state["model"],
                   optim_state_dict=state["optimizer"])
    return progress
