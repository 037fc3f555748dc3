"""Where a SampleSet's events come from: Parquet, CSV or JSONL files (local or in an
S3 bucket), or the built-in synthetic generator.

A source has an identity (file names, sizes and modification times or ETags,
or the generator's parameters) that goes into the SampleSet's version hash.
"""

from __future__ import annotations

import fnmatch
import glob
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.json as pajson
import pyarrow.parquet as pq

from recplane.api.sampleset import Source
from recplane.store import StoreError

from . import synthetic
from .errors import DataError

URI_FIELD = "spec.source.uri"
EXTENSIONS = {
    "parquet": (".parquet", ".pq"),
    "csv": (".csv", ".csv.gz", ".tsv"),
    "jsonl": (".jsonl", ".ndjson", ".json", ".jsonl.gz", ".ndjson.gz", ".json.gz"),
}
READ_BATCH_ROWS = 262_144


@dataclass(frozen=True)
class SourceFile:
    """One event file: where it is and what identifies its content."""

    name: str
    size: int
    tag: str  # mtime (local) or ETag (S3): changes when the content changes
    fetch: Callable[[], Path] = field(compare=False, repr=False)

    def identity(self) -> dict[str, Any]:
        return {"name": self.name, "size": self.size, "tag": self.tag}


@dataclass
class EventSource:
    """Resolved events: an identity for versioning and a way to stream them."""

    identity: dict[str, Any]
    batches: Callable[[], Iterator[pa.RecordBatch | pa.Table]]
    description: str
    files: list[SourceFile] = field(default_factory=list)


def open_source(source: Source, exclude: set[str] | None = None) -> EventSource:
    """Resolve `source` (files must exist now). `exclude`: file names already consumed (follow mode)."""
    if source.format == "synthetic":
        spec = source.synthetic or synthetic.SyntheticSource()
        return EventSource(
            identity=synthetic.identity(spec),
            batches=lambda: synthetic.generate(spec),
            description=f"synthetic {spec.shape} events ({spec.events:,})",
        )
    if not source.uri:
        raise DataError(URI_FIELD, "is required for file sources: a path, glob or s3://bucket/prefix")
    files = _list_files(source.uri, source.format)
    if exclude:
        files = [f for f in files if f.name not in exclude]
    fmt = source.format

    def batches() -> Iterator[pa.Table]:
        for f in files:
            yield _read_file(f, fmt)

    return EventSource(
        identity={"format": fmt, "files": [f.identity() for f in files]},
        batches=batches,
        description=f"{len(files)} {fmt} file(s) from {source.uri}",
        files=files,
    )


def _list_files(uri: str, fmt: str) -> list[SourceFile]:
    if uri.startswith("s3://"):
        return _list_s3(uri, fmt)
    if "://" in uri and not uri.startswith("file://"):
        raise DataError(URI_FIELD, f"unsupported URI scheme in {uri!r}: use a local path, file:// or s3://")
    path = uri.removeprefix("file://")
    if glob.has_magic(path):
        matches = [Path(p) for p in sorted(glob.glob(path, recursive=True)) if Path(p).is_file()]
    elif Path(path).is_dir():
        matches = sorted(
            p for p in Path(path).rglob("*") if p.is_file() and p.name.endswith(EXTENSIONS[fmt]) and not _hidden(p)
        )
    elif Path(path).is_file():
        matches = [Path(path)]
    else:
        raise DataError(URI_FIELD, f"{uri} does not exist; point it at a {fmt} file, a directory or a glob")
    if not matches:
        raise DataError(URI_FIELD, f"no {fmt} files match {uri} (looked for {', '.join(EXTENSIONS[fmt])})")
    out = []
    for p in matches:
        st = p.stat()
        out.append(SourceFile(name=str(p), size=st.st_size, tag=str(st.st_mtime_ns), fetch=_constant(p)))
    return out


def _constant(path: Path) -> Callable[[], Path]:
    return lambda: path


def _hidden(p: Path) -> bool:
    # Spark/Hive leave _SUCCESS and .crc files next to the data.
    return p.name.startswith((".", "_"))


def _list_s3(uri: str, fmt: str) -> list[SourceFile]:
    from recplane.store.s3 import S3Store, parse_s3_uri

    bucket, prefix = parse_s3_uri(uri)
    pattern = None
    if glob.has_magic(prefix):
        head = prefix.rstrip("/")
        cut = min(i for i, ch in enumerate(head) if ch in "*?[")
        base = head[: head.rfind("/", 0, cut) + 1]
        pattern, prefix = head, base
    try:
        store = S3Store.from_env(f"s3://{bucket}")
        objects = store.list_objects(prefix) or store.list_objects(prefix.rstrip("/"))
    except StoreError as e:
        raise DataError(URI_FIELD, str(e)) from None
    keys = [
        o
        for o in objects
        if (fnmatch.fnmatch(o.key, pattern) if pattern else True)
        and (o.key.endswith(EXTENSIONS[fmt]) or o.key == prefix.rstrip("/"))
    ]
    if not keys:
        raise DataError(URI_FIELD, f"no {fmt} objects match {uri}")
    cache = Path(tempfile.mkdtemp(prefix="recplane-source-"))

    def fetcher(key: str) -> Callable[[], Path]:
        def fetch() -> Path:
            target = cache / key.replace("/", "_")
            if not target.exists():
                store.get_file(key, target)
            return target

        return fetch

    return [
        SourceFile(name=f"s3://{bucket}/{o.key}", size=o.size, tag=str(o.modified), fetch=fetcher(o.key)) for o in keys
    ]


def _read_file(f: SourceFile, fmt: str) -> pa.Table:
    try:
        path = f.fetch()
        if fmt == "parquet":
            return pq.read_table(path)
        if fmt == "csv":
            delimiter = "\t" if f.name.endswith(".tsv") else ","
            return pacsv.read_csv(path, parse_options=pacsv.ParseOptions(delimiter=delimiter))
        return pajson.read_json(path)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError, StoreError) as e:
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DataError(URI_FIELD, f"cannot read {f.name} as {fmt}: {reason}") from None


def read_events(events: EventSource, on_rows: Callable[[int], None] | None = None) -> pa.Table:
    """All events as one table (files with compatible schemas are unified, e.g. int64 + double)."""
    parts: list[pa.Table] = []
    for part in events.batches():
        table = pa.Table.from_batches([part]) if isinstance(part, pa.RecordBatch) else part
        parts.append(table)
        if on_rows:
            on_rows(table.num_rows)
    if not parts:
        raise DataError(URI_FIELD, f"{events.description}: no events")
    try:
        return pa.concat_tables(parts, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
        raise DataError(URI_FIELD, f"the files' columns do not agree: {e}") from None
