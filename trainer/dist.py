"""The process group a training run works in: the one torchrun set up, or a private single-process one.

Under torchrun (RANK, WORLD_SIZE, MASTER_ADDR, ... in the environment) the group
comes from the environment. Without WORLD_SIZE the run is one process with gloo
over a file rendezvous in a temporary directory, so the local runner and tests can
call the same code in-process.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist

from .errors import TrainError

# A collective that takes longer than this is a hung peer, not slow work.
COLLECTIVE_TIMEOUT = timedelta(minutes=30)


@dataclass(frozen=True)
class DistContext:
    rank: int
    world_size: int
    local_rank: int
    backend: str
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def process_group(self) -> dist.ProcessGroup:
        group = dist.group.WORLD
        assert group is not None
        return group


def _device_for(backend: str, local_rank: int) -> torch.device:
    if backend == "nccl":
        if not torch.cuda.is_available():
            raise TrainError(
                "spec.distributed.backend",
                "nccl needs a GPU but this process sees none; use backend gloo on CPU "
                "or run the job on GPU nodes (spec.resources.gpu)",
            )
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


@contextmanager
def process_group(backend: str = "gloo") -> Iterator[DistContext]:
    """The run's process group; torn down on exit only when this function created it."""
    created = False
    tmp: tempfile.TemporaryDirectory[str] | None = None
    if dist.is_initialized():
        backend = str(dist.get_backend())
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    elif "WORLD_SIZE" in os.environ:
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        _device_for(backend, local_rank)
        dist.init_process_group(backend=backend, timeout=COLLECTIVE_TIMEOUT)
        created = True
    else:
        local_rank = 0
        _device_for(backend, local_rank)
        tmp = tempfile.TemporaryDirectory(prefix="recplane-pg-")
        store = dist.FileStore(str(Path(tmp.name) / "rendezvous"), 1)
        dist.init_process_group(backend=backend, store=store, rank=0, world_size=1, timeout=COLLECTIVE_TIMEOUT)
        created = True
    try:
        yield DistContext(
            rank=dist.get_rank(),
            world_size=dist.get_world_size(),
            local_rank=local_rank,
            backend=backend,
            device=_device_for(backend, local_rank),
        )
    finally:
        if created:
            dist.destroy_process_group()
        if tmp is not None:
            tmp.cleanup()


def broadcast_object(obj: object, src: int = 0) -> object:
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]
