"""Materialising a FeatureSet: statistics and vocabularies over a SampleSet, streamed.

One pass over the training split (string columns read dictionary-encoded, so most
work happens once per distinct value of a row group), with bounded state per feature.
Features that share no column are fitted in parallel threads, each streaming only its
own columns through the stored row groups:

* vocabulary: value counts keyed by the stable hash, kept sorted by it; each row
  group's dictionary is counted with one bincount and hashed once, and dictionaries
  are merged into the counts by one sort whenever they add up to the counts' size;
* hash, cross, bucketize, quantile: a HyperLogLog sketch for the cardinality;
  quantile also keeps a fixed-size uniform sample (bottom-k of random keys) for its
  boundaries;
* dense: count, mean and M2 merged with Chan's parallel formula.

A second, cheap pass over the validation split measures the vocabularies'
out-of-vocabulary rate on data they were not built from: what serving will see.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from recplane.api.featureset import Feature, FeatureSetSpec
from recplane.store import Manifest, Store

from .errors import DataError
from .features import (
    FEATURE_SPEC_FILE,
    FIRST_VOCAB_ID,
    FORMAT_VERSION,
    MISSING_ID,
    OOV_ID,
    VOCAB_DIR,
    FeatureProcessor,
    _flatten,
    _index_dtype,
    _same_values,
    column_kind,
)
from .hashing import HASH_NAME, combine, hash_array
from .progress import RowProgress
from .samples import MAX_ROW_GROUP_ROWS, iter_record_batches, split_files, split_rows

# One batch per stored row group: each column's dictionary is decoded and hashed once per row
# group, and memory stays bounded by the row-group size (samples.MAX_ROW_GROUP_ROWS), not the row count.
FIT_BATCH_ROWS = MAX_ROW_GROUP_ROWS
_HLL_BITS = 14
_QUANTILE_SAMPLE = 200_000
_MERGE_ROWS = 2_000_000

__all__ = ["FEATURE_SPEC_FILE", "fit_processor", "validate_columns"]


def _as_array(col: pa.Array | pa.ChunkedArray) -> pa.Array:
    if isinstance(col, pa.ChunkedArray):
        return col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    return col


class _HyperLogLog:
    """Cardinality sketch over 64-bit hashes: 2**14 registers, about 1% error."""

    def __init__(self) -> None:
        self.registers = np.zeros(1 << _HLL_BITS, dtype=np.uint8)

    def add(self, hashes: np.ndarray) -> None:
        if len(hashes) == 0:
            return
        idx = (hashes >> np.uint64(64 - _HLL_BITS)).astype(np.int64)
        rest = (hashes << np.uint64(_HLL_BITS)) | np.uint64(1 << (_HLL_BITS - 1))
        rank = (64 - np.floor(np.log2(rest.astype(np.float64)))).astype(np.uint8)
        np.maximum.at(self.registers, idx, rank)

    def estimate(self) -> int:
        m = float(len(self.registers))
        alpha = 0.7213 / (1 + 1.079 / m)
        raw = alpha * m * m / np.sum(np.exp2(-self.registers.astype(np.float64)))
        zeros = int((self.registers == 0).sum())
        if raw <= 2.5 * m and zeros:
            return round(m * np.log(m / zeros))
        return round(raw)


def _distinct_hashes(arr: pa.Array) -> np.ndarray:
    """Hashes of the non-null values (once per dictionary entry when dictionary-encoded)."""
    if pa.types.is_dictionary(arr.type):
        used = np.unique(pc.drop_null(arr.indices).to_numpy(zero_copy_only=False))
        h, nulls = hash_array(arr.dictionary.take(pa.array(used)))
        return h[~nulls]
    h, nulls = hash_array(arr)
    return h[~nulls]


class _Accumulator:
    def __init__(self, index: int, feature: Feature) -> None:
        self.index = index
        self.feature = feature
        self.rows = 0
        self.missing = 0

    def values_of(self, batch: pa.RecordBatch) -> pa.Array:
        """The feature's (flattened) values in `batch`, counting rows and missing values."""
        col = _as_array(batch.column(self.feature.columns[0]))
        self.rows += len(col)
        if self.feature.type == "multi_hot":
            values, lengths = _flatten(col)
            self.missing += int((lengths == 0).sum())
            return values
        if pa.types.is_floating(col.type) and col.null_count < len(col) and pc.any(pc.is_nan(col)).as_py():
            col = pc.if_else(pc.is_nan(col), pa.scalar(None, col.type), col)  # NaN is as missing as null
        self.missing += col.null_count
        return col

    def update(self, batch: pa.RecordBatch) -> None:
        raise NotImplementedError

    def finish(self) -> tuple[dict[str, Any], dict[str, Any], pa.Table | None]:
        """(params, stats, vocabulary table or None)."""
        raise NotImplementedError

    def base_stats(self) -> dict[str, Any]:
        return {"name": self.feature.name, "nullRate": round(self.missing / self.rows, 6) if self.rows else 0.0}


