"""Materialising a FeatureSet: statistics and vocabularies over a SampleSet, streamed.

One pass over the training split in record batches (string columns read
dictionary-encoded, so most work happens once per distinct value), with bounded
state per feature:

* vocabulary: value counts, merged with Arrow's hash group-by as they grow;
* hash, cross, bucketize, quantile: a HyperLogLog sketch for the cardinality;
  quantile also keeps a fixed-size uniform sample (bottom-k of random keys) for its
  boundaries;
* dense: count, mean and M2 merged with Chan's parallel formula.

A second, cheap pass over the validation split measures the vocabularies'
out-of-vocabulary rate on data they were not built from: what serving will see.
"""

from __future__ import annotations

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
    """Value counts keyed by the stable hash (cheap to group on). Each hash keeps the position of one
    original value in `values`, so the strings are never grouped, only gathered."""

    def __init__(self, index: int, feature: Feature, value_type: pa.DataType) -> None:
        super().__init__(index, feature)
        self.value_type = value_type
        self.parts: list[pa.Table] = []  # (hash, count, vidx)
        self.values: list[pa.Array] = []
        self.n_values = 0
        self.pending = 0
        self.current: tuple[pa.Array, np.ndarray] | None = None

    def update(self, batch: pa.RecordBatch) -> None:
        values = self.values_of(batch)
        if not pa.types.is_dictionary(values.type):
            values = pc.dictionary_encode(values)
        dictionary = values.dictionary
        counts = np.bincount(_valid_indices(values.indices), minlength=len(dictionary))
        # Batches of one Parquet row group share its dictionary: count across them, flush once.
        if self.current is not None and _same_values(self.current[0], dictionary):
            self.current[1][: len(counts)] += counts
            return
        self._flush()
        self.current = (dictionary, counts.astype(np.int64))

    def _flush(self) -> None:
        if self.current is None:
            return
        dictionary, counts = self.current
        self.current = None
        used = np.flatnonzero(counts)
        if len(used) < len(dictionary):
            dictionary = dictionary.take(pa.array(used))
        hashes, nulls = hash_array(dictionary)
        vidx = np.arange(self.n_values, self.n_values + len(used), dtype=np.int64)
        part = pa.table({"hash": pa.array(hashes), "count": pa.array(counts[used]), "vidx": pa.array(vidx)})
        if nulls.any():
            part = part.filter(pa.array(~nulls))
        self.parts.append(part)
        self.values.append(dictionary.cast(self.value_type))
        self.n_values += len(used)
        self.pending += part.num_rows
        if self.pending > _MERGE_ROWS:
            self._merge()

    def _merge(self) -> tuple[pa.Table, pa.Array]:
        self._flush()
        if not self.parts:
            merged = pa.table(
                {"hash": pa.array([], pa.uint64()), "count": pa.array([], pa.int64()), "vidx": pa.array([], pa.int64())}
            )
            return merged, pa.array([], self.value_type)
        if len(self.parts) > 1:
            grouped = (
                pa.concat_tables(self.parts)
                .group_by("hash", use_threads=False)
                .aggregate([("count", "sum"), ("vidx", "min")])
            )
            kept_values = pa.concat_arrays(self.values).take(grouped["vidx_min"].combine_chunks())
            merged = pa.table(
                {
                    "hash": grouped["hash"].combine_chunks(),
                    "count": grouped["count_sum"].combine_chunks(),
                    "vidx": pa.array(np.arange(grouped.num_rows, dtype=np.int64)),
                }
            )
            self.parts, self.values, self.n_values = [merged], [kept_values], grouped.num_rows
        self.pending = self.parts[0].num_rows
        return self.parts[0], self.values[0]

    def finish(self) -> tuple[dict[str, Any], dict[str, Any], pa.Table | None]:
        t = self.feature.transform
        table, values = self._merge()
        hashes, counts = table["hash"].to_numpy(), table["count"].to_numpy()
        vidx = table["vidx"].to_numpy()
        total = int(counts.sum())
        frequent = np.flatnonzero(counts >= t.min_count)
        # Most frequent first; ties broken by the hash, so the order never depends on batch order.
        order = frequent[np.lexsort((hashes[frequent], -counts[frequent]))][: t.max_size]
        kept_count = int(counts[order].sum())
        stats = self.base_stats()
        stats["cardinality"] = len(hashes)
        stats["oovRate"] = round(1.0 - kept_count / total, 6) if total else 0.0
        params = {
            "numEmbeddings": len(order) + FIRST_VOCAB_ID,
            "vocabulary": f"{VOCAB_DIR}/{self.feature.name}.parquet",
            "vocabularySize": len(order),
        }
        vocab = pa.table({"value": values.take(pa.array(vidx[order])), "count": counts[order], "hash": hashes[order]})
        return params, stats, vocab


def _valid_indices(indices: pa.Array) -> np.ndarray:
    """The non-null entries of a dictionary's index array, as numpy (no copy when there are no nulls)."""
    if indices.null_count:
        indices = pc.drop_null(indices)
    return np.frombuffer(
        indices.buffers()[1],
        dtype=_index_dtype(indices.type),
        count=len(indices),
        offset=indices.offset * indices.type.byte_width,
    )


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


def _accumulator(i: int, f: Feature, schema: pa.Schema) -> _Accumulator:
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
        return _VocabularyAccumulator(i, f, value_type)
    return _SketchAccumulator(i, f)


def fit_processor(
    spec: FeatureSetSpec, store: Store, samples: Manifest, batch_rows: int = FIT_BATCH_ROWS
) -> tuple[FeatureProcessor, list[dict[str, Any]]]:
    """Fit every feature over the SampleSet's training split; returns the processor and its statistics."""
    schema = _sample_schema(store, samples)
    kinds = validate_columns(spec, schema, samples)
    accumulators = [_accumulator(i, f, schema) for i, f in enumerate(spec.features)]
    columns = list(kinds)
    with RowProgress("computing feature statistics", split_rows(samples, "train")) as progress:
        batches = iter_record_batches(
            store, samples, "train", batch_rows, columns=columns, dictionary_strings=True, exact=False
        )
        for batch in batches:
            for acc in accumulators:
                acc.update(batch)
            progress.advance(batch.num_rows)
    entries, vocabularies, stats = [], {}, []
    for acc in accumulators:
        params, feature_stats, vocab = acc.finish()
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
