"""The event log: what /rank served and what users did with it, as Parquet files a SampleSet reads.

With RECPLANE_EVENTS_URI set, every item a /rank response returns is an *impression* event and
every `POST /feedback` a *feedback* event. Events are buffered in memory and written as one
Parquet file per flush (every RECPLANE_EVENTS_FLUSH_SECONDS, or sooner once
RECPLANE_EVENTS_FLUSH_RECORDS are buffered, and at shutdown) under

    <events uri>/<YYYY-MM-DD>/<HHMMSS>-<host>-<pid>-<token>-<seq>.parquet

so a SampleSet whose source is that URI (Parquet, `follow: true`) picks up each new file. A
request only appends to lists; the writing happens on a background thread, and a failed write is
logged, counted (`recplane_serving_event_write_errors_total`) and retried with the next flush.

How the rows become labelled samples. Both kinds share one schema (`SCHEMA`):

* an impression row has `clicked` 0 and `dwell_s` 0 (a negative), the ranked `position` (0 =
  first), the `score` and the `model_version`;
* a feedback row has the reported `clicked` and `dwell_s`, and repeats what its impression row
  says (user, version, position, score) as far as the client sent it or this worker remembers it,
  so that the row dedupe keeps looks like the impression it stands for.

A SampleSet sorts events by `ts` and its dedupe keeps the *first* row of each key
(`recplane.data.strategies.dedupe`). So `ts` is the time an event's label became known: an
impression row is stamped at the end of its attribution window (served time +
RECPLANE_EVENTS_LABEL_WINDOW_SECONDS), the time at which "no click" is final, and a feedback row
at its arrival. Feedback inside the window therefore sorts before its impression and is the row
dedupe keeps (keys `request_id, item_id`); an impression nobody reported on stays a negative; a
click after the window does not count, as in any attribution window. No replica needs to have
served the impression: the join happens in the SampleSet, so any pod may take the feedback.
`served_at` keeps the real serving time (for feedback: when the replica remembers the request).
"""

from __future__ import annotations

import io
import itertools
import logging
import os
import re
import socket
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from recplane.store import Store, open_store

from .config import ServingConfig
from .metrics import ServingMetrics

log = logging.getLogger("recplane.serving")

IMPRESSION = "impression"
FEEDBACK = "feedback"
UNKNOWN_VERSION = "unknown"
SCHEMA = pa.schema(
    [
        ("event", pa.string()),  # impression | feedback
        ("request_id", pa.string()),
        ("user_id", pa.string()),
        ("item_id", pa.string()),  # ids as strings, whatever their type on the wire
        ("position", pa.int32()),  # 0 = the first item of the response (impressions)
        ("score", pa.float32()),  # the model's score (impressions)
        ("model_version", pa.string()),  # null: feedback whose version nobody knows
        ("served_at", pa.float64()),  # epoch seconds the response was served (null when unknown)
        ("ts", pa.int64()),  # epoch seconds the label became known: see the module docstring
        ("clicked", pa.int8()),
        ("dwell_s", pa.float32()),
    ]
)
# A SampleSet over the events: one row per impression, labelled by its feedback.
DEDUPE_KEYS = ("request_id", "item_id")


@dataclass(frozen=True, slots=True)
class Served:
    """What a worker remembers of one /rank response, for feedback that does not say it.

    With the event log on, also the logged items in response order (as hashes of their ids, 8 bytes
    each) and their scores, so a feedback row carries the same position and score as its impression.
    """

    model_version: str
    served_at: float
    user_id: str | None
    item_hashes: np.ndarray | None = None
    scores: np.ndarray | None = None

    @classmethod
    def of(
        cls,
        model_version: str,
        served_at: float,
        user_id: str | None,
        item_ids: Sequence[str] | None = None,
        scores: Sequence[float] | None = None,
    ) -> Served:
        if item_ids is None or scores is None:
            return cls(model_version, served_at, user_id)
        hashes = np.fromiter(map(hash, item_ids), np.int64, len(item_ids))
        return cls(model_version, served_at, user_id, hashes, np.asarray(scores, np.float32))

    @property
    def size(self) -> int:
        """Items remembered."""
        return 0 if self.item_hashes is None else len(self.item_hashes)

    def position(self, item_id: str) -> tuple[int | None, float | None]:
        """(position, score) of `item_id` in the response, or (None, None) when it is not remembered."""
        if self.item_hashes is None or self.scores is None:
            return None, None
        found = np.flatnonzero(self.item_hashes == hash(item_id))
        if not len(found):
            return None, None
        i = int(found[0])
        return i, float(self.scores[i])