class _VocabularyAccumulator(_Accumulator):
    """Value counts keyed by the stable hash (cheap to sort on): `hashes` sorted, their `counts` and one
    original value of each (`values`, aligned). Each row group's dictionary is counted with one bincount
    and hashed once; dictionaries wait in `parts` until they hold as many entries as the state (at least
    `_MERGE_ROWS`), then one sort merges them in: memory stays near the vocabulary's size, and the work
    near one sort of each dictionary."""

    def __init__(
        self, index: int, feature: Feature, value_type: pa.DataType, grow: bool = False, base: pa.Table | None = None
    ) -> None:
        super().__init__(index, feature)
        self.value_type = value_type
        self.grow = grow  # the table holds maxSize ids from the first version on, so versions line up
        self.base = base  # the previous version's vocabulary (ids 2.. in row order), kept as it is
        self.hashes = np.zeros(0, dtype=np.uint64)
        self.counts = np.zeros(0, dtype=np.int64)
        self.values: pa.Array = pa.array([], value_type)
        self.parts: list[tuple[np.ndarray, np.ndarray, pa.Array]] = []  # (hashes, counts, values)
        self.pending = 0
        self.current: tuple[pa.Array, np.ndarray] | None = None

    def update(self, batch: pa.RecordBatch) -> None:
        values = self.values_of(batch)
        if not pa.types.is_dictionary(values.type):
            values = pc.dictionary_encode(values)
        dictionary = values.dictionary
        counts = _count_indices(values.indices, len(dictionary))
        # Batches of one Parquet row group share its dictionary: count across them, flush once.
        if self.current is not None and _same_values(self.current[0], dictionary):
            self.current[1][: len(counts)] += counts
            return
        self._flush()
        self.current = (dictionary, counts)

    def _flush(self) -> None:
        if self.current is None:
            return
        dictionary, counts = self.current
        self.current = None
        used = np.flatnonzero(counts)
        if len(used) < len(dictionary):
            dictionary = dictionary.take(pa.array(used))
            counts = counts[used]
        hashes, nulls = hash_array(dictionary)
        if nulls.any():
            hashes, counts, dictionary = hashes[~nulls], counts[~nulls], dictionary.filter(pa.array(~nulls))
        self.parts.append((hashes, counts, dictionary.cast(self.value_type)))
        self.pending += len(hashes)
        if self.pending > max(_MERGE_ROWS, len(self.hashes)):
            self._merge()

    def _merge(self) -> None:
        """Fold the waiting dictionaries into the sorted state."""
        self._flush()
        if not self.parts:
            return
        hashes = np.concatenate([self.hashes, *(h for h, _, _ in self.parts)])
        counts = np.concatenate([self.counts, *(c for _, c, _ in self.parts)])
        order = np.argsort(hashes)
        hashes, counts = hashes[order], counts[order]
        starts = np.flatnonzero(np.r_[True, hashes[1:] != hashes[:-1]])
        if len(starts) < len(hashes):
            # Each hash keeps the value seen first (the lowest position), whatever order the sort left.
            first = np.minimum.reduceat(order, starts)
            hashes, counts = hashes[starts], np.add.reduceat(counts, starts)
        else:
            first = order
        values = pa.concat_arrays([self.values, *(v for _, _, v in self.parts)])
        self.hashes, self.counts, self.values = hashes, counts, values.take(pa.array(first))
        self.parts, self.pending = [], 0

    def finish(self) -> tuple[dict[str, Any], dict[str, Any], pa.Table | None]:
        t = self.feature.transform
        self._merge()
        hashes, counts, values = self.hashes, self.counts, self.values
        total = int(counts.sum())
        eligible = counts >= t.min_count
        parts: list[pa.Table] = []
        kept_count = 0
        if self.base is not None:
            base, kept_count = self._keep_base(hashes, counts, eligible)
            parts.append(base)
        room = max(t.max_size - sum(p.num_rows for p in parts), 0)
        frequent = np.flatnonzero(eligible)  # in hash order
        # Most frequent first; ties broken by the hash (a stable sort keeps hash order among equal
        # counts), so the order never depends on batch order.
        order = frequent[_by_count(counts[frequent])][:room]
        kept_count += int(counts[order].sum())
        new = {"value": values.take(pa.array(order)), "count": counts[order], "hash": hashes[order]}
        parts.append(pa.table(new))
        vocab = pa.concat_tables(parts).combine_chunks() if len(parts) > 1 else parts[0]
        stats = self.base_stats()
        stats["cardinality"] = len(hashes)
        stats["oovRate"] = round(1.0 - kept_count / total, 6) if total else 0.0
        params = {
            "numEmbeddings": (t.max_size if self.grow else vocab.num_rows) + FIRST_VOCAB_ID,
            "vocabulary": f"{VOCAB_DIR}/{self.feature.name}.parquet",
            "vocabularySize": vocab.num_rows,
        }
        return params, stats, vocab

    def _keep_base(self, hashes: np.ndarray, counts: np.ndarray, eligible: np.ndarray) -> tuple[pa.Table, int]:
        """The previous version's vocabulary, in its order (so its ids stay), with this version's counts added;
        its values leave `eligible`, so only new values are appended. Also returns how often they occur here."""
        assert self.base is not None
        values = _as_array(self.base["value"]).cast(self.value_type)
        base_hashes, _ = hash_array(values)
        seen = np.zeros(len(base_hashes), dtype=np.int64)
        if len(hashes) and len(base_hashes):  # `hashes` is sorted
            pos = np.minimum(np.searchsorted(hashes, base_hashes), len(hashes) - 1)
            found = hashes[pos] == base_hashes
            rows = pos[found]
            seen[found] = counts[rows]
            eligible[rows] = False
        before = _as_array(self.base["count"]).cast(pa.int64()).to_numpy(zero_copy_only=False)
        return pa.table({"value": values, "count": before + seen, "hash": base_hashes}), int(seen.sum())


