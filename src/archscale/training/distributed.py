"""Where this process trains: its device and its place in the process group (`Dist`).

A run is one process, or one of the ranks torchrun starts (archscale.training.launch); fsdp and
its sharded resume state need a process group even on one rank. Joining, waiting for rank 0
and leaving the group are kept here, apart from the loop, so the checkpointing modules
(archscale.training.sharded_state) can name a rank without importing the loop.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterator

if TYPE_CHECKING:
    import torch


@dataclass
class Dist:
    """This process's place in a (possibly single-process) DDP or FSDP job."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    joined: bool = False  # a process group was joined (torchrun, or fsdp's one-rank group)

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed(use_cuda: bool, needs_group: bool) -> Dist:
    """Join the process group when launched by torchrun (WORLD_SIZE set). A single process
    joins a one-rank group only when `needs_group` (FSDP2 and DCP run on a process group)."""
    import torch
    import torch.distributed as td

    backend = "nccl" if use_cuda else "gloo"
    if "WORLD_SIZE" not in os.environ:
        if not needs_group:
            return Dist()
        td.init_process_group(backend=backend, store=td.HashStore(), rank=0, world_size=1)
        return Dist(joined=True)
    dist = Dist(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]),
                int(os.environ.get("LOCAL_RANK", 0)), joined=True)
    if use_cuda:
        torch.cuda.set_device(dist.local_rank)
    td.init_process_group(backend=backend)
    return dist


def select_device() -> "torch.device":
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def select_device_and_dist(threads: int, parallel: str) -> tuple["torch.device", Dist]:
    """The device, the process group (under torchrun, or fsdp's one-rank group), and the
    device's numerics settings (`threads`: CPU threads)."""
    import torch

    device = select_device()
    dist = init_distributed(device.type == "cuda", needs_group=parallel == "fsdp")
    if device.type == "cuda":
        device = torch.device("cuda", dist.local_rank)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    else:
        torch.set_num_threads(max(1, int(threads)))
        torch.use_deterministic_algorithms(True, warn_only=True)
    return device, dist


def wait_for_rank_0(dist: Dist) -> None:
    """The other ranks wait until rank 0 has written the outputs."""
    if dist.world > 1:
        import torch.distributed as td

        td.barrier()


@contextlib.contextmanager
def leaving_process_group(dist: Dist) -> Iterator[None]:
    """Leave the process group this run joined (torchrun's, or fsdp's one-rank group) when the
    block ends; after a failure only a one-rank group (so a later run in this process can join
    again: under torchrun the other ranks may still wait in a collective, and torchrun ends
    them)."""
    failed = True
    try:
        yield
        failed = False
    finally:
        if dist.joined and not (failed and dist.world > 1):
            import torch.distributed as td

            td.destroy_process_group()
