"""numpy model inputs -> torch tensors. The only module of recplane.data that imports torch."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from .features import TransformedBatch


@dataclass
class TorchBatch:
    """sparse: KJT with F keys and B rows; dense: float32 [B, D]; labels, weights: float32 [B] or None."""

    sparse: KeyedJaggedTensor
    dense: torch.Tensor
    labels: torch.Tensor | None
    weights: torch.Tensor | None

    def to(self, device: torch.device | str, non_blocking: bool = False) -> TorchBatch:
        return TorchBatch(
            sparse=self.sparse.to(device, non_blocking=non_blocking),
            dense=self.dense.to(device, non_blocking=non_blocking),
            labels=None if self.labels is None else self.labels.to(device, non_blocking=non_blocking),
            weights=None if self.weights is None else self.weights.to(device, non_blocking=non_blocking),
        )

    def pin_memory(self) -> TorchBatch:
        return TorchBatch(
            sparse=self.sparse.pin_memory(),
            dense=self.dense.pin_memory(),
            labels=None if self.labels is None else self.labels.pin_memory(),
            weights=None if self.weights is None else self.weights.pin_memory(),
        )


def to_torch(batch: TransformedBatch) -> TorchBatch:
    """Wrap a TransformedBatch without copying (the numpy buffers are shared)."""
    sparse = KeyedJaggedTensor.from_lengths_sync(
        keys=list(batch.keys),
        values=torch.from_numpy(batch.values),
        lengths=torch.from_numpy(batch.lengths),
    )
    return TorchBatch(
        sparse=sparse,
        dense=torch.from_numpy(batch.dense),
        labels=None if batch.labels is None else torch.from_numpy(batch.labels),
        weights=None if batch.weights is None else torch.from_numpy(batch.weights),
    )