def _by_count(counts: np.ndarray) -> np.ndarray:
    """The stable order of `counts`, largest first. Counts below 2**16 sort by radix (numpy's stable
    sort of 16-bit keys), the few larger ones after that by a comparison sort."""
    capped = np.minimum(counts, 0xFFFF)
    order = np.argsort((0xFFFF - capped).astype(np.uint16), kind="stable")
    big = int((capped == 0xFFFF).sum())  # they come first
    if big:
        order[:big] = order[:big][np.argsort(-counts[order[:big]], kind="stable")]
    return order


def _count_indices(indices: pa.Array, size: int) -> np.ndarray:
    """How often each of `size` dictionary entries occurs in `indices` (nulls not counted), int64 [size]."""
    idx = np.frombuffer(
        indices.buffers()[1],
        dtype=_index_dtype(indices.type),
        count=len(indices),
        offset=indices.offset * indices.type.byte_width,
    )
    if indices.null_count:
        # Null slots hold arbitrary indices: send them to one extra bin, then drop it.
        bits = np.frombuffer(indices.buffers()[0], dtype=np.uint8)
        valid = np.unpackbits(bits, count=indices.offset + len(indices), bitorder="little")[indices.offset :]
        idx = np.where(valid.view(bool), idx, np.intp(size))
    return np.bincount(idx, minlength=size + 1)[:size].astype(np.int64, copy=False)