class RequestMemory:
    """request id -> Served for the most recent /rank requests: at most `capacity` requests and
    `max_items` remembered items (about 12 bytes each); the oldest are forgotten first.

    Used from the event loop thread only (both /rank and /feedback run there), so it takes no lock.
    """

    def __init__(self, capacity: int, max_items: int = 2_000_000) -> None:
        self.capacity = capacity
        self.max_items = max_items
        self._items: OrderedDict[str, Served] = OrderedDict()
        self._size = 0

    def __len__(self) -> int:
        return len(self._items)

    def remember(self, request_id: str, served: Served) -> None:
        previous = self._items.pop(request_id, None)
        if previous is not None:
            self._size -= previous.size
        self._items[request_id] = served
        self._size += served.size
        while len(self._items) > self.capacity or (self._size > self.max_items and len(self._items) > 1):
            _, forgotten = self._items.popitem(last=False)
            self._size -= forgotten.size

    def get(self, request_id: str) -> Served | None:
        return self._items.get(request_id)


def id_string(value: Any) -> str | None:
    """An id as the event log stores it: a string (17 and "17" are the same id), None for none."""
    return None if value is None else str(value)


class _Buffer:
    """Buffered events, one Python list per column: appending is cheap, a flush makes one Arrow table."""

    def __init__(self) -> None:
        self.columns: dict[str, list[Any]] = {name: [] for name in SCHEMA.names}

    def __len__(self) -> int:
        return len(self.columns["event"])

    def table(self) -> pa.Table:
        return pa.Table.from_pydict(self.columns, schema=SCHEMA)


def _kind_counts(table: pa.Table) -> dict[str, int]:
    return {str(c["values"]): int(c["counts"]) for c in pc.value_counts(table["event"]).to_pylist()}


def events_location(uri: str) -> tuple[Callable[[], Store], str]:
    """(opener of the store, key prefix inside it) for RECPLANE_EVENTS_URI.

    `s3://bucket/prefix`, `file:///dir` and `/dir` name a location of their own; anything else is a
    prefix inside RECPLANE_STORE. The store is opened on first write, so a store that is not
    reachable yet delays the events instead of failing the server.
    """
    text = uri.strip()
    if text.startswith(("s3://", "file://", "/")):
        return (lambda: open_store(text)), ""
    return (lambda: open_store(None)), text.strip("/")


