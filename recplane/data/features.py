"""Feature transforms: one module for training and serving, so there is no skew.

A `FeatureProcessor` is the fitted form of a FeatureSet: for every feature its
transform with the fitted parameters (vocabularies, quantile boundaries, means
and deviations). It is stored as one feature-spec artifact (`feature_spec.json`
plus `vocab/<feature>.parquet`) and turns raw events into model inputs:

* `transform(table_or_batch)`: the training path, over Arrow data;
* `transform_rows(list_of_dicts)`: the serving path; it builds an Arrow table with
  the training column types and runs the very same code, so the same rows give
  identical outputs.

Sparse ids follow one layout for every transform: id 0 is "missing" (null value or
empty list), vocabularies use id 1 for out-of-vocabulary values and 2.. for the
kept values (most frequent first); hash and cross transforms use 1..buckets;
bucketize and quantile use 1..len(boundaries)+1. `num_embeddings` counts all ids.
Dense transforms: identity, log1p (sign(x)·log(1+|x|), so negative counts stay
finite) and standardize ((x - mean) / std); a missing dense value becomes 0.0 (the
mean, for standardized features).

Everything is vectorised with pyarrow.compute and numpy; nothing loops per row.
"""

from __future__ import annotations

import functools
import json
import os
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from recplane.api.featureset import Feature
from recplane.store import Manifest, Store

from .errors import DataError
from .hashing import HASH_NAME, combine, hash_array

FEATURE_SPEC_FILE = "feature_spec.json"
VOCAB_DIR = "vocab"
FORMAT_VERSION = 1
MISSING_ID = 0
OOV_ID = 1
FIRST_VOCAB_ID = 2

# Canonical column types: what the training data had, and what serving input is cast to.
_KINDS: dict[str, pa.DataType] = {
    "string": pa.string(),
    "int": pa.int64(),
    "float": pa.float64(),
    "bool": pa.bool_(),
    "list<string>": pa.list_(pa.string()),
    "list<int>": pa.list_(pa.int64()),
    "list<float>": pa.list_(pa.float64()),
}


def column_kind(t: pa.DataType) -> str | None:
    """The canonical kind of an Arrow type, or None when features cannot use it."""
    if pa.types.is_dictionary(t):
        return column_kind(t.value_type)
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        return "string"
    if pa.types.is_integer(t):
        return "int"
    if pa.types.is_floating(t):
        return "float"
    if pa.types.is_boolean(t):
        return "bool"
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        inner = column_kind(t.value_type)
        return f"list<{inner}>" if inner in ("string", "int", "float") else None
    return None


@dataclass(frozen=True)
class SparseFeature:
    """A sparse model input: one embedding table (ids in [0, num_embeddings))."""

    name: str
    group: str
    columns: tuple[str, ...]
    transform: str
    num_embeddings: int
    embedding_dim: int | None
    pooling: str
    multi_hot: bool