class _SketchAccumulator(_Accumulator):
    """hash, cross, bucketize, quantile: cardinality by HyperLogLog; quantile keeps a sample."""

    def __init__(self, index: int, feature: Feature) -> None:
        super().__init__(index, feature)
        self.hll = _HyperLogLog()
        self.sample = np.zeros(0, np.float64)
        self.keys = np.zeros(0, np.float64)
        self.rng = np.random.default_rng(index)

    def update(self, batch: pa.RecordBatch) -> None:
        f = self.feature
        if f.transform.type == "cross":
            cols = [_as_array(batch.column(c)) for c in f.columns]
            hashes, nulls = zip(*(hash_array(c) for c in cols), strict=True)
            any_null = np.logical_or.reduce(nulls)
            self.rows += len(any_null)
            self.missing += int(any_null.sum())
            self.hll.add(combine(list(hashes))[~any_null])
            return
        values = self.values_of(batch)
        self.hll.add(_distinct_hashes(values))
        if f.transform.type == "quantile":
            x = pc.drop_null(values).cast(pa.float64()).to_numpy(zero_copy_only=False)
            x = x[np.isfinite(x)]
            keys = self.rng.random(len(x))
            self.sample, self.keys = np.concatenate([self.sample, x]), np.concatenate([self.keys, keys])
            if len(self.sample) > _QUANTILE_SAMPLE:
                keep = np.argpartition(self.keys, _QUANTILE_SAMPLE)[:_QUANTILE_SAMPLE]
                self.sample, self.keys = self.sample[keep], self.keys[keep]

    def finish(self) -> tuple[dict[str, Any], dict[str, Any], pa.Table | None]:
        t = self.feature.transform
        params: dict[str, Any] = {}
        if t.type in ("hash", "cross"):
            params["numEmbeddings"] = int(t.buckets or 0) + 1
        else:
            if t.type == "quantile":
                if len(self.sample):
                    qs = np.quantile(self.sample, np.linspace(0.0, 1.0, t.num_quantiles + 1)[1:-1])
                    boundaries = [float(b) for b in np.unique(qs)]
                else:
                    boundaries = []
            else:
                boundaries = [float(b) for b in t.boundaries or []]
            params["boundaries"] = boundaries
            params["numEmbeddings"] = len(boundaries) + 2
        stats = self.base_stats()
        stats["cardinality"] = self.hll.estimate()
        return params, stats, None


class _DenseAccumulator(_Accumulator):
    def __init__(self, index: int, feature: Feature) -> None:
        super().__init__(index, feature)
        self.n = 0
        self.mean = 0.0
        self.m2 = 0.0

    def update(self, batch: pa.RecordBatch) -> None:
        values = self.values_of(batch)
        if not (pa.types.is_floating(values.type) or pa.types.is_integer(values.type)):
            values = values.cast(pa.float64())
        n_b = len(values) - values.null_count
        if n_b == 0:
            return
        mean_b = float(pc.mean(values).as_py())
        m2_b = float(pc.variance(values, ddof=0).as_py()) * n_b
        n = self.n + n_b
        delta = mean_b - self.mean
        self.mean += delta * n_b / n
        self.m2 += m2_b + delta * delta * self.n * n_b / n
        self.n = n

    def finish(self) -> tuple[dict[str, Any], dict[str, Any], pa.Table | None]:
        std = float(np.sqrt(self.m2 / self.n)) if self.n else 0.0
        stats = self.base_stats()
        stats["mean"] = round(self.mean, 6)
        stats["std"] = round(std, 6)
        return {"mean": self.mean, "std": std}, stats, None


def _sample_schema(store: Store, samples: Manifest) -> pa.Schema:
    files = split_files(samples, "train")
    if not files:
        raise DataError("spec.sampleSetRef", f"SampleSet {samples.name} version {samples.version} has no training rows")
    return pq.read_schema(store.fetch(samples, files[0][0]))


def validate_columns(spec: FeatureSetSpec, schema: pa.Schema, samples: Manifest) -> dict[str, str]:
    """Column kinds the features need; DataError naming `spec.features[i].columns` for any misfit."""
    where = f"SampleSet {samples.namespace}/{samples.name} version {samples.version}"
    visible = ", ".join(n for n in schema.names if not n.startswith("_"))
    kinds: dict[str, str] = {}
    for i, f in enumerate(spec.features):
        field = f"spec.features[{i}].columns"
        for c in f.columns:
            if c.startswith("_"):
                raise DataError(field, f"feature {f.name!r}: column {c!r} is internal (names starting with '_')")
            if c not in schema.names:
                raise DataError(field, f"feature {f.name!r}: column {c!r} is not in {where} (columns: {visible})")
            kind = column_kind(schema.field(c).type)
            if kind is None:
                raise DataError(field, f"feature {f.name!r}: column {c!r} has unsupported type {schema.field(c).type}")
            is_list = kind.startswith("list<")
            base = kind[5:-1] if is_list else kind
            if f.type == "multi_hot" and not is_list:
                raise DataError(field, f"feature {f.name!r}: multi_hot needs a list column; {c!r} holds {kind}")
            if f.type != "multi_hot" and is_list:
                raise DataError(field, f"feature {f.name!r}: column {c!r} holds lists; declare the feature multi_hot")
            if f.type == "dense" and base not in ("int", "float", "bool"):
                raise DataError(field, f"feature {f.name!r}: a dense feature needs a numeric column; {c!r} is {kind}")
            if f.transform.type in ("bucketize", "quantile") and base not in ("int", "float"):
                raise DataError(field, f"feature {f.name!r}: {f.transform.type} needs numbers; {c!r} is {kind}")
            kinds[c] = kind
    if spec.label_column not in schema.names:
        raise DataError("spec.labelColumn", f"column {spec.label_column!r} is not in {where}")
    return kinds