class EventLog:
    """Buffers impression and feedback events and writes them to the store, off the request path."""

    def __init__(
        self,
        open_store_: Callable[[], Store],
        prefix: str,
        *,
        flush_seconds: float,
        flush_records: int,
        max_buffered: int,
        label_window_seconds: int,
        metrics: ServingMetrics | None = None,
    ) -> None:
        self._open_store = open_store_
        self._store: Store | None = None
        self.prefix = prefix.strip("/")
        self.flush_seconds = flush_seconds
        self.flush_records = flush_records
        self.max_buffered = max_buffered
        self.label_window_seconds = label_window_seconds
        self.metrics = metrics
        self._lock = threading.Lock()  # guards _buffer and _unwritten
        self._buffer = _Buffer()
        self._unwritten: pa.Table | None = None  # a batch whose write failed, written with the next flush
        self._flushing = threading.Lock()  # one flush at a time (the timer thread, shutdown)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_error: str | None = None  # of the last flush; None when it succeeded
        host = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:63] or "host"
        self._writer = f"{host}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self._sequence = itertools.count()

    # ---- the request path: append and return --------------------------------------------------
    def log_impressions(
        self,
        request_id: str,
        user_id: str | None,
        model_version: str,
        served_at: float,
        item_ids: Sequence[str],
        scores: Sequence[float],
    ) -> None:
        """One impression row per item, in response order (position 0 first)."""
        n = len(item_ids)
        ts = int(served_at) + self.label_window_seconds
        with self._lock:
            if not self._room(n, IMPRESSION):
                return
            c = self._buffer.columns
            c["event"].extend([IMPRESSION] * n)
            c["request_id"].extend([request_id] * n)
            c["user_id"].extend([user_id] * n)
            c["item_id"].extend(item_ids)
            c["position"].extend(range(n))
            c["score"].extend(scores)
            c["model_version"].extend([model_version] * n)
            c["served_at"].extend([served_at] * n)
            c["ts"].extend([ts] * n)
            c["clicked"].extend([0] * n)
            c["dwell_s"].extend([0.0] * n)
            full = len(self._buffer) >= self.flush_records
        if full:
            self._wake.set()

    def log_feedback(
        self,
        request_id: str,
        item_id: str,
        clicked: bool,
        dwell_seconds: float,
        user_id: str | None,
        model_version: str | None,
        served_at: float | None,
        arrived: float,
        position: int | None = None,
        score: float | None = None,
    ) -> bool:
        """One feedback row; False when the buffer is full and the event was dropped."""
        row = {
            "event": FEEDBACK,
            "request_id": request_id,
            "user_id": user_id,
            "item_id": item_id,
            "position": position,
            "score": score,
            "model_version": model_version,
            "served_at": served_at,
            "ts": int(arrived),
            "clicked": int(clicked),
            "dwell_s": dwell_seconds,
        }
        with self._lock:
            if not self._room(1, FEEDBACK):
                return False
            for name, value in row.items():
                self._buffer.columns[name].append(value)
            full = len(self._buffer) >= self.flush_records
        if full:
            self._wake.set()
        return True

    def _room(self, n: int, kind: str) -> bool:
        """Whether `n` more events fit (call with the lock held); counts them as dropped when not."""
        held = len(self._buffer) + (self._unwritten.num_rows if self._unwritten is not None else 0)
        if held + n <= self.max_buffered:
            return True
        if self.metrics is not None:
            self.metrics.events_dropped.labels(kind).inc(n)
        return False

    @property
    def buffered(self) -> int:
        """Events not written yet (buffered, or kept after a failed write)."""
        with self._lock:
            return len(self._buffer) + (self._unwritten.num_rows if self._unwritten is not None else 0)

    # ---- writing: the background thread and shutdown -----------------------------------------------
    def flush(self) -> int:
        """Write everything buffered as one Parquet file; returns the events written.

        Never raises: a failed write is logged and counted, and its events are kept for the next flush.
        """
        with self._flushing:
            with self._lock:
                buffer, self._buffer = self._buffer, _Buffer()
                table, self._unwritten = self._unwritten, None
            if len(buffer):
                try:
                    fresh = buffer.table()
                except (pa.ArrowException, ValueError, TypeError) as exc:  # a bug, not the client's doing
                    log.exception("dropped %d events the event log could not encode: %s", len(buffer), exc)
                    if self.metrics is not None:
                        for kind in (IMPRESSION, FEEDBACK):
                            self.metrics.events_dropped.labels(kind).inc(buffer.columns["event"].count(kind))
                else:
                    table = fresh if table is None else pa.concat_tables([table, fresh])
            if table is None:
                return 0
            try:
                key = self._write(table)
            except Exception as exc:  # the store is down, a credential expired, ...: keep the events, retry
                self._keep(table)
                self.last_error = f"{type(exc).__name__}: {exc}"
                if self.metrics is not None:
                    self.metrics.event_write_errors.inc()
                log.error(
                    "could not write %d events to the event log (kept, retrying in %gs): %s",
                    table.num_rows,
                    self.flush_seconds,
                    self.last_error,
                )
                return 0
            self.last_error = None
            if self.metrics is not None:
                for kind, count in _kind_counts(table).items():
                    self.metrics.events_written.labels(kind).inc(count)
            log.debug("wrote %d events to %s", table.num_rows, key)
            return int(table.num_rows)

    def _keep(self, table: pa.Table | None) -> None:
        """Put a batch that could not be written back in front of the buffer (the oldest go past the limit)."""
        if table is None:
            return
        with self._lock:
            excess = table.num_rows + len(self._buffer) - self.max_buffered
            if excess > 0:
                if self.metrics is not None:
                    for kind, count in _kind_counts(table.slice(0, excess)).items():
                        self.metrics.events_dropped.labels(kind).inc(count)
                table = table.slice(excess)
            self._unwritten = table if table.num_rows else None

    def _write(self, table: pa.Table) -> str:
        if self._store is None:
            self._store = self._open_store()
        now = datetime.now(UTC)
        name = f"{now:%Y-%m-%d}/{now:%H%M%S}-{self._writer}-{next(self._sequence):06d}.parquet"
        key = f"{self.prefix}/{name}" if self.prefix else name
        sink = io.BytesIO()
        pq.write_table(table, sink, compression="zstd")
        self._store.put_bytes(key, sink.getvalue())
        return key

    def _run(self) -> None:
        while not self._stop.is_set():
            if self.last_error is None:
                self._wake.wait(self.flush_seconds)
            else:  # after a failed write, retry on the timer only: a full buffer must not spin on a dead store
                self._stop.wait(self.flush_seconds)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.flush()
            except Exception:  # flush catches what it expects; the thread must outlive anything else
                log.exception("event log flush failed")

    def start(self) -> EventLog:
        """Start the background flushes (every `flush_seconds`, or when `flush_records` are buffered)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="recplane-event-log", daemon=True)
            self._thread.start()
        return self

    def close(self, timeout: float = 30.0) -> int:
        """Stop the background flushes and write what is left; returns the events written last."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
        written = self.flush()
        if self.buffered:
            log.error("shutting down with %d events not written to the event log", self.buffered)
        return written


def event_log_from_config(config: ServingConfig, metrics: ServingMetrics | None) -> EventLog | None:
    """The EventLog the serving settings ask for (a started one), or None when RECPLANE_EVENTS_URI is unset."""
    if not config.events_uri:
        return None
    opener, prefix = events_location(config.events_uri)
    return EventLog(
        opener,
        prefix,
        flush_seconds=config.events_flush_seconds,
        flush_records=config.events_flush_records,
        max_buffered=config.events_max_buffered,
        label_window_seconds=config.events_label_window_seconds,
        metrics=metrics,
    ).start()
