"""Training input: stored samples streamed per rank, transformed by the FeatureSet's processor.

Nothing holds a whole split: each rank reads its own contiguous share of the
Parquet shards in record batches and turns each into a `TorchBatch`. The first
`skip` batches can be passed over unread by the processor (resuming mid-epoch).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from recplane.data.features import FeatureProcessor
from recplane.data.samples import iter_record_batches, rank_rows
from recplane.data.tensors import TorchBatch, to_torch
from recplane.store import Manifest, Store

T = TypeVar("T")
_DONE = object()


def prefetch(items: Iterator[T], depth: int = 2) -> Iterator[T]:
    """`items`, produced up to `depth` ahead by a background thread.

    Reading Parquet and encoding features release the GIL, so the next batches are prepared
    while this thread waits in collectives or runs the model. An exception in the producer is
    raised here, at the item where it happened; leaving the loop early stops the producer.
    """
    box: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                box.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put(item):
                    return
            put(_DONE)
        except BaseException as e:  # handed to the consumer, which raises it
            put(e)
        finally:
            close = getattr(items, "close", None)
            if close is not None:
                close()

    worker = threading.Thread(target=produce, name="recplane-prefetch", daemon=True)
    worker.start()
    try:
        while True:
            item = box.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        worker.join(timeout=10)


@dataclass
class Batch:
    """One step's input on one rank: model tensors plus, for recall models, item identities."""

    inputs: TorchBatch
    rows: int
    item_ids: torch.Tensor | None = None  # int64 [B], index into the positive-item table (-1: unseen)
    log_q: torch.Tensor | None = None  # float32 [B], log P(item appears as a positive)


@dataclass
class ItemFrequencies:
    """How often each item is a positive in the training split: the in-batch negatives' sampling
    probabilities for the two-tower log-Q correction."""

    items: pa.Array
    log_q: np.ndarray  # float32 [N]

    def lookup(self, raw: pa.Array) -> tuple[torch.Tensor, torch.Tensor]:
        index = pc.index_in(raw, value_set=self.items)
        idx = pc.fill_null(index, -1).to_numpy(zero_copy_only=False).astype(np.int64)
        log_q = np.where(idx >= 0, self.log_q[np.maximum(idx, 0)], 0.0).astype(np.float32)
        return torch.from_numpy(idx), torch.from_numpy(log_q)


@dataclass
class SampleData:
    """The samples of one FeatureSet version, read through its processor."""

    store: Store
    samples: Manifest
    processor: FeatureProcessor
    item_column: str | None = None
    item_frequencies: ItemFrequencies | None = None
    extra_columns: list[str] = field(default_factory=list)

    @property
    def columns(self) -> list[str]:
        cols = list(self.processor.input_columns)
        for c in (self.processor.label_column, self.processor.weight_column, self.item_column, *self.extra_columns):
            if c and c not in cols:
                cols.append(c)
        return cols

    def rows_per_rank(self, split: str, world_size: int) -> int:
        return rank_rows(self.samples, split, world_size)

    def record_batches(
        self, split: str, batch_size: int, rank: int, world_size: int, columns: list[str] | None = None
    ) -> Iterator[pa.RecordBatch]:
        return iter_record_batches(
            self.store,
            self.samples,
            split,
            batch_size,
            rank=rank,
            world_size=world_size,
            columns=columns or self.columns,
            dictionary_strings=False,
        )

    def batches(
        self, split: str, batch_size: int, rank: int, world_size: int, skip: int = 0
    ) -> Iterator[tuple[Batch, pa.RecordBatch]]:
        """(model batch, the raw record batch it came from) for this rank, after `skip` batches."""
        for i, record in enumerate(self.record_batches(split, batch_size, rank, world_size)):
            if i < skip:
                continue
            yield self.to_batch(record), record

    def to_batch(self, record: pa.RecordBatch | pa.Table) -> Batch:
        inputs = to_torch(self.processor.transform(record))
        item_ids = log_q = None
        if self.item_frequencies is not None and self.item_column is not None:
            raw = record.column(self.item_column)
            if isinstance(raw, pa.ChunkedArray):
                raw = raw.combine_chunks()
            item_ids, log_q = self.item_frequencies.lookup(raw)
        return Batch(inputs=inputs, rows=record.num_rows, item_ids=item_ids, log_q=log_q)

    def positive_item_frequencies(self, batch_size: int = 262_144) -> ItemFrequencies:
        """Count every item among the training positives (one pass over two columns)."""
        label = self.processor.label_column
        if self.item_column is None or label is None:
            raise ValueError("item frequencies need the SampleSet's item column and a label column")
        counts: dict[Any, int] = {}
        for record in iter_record_batches(
            self.store, self.samples, "train", batch_size, columns=[self.item_column, label]
        ):
            positive = pc.greater(record.column(label).cast(pa.float32()), 0.5)
            items = pc.filter(record.column(self.item_column), positive)
            vc = pc.value_counts(items)
            for value, count in zip(vc.field("values").to_pylist(), vc.field("counts").to_pylist(), strict=True):
                counts[value] = counts.get(value, 0) + count
        keys = sorted(k for k in counts if k is not None)
        freq = np.asarray([counts[k] for k in keys], dtype=np.float64)
        total = max(freq.sum(), 1.0)
        return ItemFrequencies(items=pa.array(keys), log_q=np.log(freq / total).astype(np.float32))