def _accumulator(
    i: int, f: Feature, schema: pa.Schema, grow: bool = False, base: pa.Table | None = None
) -> _Accumulator:
    if f.type == "dense":
        return _DenseAccumulator(i, f)
    if f.transform.type == "vocabulary":
        t = schema.field(f.columns[0]).type
        value_type = t.value_type if (pa.types.is_list(t) or pa.types.is_large_list(t)) else t
        if pa.types.is_dictionary(value_type):
            value_type = value_type.value_type
        if pa.types.is_large_string(value_type):
            value_type = pa.string()
        elif pa.types.is_integer(value_type):
            value_type = pa.int64()
        return _VocabularyAccumulator(i, f, value_type, grow, base)
    return _SketchAccumulator(i, f)


def fit_processor(
    spec: FeatureSetSpec,
    store: Store,
    samples: Manifest,
    batch_rows: int = FIT_BATCH_ROWS,
    *,
    grow: bool = False,
    previous: FeatureProcessor | None = None,
) -> tuple[FeatureProcessor, list[dict[str, Any]]]:
    """Fit every feature over the SampleSet's training split; returns the processor and its statistics.

    `grow`: vocabularies grow across versions (a followed SampleSet, whose versions hold only the newest
    events): each table holds `maxSize` ids from the first version on, and a vocabulary with the same
    settings in `previous` (the FeatureSet's previous version) keeps every value at its id; new values are
    appended, most frequent first, until `maxSize`; the rest map to OOV.
    """
    schema = _sample_schema(store, samples)
    kinds = validate_columns(spec, schema, samples)
    accumulators = [
        _accumulator(i, f, schema, grow, _base_vocabulary(previous, f, kinds) if grow else None)
        for i, f in enumerate(spec.features)
    ]
    columns = list(kinds)
    results = _scan(store, samples, accumulators, batch_rows)
    entries, vocabularies, stats = [], {}, []
    for acc, (params, feature_stats, vocab) in zip(accumulators, results, strict=True):
        if vocab is not None:
            vocabularies[acc.feature.name] = vocab
        entries.append({"feature": acc.feature.to_wire(), "params": params, "stats": feature_stats})
        stats.append(feature_stats)
    weight = spec.weight_column if spec.weight_column in schema.names else None
    config = {
        "formatVersion": FORMAT_VERSION,
        "hash": HASH_NAME,
        "columns": {c: kinds[c] for c in columns},
        "labelColumn": spec.label_column,
        "weightColumn": weight,
        "features": entries,
        "sampleSet": {"namespace": samples.namespace, "name": samples.name, "version": samples.version},
    }
    processor = FeatureProcessor(config, vocabularies)
    _validation_oov(processor, store, samples, batch_rows)
    return processor, processor.stats


def _column_groups(accumulators: list[_Accumulator]) -> list[tuple[list[str], list[_Accumulator]]]:
    """Accumulators that share a column form one group, so each column is read once."""
    groups: list[tuple[list[str], list[_Accumulator]]] = []
    for acc in accumulators:
        mine = [g for g in groups if set(g[0]) & set(acc.feature.columns)]
        merged_columns = list(dict.fromkeys(c for g in mine for c in g[0]))
        merged_columns += [c for c in acc.feature.columns if c not in merged_columns]
        merged = [a for g in mine for a in g[1]] + [acc]
        groups = [g for g in groups if all(g is not m for m in mine)] + [(merged_columns, merged)]
    # Vocabularies cost most: start them first, so no core waits on one at the end.
    return sorted(groups, key=lambda g: not any(isinstance(a, _VocabularyAccumulator) for a in g[1]))


