"""Checkpoints in the store: `torch.distributed.checkpoint` (DCP) shards of the sharded model and
optimiser, the RNG state of every rank, and a `complete` marker written last.

Layout: `<ns>/trainjob/<name>/checkpoints/step-<N>/` holding the DCP files
(`.metadata`, `__<rank>_0.distcp`), `rng-<rank>.pt` and `complete` (JSON: step,
position in the data, world size, fingerprint). A checkpoint without `complete`
is an interrupted upload and is never resumed from.

Each rank writes its own shards to a local directory and uploads them; rank 0
writes the marker after every rank is done. On resume every rank downloads the
checkpoint and DCP reads its part back into the freshly sharded model.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp

from recplane.store import NotFoundError, Store

from .dist import DistContext
from .errors import CheckpointError

MARKER = "complete"
CHECKPOINTS_DIR = "checkpoints"
_STEP_DIR = re.compile(r"^step-(\d+)$")


@dataclass(frozen=True)
class CheckpointInfo:
    """What the `complete` marker records: enough to continue exactly where the run stopped."""

    step: int
    epoch: int
    batch_in_epoch: int
    samples: int
    world_size: int
    fingerprint: str
    created_at: str = ""

    @property
    def name(self) -> str:
        return f"step-{self.step}"


class Checkpoints:
    """The checkpoints of one TrainJob in the store."""

    def __init__(self, store: Store, namespace: str, name: str, ctx: DistContext, fingerprint: str, keep: int) -> None:
        self.store = store
        self.ctx = ctx
        self.fingerprint = fingerprint
        self.keep = keep
        self.prefix = store.prefix(namespace, "trainjob", name) + CHECKPOINTS_DIR + "/"
        self.workdir = Path(tempfile.mkdtemp(prefix=f"recplane-ckpt-r{ctx.rank}-"))

    def close(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)

    # ---- listing ----------------------------------------------------------------------
    def complete(self) -> list[CheckpointInfo]:
        """Complete checkpoints, oldest first."""
        out = []
        for child in self.store.list_children(self.prefix):
            if not _STEP_DIR.match(child):
                continue
            try:
                raw = self.store.get_bytes(f"{self.prefix}{child}/{MARKER}")
            except NotFoundError:
                continue
            out.append(CheckpointInfo(**json.loads(raw)))
        return sorted(out, key=lambda c: c.step)

    def latest(self) -> CheckpointInfo | None:
        """The newest complete checkpoint of this run (same fingerprint), checked against the world size."""
        ours = [c for c in self.complete() if c.fingerprint == self.fingerprint]
        if not ours:
            return None
        last = ours[-1]
        if last.world_size != self.ctx.world_size:
            raise CheckpointError(
                "spec.distributed",
                f"checkpoint {last.name} was written by {last.world_size} processes but this run has "
                f"{self.ctx.world_size}; sharded tables, optimiser state and each rank's place in the data "
                f"cannot be remapped. Run with {last.world_size} processes (workers x procsPerWorker) to resume, "
                f"or delete {self.store.uri}/{self.prefix} to start over",
            )
        return last

    def discard_foreign(self) -> list[str]:
        """Delete checkpoints of another spec or input (rank 0): they can never be resumed by this run."""
        removed = []
        if self.ctx.is_main:
            keep = {c.name for c in self.complete() if c.fingerprint == self.fingerprint}
            for child in self.store.list_children(self.prefix):
                if _STEP_DIR.match(child) and child not in keep:
                    self.store.delete_prefix(f"{self.prefix}{child}/")
                    removed.append(child)
        dist.barrier()
        return removed

    # ---- save / load ------------------------------------------------------------------
    def save(self, info: CheckpointInfo, state: dict[str, Any]) -> None:
        """Write `state` (model + optimiser state dicts) as checkpoint `info.step`; collective."""
        local = self.workdir / info.name
        shutil.rmtree(local, ignore_errors=True)
        local.mkdir(parents=True)
        dcp.save(state, checkpoint_id=str(local))
        torch.save(_rng_state(), local / f"rng-{self.ctx.rank}.pt")
        key = f"{self.prefix}{info.name}/"
        # A marker from an earlier interrupted save of this step would make half-new files look complete.
        if self.ctx.is_main:
            self.store.delete_prefix(key)
        dist.barrier()
        for path in sorted(p for p in local.rglob("*") if p.is_file()):
            self.store.put_file(key + path.relative_to(local).as_posix(), path)
        dist.barrier()
        if self.ctx.is_main:
            stamped = CheckpointInfo(**{**asdict(info), "created_at": datetime.now(UTC).isoformat()})
            self.store.put_bytes(key + MARKER, json.dumps(asdict(stamped)).encode())
            self._prune()
        shutil.rmtree(local, ignore_errors=True)
        dist.barrier()

    def load(self, info: CheckpointInfo, state: dict[str, Any]) -> None:
        """Read checkpoint `info` into `state` in place (DCP), and restore this rank's RNG; collective."""
        local = self.workdir / f"load-{info.name}"
        shutil.rmtree(local, ignore_errors=True)
        key = f"{self.prefix}{info.name}/"
        for obj in self.store.list_objects(key):
            rel = obj.key[len(key) :]
            if rel == MARKER:
                continue
            target = local / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            self.store.get_file(obj.key, target)
        try:
            dcp.load(state, checkpoint_id=str(local))
            rng = torch.load(local / f"rng-{self.ctx.rank}.pt", weights_only=False)
        except (FileNotFoundError, RuntimeError, ValueError) as e:
            raise CheckpointError(
                "checkpoint",
                f"{self.store.uri}/{key} cannot be read ({str(e).splitlines()[0]}); "
                f"delete it to resume from an earlier checkpoint or start over",
            ) from None
        _set_rng_state(rng)
        shutil.rmtree(local, ignore_errors=True)

    def delete_all(self) -> None:
        """Drop every checkpoint (after a model version is stored they are no longer needed); rank 0."""
        if self.ctx.is_main:
            self.store.delete_prefix(self.prefix)

    def _prune(self) -> None:
        ours = [c for c in self.complete() if c.fingerprint == self.fingerprint]
        for old in ours[: -self.keep]:
            self.store.delete_prefix(f"{self.prefix}{old.name}/")


def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])
