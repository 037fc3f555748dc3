"""Reading a stored SampleSet version: its splits as streams of record batches.

Shards are Parquet files under `train/` and `validation/`; the manifest records
the rows of each, so every rank of a distributed job can take an equal,
contiguous share without listing or opening the others' files.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator, Sequence
from typing import cast

import pyarrow as pa
import pyarrow.parquet as pq

from recplane.api.common import LocalRef
from recplane.store import Manifest, Store

from .errors import DataError

SAMPLESET_KIND = "sampleset"
SPLITS = ("train", "validation")
# Large row groups with room for big dictionaries: id columns stay dictionary-encoded, and
# readers decode each dictionary once per row group (then stream it in small batches).
MAX_ROW_GROUP_ROWS = 1 << 20
DICTIONARY_PAGE_BYTES = 64 << 20
# Rows decoded per read (rounded to whole batches): batches are sliced out of it.
READ_ROWS = 1 << 17


def write_shard(table: pa.Table, path: object) -> None:
    """Write one Parquet shard of a split the way the readers here read fastest.

    Uncompressed: the columns are mostly dictionary indices, already bit-packed, and floats, which
    snappy shrinks by about a tenth while decoding it costs every later read about a tenth more CPU.
    """
    pq.write_table(
        table,
        path,  # type: ignore[arg-type]
        row_group_size=min(max(table.num_rows, 1), MAX_ROW_GROUP_ROWS),
        dictionary_pagesize_limit=DICTIONARY_PAGE_BYTES,
        compression="none",
    )


def split_files(manifest: Manifest, split: str) -> list[tuple[str, int]]:
    """(relative path, rows) of the split's shards, in order."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    prefix = f"{split}/"
    return sorted((rel, n) for rel, n in manifest.row_counts.items() if rel.startswith(prefix))


def split_rows(manifest: Manifest, split: str) -> int:
    return sum(n for _, n in split_files(manifest, split))


def rank_rows(manifest: Manifest, split: str, world_size: int = 1) -> int:
    """Rows each rank reads: an equal share (the last `rows % world_size` rows are left out)."""
    return split_rows(manifest, split) // world_size