def _scan(
    store: Store, samples: Manifest, accumulators: list[_Accumulator], batch_rows: int
) -> list[tuple[dict[str, Any], dict[str, Any], pa.Table | None]]:
    """Run every accumulator over the training split; returns their results in order.

    Each group of accumulators streams only its own columns through the stored row groups, and
    groups run in parallel threads (Parquet decoding, Arrow kernels and most numpy work release the
    GIL). Memory holds one column chunk per thread, not a whole row group of every column.
    """
    groups = _column_groups(accumulators)
    results: dict[int, tuple[dict[str, Any], dict[str, Any], pa.Table | None]] = {}
    lock = threading.Lock()
    with RowProgress("computing feature statistics", split_rows(samples, "train")) as progress:
        done = [0.0]

        def run(group: tuple[list[str], list[_Accumulator]]) -> None:
            columns, accs = group
            batches = iter_record_batches(
                store,
                samples,
                "train",
                batch_rows,
                columns=columns,
                dictionary_strings=True,
                exact=False,
                use_threads=False,
                prefetch=False,
            )
            for batch in batches:
                for acc in accs:
                    acc.update(batch)
                with lock:  # progress in rows: each group's pass is its share of one pass
                    before = int(done[0])
                    done[0] += batch.num_rows / len(groups)
                    progress.advance(int(done[0]) - before)
            for acc in accs:  # finish now: only the results stay in memory, not the partial state
                results[acc.index] = acc.finish()

        threads = min(_fit_threads(), len(groups))
        if threads <= 1:
            for group in groups:
                run(group)
        else:
            with ThreadPoolExecutor(threads, thread_name_prefix="recplane-fit") as pool:
                futures = [pool.submit(run, g) for g in groups]
                try:
                    for future in futures:
                        future.result()
                except BaseException:
                    pool.shutdown(cancel_futures=True)  # a bad column stops the scan, not just its group
                    raise
    return [results[acc.index] for acc in accumulators]


def _fit_threads() -> int:
    """Threads for the scan: Arrow's `cpu_count()` (it honours OMP_NUM_THREADS), at most 8, since each
    thread holds one feature's partial counts."""
    return max(1, min(pa.cpu_count(), 8))


def _base_vocabulary(previous: FeatureProcessor | None, feature: Feature, kinds: dict[str, str]) -> pa.Table | None:
    """The previous version's vocabulary of `feature`, when it was a vocabulary of the same feature type over
    the same columns (of the same kinds) and fits in `maxSize`; anything else starts afresh. A changed
    `minCount` applies to the values appended from now on."""
    if previous is None or feature.transform.type != "vocabulary" or feature.name not in previous.vocabularies:
        return None
    before = next(f for f in previous.features if f.name == feature.name)
    same = before.transform.type == "vocabulary" and (before.type, before.columns) == (feature.type, feature.columns)
    if not same or any(previous.column_kinds.get(c) != kinds[c] for c in feature.columns):
        return None
    vocab = previous.vocabularies[feature.name]
    return vocab if vocab.num_rows <= feature.transform.max_size else None


def _validation_oov(processor: FeatureProcessor, store: Store, samples: Manifest, batch_rows: int) -> None:
    """Replace the vocabularies' training OOV rate with the rate on the validation split."""
    names = [f.name for f in processor.sparse_features if f.transform == "vocabulary"]
    if not names or split_rows(samples, "validation") == 0:
        return
    columns = sorted({c for f in processor.sparse_features if f.name in names for c in f.columns})
    present = dict.fromkeys(names, 0)
    oov = dict.fromkeys(names, 0)
    batches = iter_record_batches(
        store, samples, "validation", batch_rows, columns=columns, dictionary_strings=True, exact=False
    )
    for batch in batches:
        for name, ids in processor.sparse_ids(batch, names).items():
            present[name] += int((ids != MISSING_ID).sum())
            oov[name] += int((ids == OOV_ID).sum())
    for entry in processor.config["features"]:
        name = entry["feature"]["name"]
        if present.get(name):
            entry["stats"]["oovRate"] = round(oov[name] / present[name], 6)
