"""Moving weights between the sharded model and plain tensors.

* `init_embeddings`: every table gets the same initial values whatever the sharding
  plan or world size, because each value is drawn from a generator keyed by
  (seed, table, row block) and each rank fills only the slices it holds.
* `load_unsharded`: copy a full state dict (a warm-start model version) into the shards.
* `gather_unsharded`: the full fp32 state dict on rank 0 (what a model version stores).
* `average_buffers`: make batch-norm statistics identical on every rank.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed._shard.sharded_tensor import ShardedTensor

from .dist import DistContext


@contextmanager
def _sharded_tensors() -> Iterator[None]:
    """TorchRec's sharded modules still hand out ShardedTensor state; its deprecation notice is not ours."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Please use DTensor instead", category=FutureWarning)
        yield


_ROW_BLOCK = 65_536
# Pairwise interactions start small so FM terms do not swamp the first-order ones. Logistic
# regression's first-order tables start at zero (its usual start); the first-order columns
# that share a row with an embedding start as small as the embedding.
EMBEDDING_INIT_STD = 0.01


def _is_table(key: str) -> bool:
    return ".embedding_bags." in key and key.endswith(".weight")


def _block(seed: int, key: str, block: int, rows: int, cols: int) -> torch.Tensor:
    digest = hashlib.sha256(f"{seed}/{key}/{block}".encode()).digest()
    gen = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))
    return torch.randn(rows, cols, generator=gen) * EMBEDDING_INIT_STD


def initial_rows(seed: int, key: str, row_begin: int, row_end: int, cols: int) -> torch.Tensor:
    """Rows [row_begin, row_end) of table `key`'s initial value (full width)."""
    if ".lin_" in key:
        return torch.zeros(row_end - row_begin, cols)
    parts = []
    first, last = row_begin // _ROW_BLOCK, (row_end - 1) // _ROW_BLOCK
    for b in range(first, last + 1):
        start = b * _ROW_BLOCK
        rows = _block(seed, key, b, _ROW_BLOCK, cols)
        lo, hi = max(row_begin, start) - start, min(row_end, start + _ROW_BLOCK) - start
        parts.append(rows[lo:hi])
    return torch.cat(parts)


def _local_pieces(value: Any) -> list[tuple[torch.Tensor, list[int]]]:
    """(local tensor, [row offset, col offset]) of every piece of a table this rank holds."""
    if isinstance(value, ShardedTensor):
        return [(s.tensor, list(s.metadata.shard_offsets)) for s in value.local_shards()]
    return [(value, [0, 0])]


@torch.no_grad()
@_sharded_tensors()
def init_embeddings(model: nn.Module, seed: int) -> None:
    """Fill every embedding table (sharded or not) with its plan-independent initial value."""
    for key, value in model.state_dict().items():
        if not _is_table(key):
            continue
        cols = value.size()[1]
        for tensor, (row, col) in _local_pieces(value):
            rows = initial_rows(seed, key, row, row + tensor.size(0), cols)
            tensor.copy_(rows[:, col : col + tensor.size(1)])


@torch.no_grad()
@_sharded_tensors()
def load_unsharded(model: nn.Module, full: Mapping[str, torch.Tensor], prefix: str = "model.") -> None:
    """Copy a plain state dict (keys without `prefix`) into the sharded `model`'s state."""
    for key, value in model.state_dict().items():
        source = full.get(key[len(prefix) :] if key.startswith(prefix) else key)
        if source is None:
            continue
        for tensor, (row, col) in _local_pieces(value):
            if tensor.dim() == 2 and source.dim() == 2:
                tensor.copy_(source[row : row + tensor.size(0), col : col + tensor.size(1)])
            else:
                tensor.copy_(source)


@_sharded_tensors()
def gather_unsharded(model: nn.Module, ctx: DistContext, prefix: str = "model.") -> dict[str, torch.Tensor] | None:
    """The full state dict as fp32 CPU tensors on rank 0 (None elsewhere); collective."""
    out: dict[str, torch.Tensor] = {}
    for key, value in model.state_dict().items():
        name = key[len(prefix) :] if key.startswith(prefix) else key
        if isinstance(value, ShardedTensor):
            full = torch.empty(value.size(), dtype=value.dtype, device=ctx.device) if ctx.is_main else None
            value.gather(dst=0, out=full)
            if full is not None:
                out[name] = full.detach().to("cpu", torch.float32)
        elif ctx.is_main:
            t = value.detach().to("cpu")
            out[name] = t.float() if t.is_floating_point() else t.clone()
    return out if ctx.is_main else None


@torch.no_grad()
def average_buffers(model: nn.Module, ctx: DistContext) -> None:
    """Average floating-point buffers (batch-norm running statistics) across ranks.

    DDP here does not broadcast buffers, so each rank's statistics follow its own data;
    averaging before evaluation and checkpoints makes them global and identical.
    """
    if ctx.world_size == 1:
        return
    for buf in model.buffers():
        if buf.is_floating_point() and not isinstance(buf, ShardedTensor):
            dist.all_reduce(buf)
            buf.div_(ctx.world_size)