def iter_record_batches(
    store: Store,
    manifest: Manifest,
    split: str,
    batch_size: int,
    rank: int = 0,
    world_size: int = 1,
    columns: Sequence[str] | None = None,
    dictionary_strings: bool = False,
    exact: bool = True,
    use_threads: bool = True,
    prefetch: bool = True,
) -> Iterator[pa.RecordBatch]:
    """Stream one split as batches of exactly `batch_size` rows (the last one may be smaller).

    Rank r of `world_size` reads rows [r*share, (r+1)*share) with share = rows // world_size,
    so every rank sees the same number of rows and batches (collectives stay in step).
    Train shards were shuffled when written. `dictionary_strings` reads string columns
    dictionary-encoded (cheaper when values repeat). `exact=False` yields the stored
    row groups as they are (at most `batch_size` rows each), without re-batching: for
    scans that do not care about batch sizes. `use_threads=False` decodes the columns one
    after another (for callers that run several scans in parallel threads). `prefetch`
    reads the next batch in a background thread while the caller works on this one
    (Parquet decoding releases the GIL), so reading and the caller's work overlap.
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    share = rank_rows(manifest, split, world_size)
    begin, end = rank * share, rank * share + share
    # Read in chunks of whole batches: fewer, larger reads (Arrow copies a row group's dictionaries into
    # every batch it reads), cut into the same batches.
    read_rows = batch_size * max(1, READ_ROWS // batch_size)
    rows = _row_range(store, manifest, split, begin, end, columns, dictionary_strings, read_rows, use_threads)
    if prefetch:
        rows = _prefetched(rows)
    if exact:
        yield from _rebatch(rows, batch_size)
    else:
        for batch in rows:
            for start in range(0, batch.num_rows, batch_size):
                yield batch.slice(start, batch_size)


def _row_range(
    store: Store,
    manifest: Manifest,
    split: str,
    begin: int,
    end: int,
    columns: Sequence[str] | None,
    dictionary_strings: bool,
    read_rows: int,
    use_threads: bool = True,
) -> Iterator[pa.RecordBatch]:
    """Rows [begin, end) of the split, streamed in batches of at most `read_rows`."""
    offset = 0
    for rel, rows in split_files(manifest, split):
        file_begin, file_end = offset, offset + rows
        offset = file_end
        if file_end <= begin or file_begin >= end:
            continue
        path = store.fetch(manifest, rel)
        metadata = pq.read_metadata(path)  # parsed once, for the schema and for the reader
        strings = _string_columns(metadata.schema.to_arrow_schema(), columns) if dictionary_strings else None
        pf = pq.ParquetFile(path, metadata=metadata, read_dictionary=strings)
        _check_columns(pf.schema_arrow, columns, manifest)
        group_begin = file_begin
        for g in range(pf.num_row_groups):
            n = pf.metadata.row_group(g).num_rows
            lo, hi = max(begin, group_begin), min(end, group_begin + n)
            if lo < hi:
                position = group_begin
                wanted = list(columns) if columns is not None else None
                for batch in pf.iter_batches(
                    batch_size=read_rows, row_groups=[g], columns=wanted, use_threads=use_threads
                ):
                    b_lo, b_hi = max(lo, position), min(hi, position + batch.num_rows)
                    if b_lo < b_hi:
                        yield batch.slice(b_lo - position, b_hi - b_lo)
                    position += batch.num_rows
                    if position >= hi:
                        break
            group_begin += n


class _Failed:
    def __init__(self, error: BaseException) -> None:
        self.error = error


_DONE = object()


def _prefetched(items: Iterator[pa.RecordBatch], ahead: int = 1) -> Iterator[pa.RecordBatch]:
    """`items`, produced by a background thread that works on at most `ahead` items beyond the one the
    consumer holds. Errors reach the consumer in order; closing this generator stops the thread."""
    ready: queue.SimpleQueue[object] = queue.SimpleQueue()
    slots = threading.Semaphore(ahead)  # taken by the producer per item, given back when the item is taken
    stop = threading.Event()

    def produce() -> None:
        while True:
            while not slots.acquire(timeout=0.05):
                if stop.is_set():
                    return
            if stop.is_set():
                return
            try:
                item = next(items)
            except StopIteration:
                ready.put(_DONE)
                return
            except BaseException as e:  # handed to the consumer, raised there
                ready.put(_Failed(e))
                return
            ready.put(item)

    thread = threading.Thread(target=produce, name="recplane-read", daemon=True)
    thread.start()
    try:
        while True:
            item = ready.get()
            slots.release()
            if item is _DONE:
                return
            if isinstance(item, _Failed):
                raise item.error
            yield cast(pa.RecordBatch, item)
    finally:
        stop.set()
        thread.join(timeout=60)


def _string_columns(schema: pa.Schema, columns: Sequence[str] | None) -> list[str]:
    wanted = set(columns) if columns is not None else set(schema.names)
    out = []
    for f in schema:
        if f.name in wanted and (pa.types.is_string(f.type) or pa.types.is_large_string(f.type)):
            out.append(f.name)
        elif f.name in wanted and pa.types.is_list(f.type) and pa.types.is_string(f.type.value_type):
            out.append(f"{f.name}.list.element")
    return out


def _check_columns(schema: pa.Schema, columns: Sequence[str] | None, manifest: Manifest) -> None:
    if columns is None:
        return
    missing = [c for c in columns if c not in schema.names]
    if missing:
        raise DataError(
            "columns",
            f"{', '.join(missing)} not in SampleSet {manifest.namespace}/{manifest.name} version {manifest.version}",
        )


def _rebatch(batches: Iterator[pa.RecordBatch], batch_size: int) -> Iterator[pa.RecordBatch]:
    pending: list[pa.RecordBatch] = []
    pending_rows = 0
    for batch in batches:
        while batch.num_rows:
            take = min(batch.num_rows, batch_size - pending_rows)
            pending.append(batch.slice(0, take))
            pending_rows += take
            batch = batch.slice(take)
            if pending_rows == batch_size:
                yield _merge(pending)
                pending, pending_rows = [], 0
    if pending_rows:
        yield _merge(pending)


def _merge(parts: list[pa.RecordBatch]) -> pa.RecordBatch:
    if len(parts) == 1:
        return parts[0]
    return pa.Table.from_batches(parts).combine_chunks().to_batches()[0]


def read_split(store: Store, manifest: Manifest, split: str, columns: Sequence[str] | None = None) -> pa.Table:
    """A whole split as one table (small data, tests, evaluation)."""
    tables = [
        pq.read_table(store.fetch(manifest, rel), columns=list(columns) if columns is not None else None)
        for rel, _ in split_files(manifest, split)
    ]
    if not tables:
        raise DataError("split", f"SampleSet {manifest.name} version {manifest.version} has no {split} rows")
    return pa.concat_tables(tables)


def resolve_sampleset(store: Store, namespace: str, ref: LocalRef, field: str = "spec.sampleSetRef") -> Manifest:
    """The referenced SampleSet version: the pinned one, or the latest."""
    m = (
        store.manifest(namespace, SAMPLESET_KIND, ref.name, ref.version)
        if ref.version
        else store.latest(namespace, SAMPLESET_KIND, ref.name)
    )
    if m is None:
        which = f"version {ref.version}" if ref.version else "a version"
        raise DataError(
            field,
            f"SampleSet {namespace}/{ref.name} has no {which} in the store {store.uri}; "
            "materialise the SampleSet first (recplane step sampleset)",
        )
    return m