@dataclass
class TransformedBatch:
    """Model inputs for B rows, as numpy arrays (see `recplane.data.tensors.to_torch`).

    keys: sparse feature names, F of them, in processor order.
    values: int64 [sum(lengths)], the ids of every feature, key-major (all of feature 0, then 1, ...).
    lengths: int32 [F * B], ids per (feature, row), key-major.
    dense: float32 [B, D], dense features in `processor.dense_features` order.
    labels, weights: float32 [B], or None when the input had no such column (serving).
    """

    keys: list[str]
    values: np.ndarray
    lengths: np.ndarray
    dense: np.ndarray
    labels: np.ndarray | None
    weights: np.ndarray | None

    @property
    def batch_size(self) -> int:
        return int(self.dense.shape[0])

    def ids(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(values, lengths [B]) of one sparse feature."""
        b = self.batch_size
        k = self.keys.index(name)
        offsets = np.r_[0, np.cumsum(self.lengths)]
        start, end = offsets[k * b], offsets[(k + 1) * b]
        return self.values[start:end], self.lengths[k * b : (k + 1) * b]


# ---- per-feature encoders -----------------------------------------------------------------
@dataclass(frozen=True)
class _Spec:
    """What the encoders need of a Feature, read straight from the artifact's wire format (validated at fit time)."""

    name: str
    group: str
    type: str
    columns: tuple[str, ...]
    transform: str
    buckets: int
    embedding_dim: int | None
    pooling: str

    @classmethod
    def from_wire(cls, wire: Mapping[str, Any]) -> _Spec:
        transform = wire["transform"]
        return cls(
            name=wire["name"],
            group=wire["group"],
            type=wire["type"],
            columns=tuple(wire["columns"]),
            transform=transform["type"],
            buckets=int(transform.get("buckets") or 0),
            embedding_dim=wire.get("embeddingDim"),
            pooling=wire.get("pooling", "sum"),
        )


@dataclass
class _Encoded:
    ids: np.ndarray  # int64 [n values]
    lengths: np.ndarray | None  # int32 [B] for multi-hot, None when one id per row


def _flatten(col: pa.Array) -> tuple[pa.Array, np.ndarray]:
    """(values, lengths [B]) of a list array; null lists have length 0."""
    lengths = pc.fill_null(pc.list_value_length(col), 0).to_numpy(zero_copy_only=False).astype(np.int32)
    return pc.list_flatten(col), lengths


def _numbers(arr: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(float64 values with nulls as 0, null mask) of a numeric array."""
    # Nulls arrive as NaN; a NaN in the data is as missing as a null.
    values = arr.cast(pa.float64()).to_numpy(zero_copy_only=False)
    if not values.flags.writeable:
        values = values.copy()
    nulls = np.isnan(values)
    values[nulls] = 0.0
    return values, nulls


def _with_missing(encoded: np.ndarray, lengths: np.ndarray) -> _Encoded:
    """Multi-hot: an empty or null list becomes one MISSING id, so every bag has at least one id."""
    empty = lengths == 0
    if not empty.any():
        return _Encoded(encoded, lengths)
    new_lengths = np.where(empty, 1, lengths).astype(np.int32)
    out = np.full(int(new_lengths.sum()), MISSING_ID, dtype=np.int64)
    starts = np.r_[0, np.cumsum(new_lengths)[:-1]]
    # Positions of the original values inside the new layout.
    row_of_value = np.repeat(np.arange(len(lengths)), lengths)
    within = np.arange(len(encoded)) - np.repeat(np.r_[0, np.cumsum(lengths)[:-1]], lengths)
    out[starts[row_of_value] + within] = encoded
    return _Encoded(out, new_lengths)


class _SparseEncoder:
    def __init__(self, feature: _Spec, params: Mapping[str, Any], vocabulary: pa.Table | None) -> None:
        self.feature = feature
        self.t = feature.transform
        self.multi_hot = feature.type == "multi_hot"
        self.buckets = feature.buckets
        self.boundaries = np.asarray(params.get("boundaries") or [], dtype=np.float64)
        self.num_embeddings = int(params["numEmbeddings"])
        self._cached: tuple[pa.Array, np.ndarray] | None = None
        self._vocabulary = vocabulary
        self._index: tuple[_HashIndex, np.ndarray] | None = None
        if self.t == "vocabulary" and vocabulary is None:
            raise ValueError(f"feature {feature.name}: vocabulary missing from the feature spec")

    def encode_into(self, columns: Sequence[pa.Array], out: np.ndarray) -> None:
        """Single-valued features: write the B ids straight into `out` (a slice of the batch's values)."""
        col = columns[0]
        if self.t != "cross" and pa.types.is_dictionary(col.type):
            _gather_dictionary(col, self._dictionary_ids, out)
        else:
            out[:] = self.encode(columns).ids

    def encode(self, columns: Sequence[pa.Array]) -> _Encoded:
        if self.t == "cross":
            hashes, nulls = zip(*(hash_array(c) for c in columns), strict=True)
            h = combine(list(hashes))
            ids = (h % np.uint64(self.buckets)).astype(np.int64) + 1
            ids[np.logical_or.reduce(nulls)] = MISSING_ID
            return _Encoded(ids, None)
        col = columns[0]
        lengths = None
        if self.multi_hot:
            col, lengths = _flatten(col)
        ids = self._ids(col)
        if lengths is None:
            return _Encoded(ids, None)
        return _with_missing(ids, lengths)

    def _ids(self, values: pa.Array, distinct: bool = False) -> np.ndarray:
        """Ids of `values`; `distinct`: the values are already unique (a dictionary)."""
        if pa.types.is_dictionary(values.type):
            return _gather_dictionary(values, self._dictionary_ids)
        if self.t in ("bucketize", "quantile"):
            x, nulls = _numbers(values)
            ids = np.searchsorted(self.boundaries, x, side="right").astype(np.int64) + 1
            ids[nulls] = MISSING_ID
            return ids
        if not distinct and len(values) > _ENCODE_ABOVE and _is_text(values.type):
            # Hash and look up each distinct string once (same result, far less work).
            return _gather_dictionary(
                pc.dictionary_encode(values), lambda d: np.append(self._distinct_ids(d), np.int64(MISSING_ID))
            )
        h, nulls = hash_array(values)
        ids = (h % np.uint64(self.buckets)).astype(np.int64) + 1 if self.t == "hash" else self.lookup(h)
        ids[nulls] = MISSING_ID
        return ids

    def _distinct_ids(self, values: pa.Array) -> np.ndarray:
        return self._ids(values, distinct=True)

    def _dictionary_ids(self, dictionary: pa.Array) -> np.ndarray:
        """Ids of each dictionary entry, plus MISSING_ID at the end (where null indices point)."""
        # Parquet row groups share one dictionary across the batches read from them: map it once.
        cached = self._cached  # read once: another thread may replace it
        if cached is not None and _same_values(cached[0], dictionary):
            return cached[1]
        ids = np.append(self._distinct_ids(dictionary), np.int64(MISSING_ID))
        self._cached = (dictionary, ids)
        return ids

    def lookup(self, h: np.ndarray) -> np.ndarray:
        """Vocabulary ids of uint64 hashes (OOV_ID when absent)."""
        index, vocab_ids = self._vocab_index()
        pos = index.find(h)
        found = pos >= 0
        ids = np.full(len(h), OOV_ID, dtype=np.int64)
        ids[found] = vocab_ids[pos[found]]
        return ids

    def _vocab_index(self) -> tuple[_HashIndex, np.ndarray]:
        """The vocabulary's lookup index and the id at each of its positions (built once)."""
        built = self._index
        if built is None:
            assert self._vocabulary is not None
            # Hashes computed while fitting come along; a loaded artifact recomputes them from the values.
            if "hash" in self._vocabulary.column_names:
                hashes = self._vocabulary["hash"].to_numpy()
            else:
                hashes, _ = hash_array(self._vocabulary["value"])
            order = np.argsort(hashes, kind="stable")
            built = self._index = (_HashIndex(hashes[order]), (order + FIRST_VOCAB_ID).astype(np.int64))
        return built


_ENCODE_ABOVE = 2048


class _HashIndex:
    """Exact lookup in sorted uint64 keys: a directory of where each value of their top bits starts
    (about one key per slot), so most lookups read one directory entry and one key, where a binary
    search over a million keys reads twenty scattered ones."""

    def __init__(self, keys: np.ndarray) -> None:
        self.size = len(keys)
        self.keys = np.append(keys, np.uint64(0))  # one spare key: a probe past the end reads something
        self.bits = max(1, min(self.size.bit_length(), 30))
        self.shift = np.uint64(64 - self.bits)
        slots = np.bincount((keys >> self.shift).astype(np.intp), minlength=1 << self.bits)
        starts = np.zeros(len(slots) + 1, dtype=np.int64 if self.size >= 1 << 31 else np.int32)
        np.cumsum(slots, out=starts[1:])
        # [start, end) of each slot side by side: one gather reads both.
        self.bounds = np.lib.stride_tricks.as_strided(starts, shape=(len(slots), 2), strides=starts.strides * 2)

    def find(self, h: np.ndarray) -> np.ndarray:
        """The position of each of `h` in the keys (the first, for a key held twice), or -1 (intp)."""
        if self.size == 0 or len(h) == 0:
            return np.full(len(h), -1, dtype=np.intp)
        bounds = self.bounds[(h >> self.shift).astype(np.intp)]
        pos, end = bounds[:, 0].astype(np.intp), bounds[:, 1]
        hit = self.keys[pos] == h
        hit &= pos < end
        out = np.where(hit, pos, -1)
        rest = np.flatnonzero(~hit & (pos + 1 < end))  # slots holding more keys: step through them
        pos, end, h = pos[rest] + 1, end[rest], h[rest]
        while len(rest):
            hit = self.keys[pos] == h
            out[rest[hit]] = pos[hit]
            more = ~hit & (pos + 1 < end)
            rest, pos, end, h = rest[more], pos[more] + 1, end[more], h[more]
        return out


def _is_text(t: pa.DataType) -> bool:
    return bool(pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_binary(t))


def _same_values(a: pa.Array, b: pa.Array) -> bool:
    """True when two (dictionary) arrays hold the same values: batches read from one Parquet row group
    carry copies of its dictionary (or share one, when sliced from one read), and comparing them is far
    cheaper than mapping them again."""
    if len(a) != len(b) or a.type != b.type:
        return False
    if a.offset == b.offset and all(_same_buffer(x, y) for x, y in zip(a.buffers(), b.buffers(), strict=True)):
        return True  # the same memory: Arrow buffers never change
    return bool(a.equals(b))


def _same_buffer(x: pa.Buffer | None, y: pa.Buffer | None) -> bool:
    return x is y or (x is not None and y is not None and x.address == y.address and x.size == y.size)


def _index_dtype(t: pa.DataType) -> np.dtype:
    """numpy dtype of a dictionary's integer index type (without pyarrow's pandas-based helper)."""
    return np.dtype(f"{'int' if pa.types.is_signed_integer(t) else 'uint'}{t.bit_width}")


def _gather_dictionary(values: pa.DictionaryArray, ids_of: Any, out: np.ndarray | None = None) -> np.ndarray:
    """Ids of a dictionary array: `ids_of(dictionary)` maps each entry once (with MISSING_ID appended
    for null indices), then every row gathers its entry's id."""
    per_entry = ids_of(values.dictionary)
    indices = values.indices
    if indices.null_count:
        indices = pc.fill_null(indices, len(per_entry) - 1)
    idx = np.frombuffer(
        indices.buffers()[1],
        dtype=_index_dtype(indices.type),
        count=len(indices),
        offset=indices.offset * indices.type.byte_width,
    )
    # mode='clip': the indices are in range, and the default 'raise' buffers the output (several times slower).
    return np.take(per_entry, idx, out=out, mode="clip")


# ---- parallel encoding --------------------------------------------------------------------
# Batches this large encode their features in parallel: numpy's kernels and Arrow's release the GIL.
_PARALLEL_ROWS = 16_384
_THREADS = max(1, min(pa.cpu_count(), 8))
_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def _pool() -> ThreadPoolExecutor | None:
    """The shared encoding threads (None with one CPU: Arrow's `cpu_count`, which honours OMP_NUM_THREADS)."""
    global _POOL
    if _THREADS <= 1:
        return None
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(_THREADS, thread_name_prefix="recplane-encode")
        return _POOL


def _forget_pool() -> None:
    """A forked child has none of the parent's threads: it starts its own pool when it needs one."""
    global _POOL, _POOL_LOCK
    _POOL, _POOL_LOCK = None, threading.Lock()


os.register_at_fork(after_in_child=_forget_pool)


def _by_name(data: pa.Table | pa.RecordBatch) -> dict[str, pa.Array | pa.ChunkedArray]:
    """The columns of `data` by name, looked up once per batch (Arrow finds a name by a linear search)."""
    return dict(zip(data.column_names, data.columns, strict=True))


def _transpose_into(block: np.ndarray, dense: np.ndarray, lo: int, hi: int) -> None:
    """Rows [lo, hi) of `dense` [B, D] from the columns of `block` [D, B]."""
    dense[lo:hi] = block[:, lo:hi].T


def _encode_single(encoder: _SparseEncoder, columns: Sequence[pa.Array], out: np.ndarray, lengths: np.ndarray) -> None:
    """A single-valued feature: its B ids into `out`, and one id per row into `lengths`."""
    encoder.encode_into(columns, out)
    lengths.fill(1)


def _run(tasks: Sequence[Callable[[], Any]], pool: ThreadPoolExecutor | None) -> list[Any]:
    """Results of `tasks` in order: run in `pool` when given, else one after another (also when called
    from one of the pool's own threads, which must never wait on the pool)."""
    if pool is None or len(tasks) < 2 or threading.current_thread().name.startswith("recplane-encode"):
        return [task() for task in tasks]
    return [f.result() for f in [pool.submit(task) for task in tasks]]


class _DenseEncoder:
    def __init__(self, feature: _Spec, params: Mapping[str, Any]) -> None:
        self.t = feature.transform
        self.mean = float(params.get("mean") or 0.0)
        std = float(params.get("std") or 0.0)
        self.std = std if std > 1e-12 else 1.0

    def encode(self, col: pa.Array) -> np.ndarray:
        out = np.empty(len(col), dtype=np.float64)
        self.encode_into(col, out)
        return out.astype(np.float32)

    def encode_into(self, col: pa.Array, out: np.ndarray) -> None:
        """Write the float64 values into `out` (contiguous, e.g. a row of the dense block); missing values
        are 0.0. Every step works in place: no temporaries the size of the batch but one."""
        restore = _numbers_into(col, out)
        if self.t == "log1p":
            magnitude = np.abs(out)
            np.log1p(magnitude, out=magnitude)
            np.copysign(magnitude, out, out=out)  # sign(x)·log1p(|x|), in two passes instead of four
            out += 0.0  # ... and +0.0 where x is -0.0, as np.sign(-0.0) * 0.0 gives; missing (0.0) stays 0.0
        elif self.t == "standardize":
            np.subtract(out, self.mean, out=out)
            np.divide(out, self.std, out=out)
            restore()  # missing values back to 0.0


def _numbers_into(arr: pa.Array, out: np.ndarray) -> Callable[[], None]:
    """Write `arr` into the float64 array `out` with missing values (null, NaN) as 0.0; returns a function
    that sets them to 0.0 again (after a transform moved them).

    Integer and float columns convert straight from their value buffer with numpy (Arrow's checked cast
    is several times slower, and refuses integers beyond 2**53, which become the nearest float here).
    Nulls in integer columns are zeroed by multiplying with the validity (branch-free; the values are
    finite and never -0.0, so `+= 0.0` turns the -0.0 of negative slots into 0.0 and changes nothing else)."""
    t = arr.type
    if pa.types.is_integer(t) or (pa.types.is_floating(t) and t.bit_width > 16):
        dtype = _index_dtype(t) if pa.types.is_integer(t) else np.dtype(f"float{t.bit_width}")
        out[...] = np.frombuffer(arr.buffers()[1], dtype=dtype, count=len(arr), offset=arr.offset * dtype.itemsize)
    else:  # booleans (bit-packed), half floats
        out[...] = arr.cast(pa.float64()).to_numpy(zero_copy_only=False)
    if pa.types.is_integer(t):
        if not arr.null_count:
            return lambda: None
        valid = _validity(arr)

        def zero_nulls() -> None:
            np.multiply(out, valid, out=out)
            np.add(out, 0.0, out=out)

        zero_nulls()
        return zero_nulls
    missing = np.isnan(out)  # nulls arrive as NaN from Arrow's conversion; a NaN is as missing as a null
    if arr.null_count:
        missing |= ~_validity(arr)
    if not missing.any():
        return lambda: None

    def zero_missing() -> None:
        np.copyto(out, 0.0, where=missing)

    zero_missing()
    return zero_missing


def _validity(arr: pa.Array) -> np.ndarray:
    """bool [n]: True where `arr` holds a value (its validity bitmap, unpacked)."""
    bits = np.frombuffer(arr.buffers()[0], dtype=np.uint8)
    return np.unpackbits(bits, count=arr.offset + len(arr), bitorder="little")[arr.offset :].view(bool)


# ---- the processor -----------------------------------------------------------------------
class FeatureProcessor:
    """The fitted feature catalog: raw events in, model inputs (TransformedBatch) out."""

    def __init__(self, config: dict[str, Any], vocabularies: Mapping[str, pa.Table]) -> None:
        """`config`: the feature-spec JSON; `vocabularies`: feature name -> table (value, count), most frequent
        first (row i is id i + 2)."""
        if config.get("hash") != HASH_NAME:
            raise ValueError(f"feature spec uses hash {config.get('hash')!r}; this recplane computes {HASH_NAME!r}")
        self.config = config
        self.vocabularies = dict(vocabularies)
        self.column_kinds: dict[str, str] = dict(config["columns"])
        self.label_column: str | None = config.get("labelColumn")
        self.weight_column: str | None = config.get("weightColumn")
        self._specs: list[_Spec] = []
        self._sparse: list[tuple[SparseFeature, _SparseEncoder]] = []
        self._dense: list[tuple[str, str, _DenseEncoder]] = []
        for entry in config["features"]:
            feature = _Spec.from_wire(entry["feature"])
            params = entry.get("params", {})
            self._specs.append(feature)
            if feature.type == "dense":
                self._dense.append((feature.name, feature.columns[0], _DenseEncoder(feature, params)))
                continue
            encoder = _SparseEncoder(feature, params, self.vocabularies.get(feature.name))
            info = SparseFeature(
                name=feature.name,
                group=feature.group,
                columns=feature.columns,
                transform=feature.transform,
                num_embeddings=encoder.num_embeddings,
                embedding_dim=feature.embedding_dim,
                pooling=feature.pooling,
                multi_hot=feature.type == "multi_hot",
            )
            self._sparse.append((info, encoder))
        # Vocabulary lookup indexes now, on parallel threads: loading pays for them, not the first request.
        _run([encoder._vocab_index for _, encoder in self._sparse if encoder.t == "vocabulary"], _pool())

    # -- description
    @functools.cached_property
    def features(self) -> list[Feature]:
        """The catalog's Feature specs, in order."""
        return [Feature.model_validate(e["feature"]) for e in self.config["features"]]

    @property
    def sparse_features(self) -> list[SparseFeature]:
        return [s for s, _ in self._sparse]

    @property
    def dense_features(self) -> list[str]:
        return [name for name, _, _ in self._dense]

    @property
    def groups(self) -> dict[str, str]:
        """Feature name -> group (id, reader, author, context, environment, material)."""
        return {f.name: f.group for f in self._specs}

    @property
    def input_columns(self) -> list[str]:
        """The raw columns the features read, in first-use order."""
        seen: dict[str, None] = {}
        for f in self._specs:
            for c in f.columns:
                seen.setdefault(c, None)
        return list(seen)

    @property
    def input_schema(self) -> pa.Schema:
        return pa.schema([(c, self.column_type(c)) for c in self.input_columns])

    def column_type(self, column: str) -> pa.DataType:
        """The Arrow type raw values of an input column are converted to (the training column's kind)."""
        return _KINDS[self.column_kinds[column]]

    def row_type(self, column: str) -> pa.DataType:
        """The Arrow type raw row values of `column` convert to: its kind for an input column, float32
        for a column no feature reads (a label or weight given with the rows)."""
        return self.column_type(column) if column in self.column_kinds else pa.float32()

    @property
    def encoders(self) -> tuple[list[tuple[SparseFeature, _SparseEncoder]], list[tuple[str, str, _DenseEncoder]]]:
        """The per-feature encoders `transform` runs: (sparse feature, encoder) in key order, and
        (feature name, column, encoder) of the dense features in `dense_features` order."""
        return self._sparse, self._dense

    @property
    def stats(self) -> list[dict[str, Any]]:
        """Per-feature statistics (FeatureStats wire format) from materialisation."""
        return [dict(e.get("stats", {"name": e["feature"]["name"]})) for e in self.config["features"]]

    def params(self, name: str) -> dict[str, Any]:
        for e in self.config["features"]:
            if e["feature"]["name"] == name:
                return dict(e.get("params", {}))
        raise KeyError(name)

    # -- transforms
    def transform(self, data: pa.Table | pa.RecordBatch) -> TransformedBatch:
        """Model inputs for every row of `data` (must hold `input_columns`; label/weight when present).

        Large batches encode their features in parallel threads (as many as Arrow's `cpu_count()`, which
        honours OMP_NUM_THREADS); the output is the same whatever the number of threads.
        """
        present = _by_name(data)
        columns = {c: self._column(present, c) for c in self.input_columns}
        b = data.num_rows
        pool = _pool() if b >= _PARALLEL_ROWS else None
        multi_hot = [(info, encoder) for info, encoder in self._sparse if info.multi_hot]
        encoded = _run(
            [functools.partial(encoder.encode, [columns[c] for c in info.columns]) for info, encoder in multi_hot],
            pool,
        )
        multi = {info.name: enc for (info, _), enc in zip(multi_hot, encoded, strict=True)}
        # One allocation for all ids; single-valued features write their B ids in place.
        total = b * (len(self._sparse) - len(multi)) + sum(len(e.ids) for e in multi.values())
        values = np.empty(total, dtype=np.int64)
        # Filled by the tasks: the first writes to fresh memory are page faults, spread over the threads.
        lengths = np.empty(b * len(self._sparse), dtype=np.int32)
        tasks: list[Callable[[], object]] = []
        pos = 0
        for k, (info, encoder) in enumerate(self._sparse):
            if info.multi_hot:
                enc = multi[info.name]
                values[pos : pos + len(enc.ids)] = enc.ids
                lengths[k * b : (k + 1) * b] = enc.lengths
                pos += len(enc.ids)
            else:
                cols = [columns[c] for c in info.columns]
                tasks.append(
                    functools.partial(
                        _encode_single, encoder, cols, values[pos : pos + b], lengths[k * b : (k + 1) * b]
                    )
                )
                pos += b
        # Dense features into the rows of a [D, B] block (each contiguous), then transposing copies.
        block = np.empty((len(self._dense), b), dtype=np.float64)
        for j, (_, column, d_encoder) in enumerate(self._dense):
            tasks.append(functools.partial(d_encoder.encode_into, columns[column], block[j]))
        labels = functools.partial(self._optional_float, present, self.label_column)
        weights = functools.partial(self._optional_float, present, self.weight_column)
        *_, label_values, weight_values = _run([*tasks, labels, weights], pool)
        dense = np.empty((b, len(self._dense)), dtype=np.float32)
        # float64 -> float32, rounded as astype does; in row ranges side by side, once the block is full.
        ranges = [(r, min(r + _PARALLEL_ROWS, b)) for r in range(0, b, _PARALLEL_ROWS)]
        _run([functools.partial(_transpose_into, block, dense, lo, hi) for lo, hi in ranges], pool)
        return TransformedBatch(
            keys=[s.name for s, _ in self._sparse],
            values=values,
            lengths=lengths,
            dense=dense,
            labels=label_values,
            weights=weight_values,
        )

    def sparse_ids(self, data: pa.Table | pa.RecordBatch, names: Sequence[str]) -> dict[str, np.ndarray]:
        """The ids of some sparse features only (flattened for multi-hot), e.g. to measure OOV rates."""
        wanted = [(info, encoder) for info, encoder in self._sparse if info.name in names]
        present = _by_name(data)
        tasks = [
            functools.partial(encoder.encode, [self._column(present, c) for c in info.columns])
            for info, encoder in wanted
        ]
        encoded = _run(tasks, _pool() if data.num_rows >= _PARALLEL_ROWS else None)
        return {info.name: enc.ids for (info, _), enc in zip(wanted, encoded, strict=True)}

    def transform_rows(self, rows: Sequence[Mapping[str, Any]]) -> TransformedBatch:
        """The serving path: raw events as dicts (missing keys = missing values) -> model inputs."""
        arrays = {}
        for c in [*self.input_columns, *(x for x in (self.label_column, self.weight_column) if x)]:
            if c in self.column_kinds or any(c in r for r in rows):
                arrays[c] = _column_from_rows(rows, c, self.row_type(c))
        return self.transform(pa.table(arrays) if arrays else pa.table({"_": pa.nulls(len(rows))}))

    def _column(self, present: Mapping[str, pa.Array | pa.ChunkedArray], name: str) -> pa.Array:
        """Column `name` of the input (`present`: its columns by name), as the kind the features expect."""
        col = present.get(name)
        if col is None:
            raise DataError(name, f"column {name!r} is missing from the input; the features need {self.input_columns}")
        if isinstance(col, pa.ChunkedArray):
            col = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
        want = self.column_kinds[name]
        if column_kind(col.type) == want:
            return col
        try:
            return col.cast(_KINDS[want])
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
            raise DataError(name, f"expected {want} values, got {col.type}: {str(e).splitlines()[0]}") from None

    @staticmethod
    def _optional_float(present: Mapping[str, pa.Array | pa.ChunkedArray], name: str | None) -> np.ndarray | None:
        col = present.get(name) if name else None
        if col is None:
            return None
        return pc.fill_null(col.cast(pa.float32()), 0.0).to_numpy(zero_copy_only=False).astype(np.float32)

    # -- the artifact
    def save(self, directory: Path) -> None:
        """Write `feature_spec.json` and `vocab/<feature>.parquet` (value, count) into `directory`."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)  # a catalog without vocabularies writes no vocab/ first
        writes = []
        for name, vocab in self.vocabularies.items():
            rel = self.params(name)["vocabulary"]
            (directory / rel).parent.mkdir(parents=True, exist_ok=True)
            # The values are distinct: a dictionary encoding would only be tried and dropped.
            table = vocab.select(["value", "count"])
            writes.append(functools.partial(pq.write_table, table, directory / rel, use_dictionary=False))
        _run(writes, _pool())  # Parquet encoding releases the GIL
        (directory / FEATURE_SPEC_FILE).write_text(json.dumps(self.config, indent=2, sort_keys=True))

    @classmethod
    def load(cls, directory: Path | str) -> FeatureProcessor:
        """Load a feature-spec artifact written by `save` (a FeatureSet version directory)."""
        directory = Path(directory)
        config = json.loads((directory / FEATURE_SPEC_FILE).read_text())
        if config.get("formatVersion") != FORMAT_VERSION:
            raise ValueError(f"{directory}: feature spec format {config.get('formatVersion')} is not supported")
        vocabularies = {}
        for entry in config["features"]:
            rel = entry.get("params", {}).get("vocabulary")
            if rel:
                vocabularies[entry["feature"]["name"]] = pq.read_table(directory / rel)
        return cls(config, vocabularies)

    @classmethod
    def from_store(cls, store: Store, manifest: Manifest) -> FeatureProcessor:
        """Load the processor of a stored FeatureSet version (downloaded and verified when remote)."""
        return cls.load(store.fetch_version(manifest))


def _column_from_rows(rows: Sequence[Mapping[str, Any]], name: str, t: pa.DataType) -> pa.Array:
    return column_from_values([r.get(name) for r in rows], name, t)


def column_from_values(values: list[Any], name: str, t: pa.DataType) -> pa.Array:
    """Raw values of column `name` (row i is `values[i]`) as an Arrow array of type `t`, converting
    what converts (e.g. "7" for an int column); a DataError names the first row that does not."""
    try:
        return pa.array(values, type=t)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError):
        pass
    try:  # e.g. "7" for an int column, 3 for a float one
        return pa.array(values).cast(t)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, TypeError, OverflowError):
        pass
    for i, v in enumerate(values):  # only on the error path: find the row to name
        try:
            pa.array([v]).cast(t)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, TypeError, OverflowError):
            raise DataError(f"rows[{i}].{name}", f"expected {t}, got {v!r}") from None
    raise DataError(name, f"values do not convert to {t} together (mixed types?)")
