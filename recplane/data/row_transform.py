"""Serving's transform: a few hundred raw rows to model inputs, memoised per feature and raw value.

A ranking call brings one user and context with a hundred candidates, and the same items,
authors, topics and hours come back call after call. Arrow's kernels, which `transform`
runs, cost a fixed few microseconds per call and per feature, far more than a hundred rows
of work. Here each feature's output for a raw value (or tuple of values, for crosses) is
computed by that feature's own encoder, the one `FeatureProcessor.transform` runs, the
first time the value is seen, and looked up in a dictionary afterwards. The output is
`transform_rows`'s for the same rows, id for id and value for value (the tests compare
them); only the time differs.

Rows come in blocks given column-wise (`RowBlock`): the values every row of the block
shares (a ranking request's user and context) once, and a list per column that varies.
A feature that reads only shared columns is looked up once per block.

Keys are the raw values, typed: 1, 1.0, True and "1" are four keys (Arrow converts each
its own way), and floats are keyed by their bits (-0.0 is not 0.0 to a hash); dense and
bucketized features, which compare numbers, key numbers as they are. Each feature keeps
at most `max_entries` values; a full memo starts over, so memory stays bounded and hot
values come back after one miss.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from .features import FeatureProcessor, TransformedBatch, column_from_values

# Values memoised per feature: about 100 bytes each, so at most a few MiB per feature.
MAX_ENTRIES = 32_768

_PLAIN: frozenset[type] = frozenset((str, int, type(None)))  # keys as they are: no two of these are equal across types
# Dense and bucketized features compare numbers: 1 and 1.0 (and -0.0 and 0.0) are one number there.
_PLAIN_NUMERIC: frozenset[type] = frozenset((str, int, float, type(None)))


@dataclass(frozen=True)
class RowBlock:
    """`size` raw rows, column-wise: `shared` values hold for every row, each of `columns` holds one
    value per row (None: missing). A column is in one or the other; absent from both, it is missing."""

    size: int
    shared: Mapping[str, Any] = field(default_factory=dict)
    columns: Mapping[str, Sequence[Any]] = field(default_factory=dict)

    @classmethod
    def of_rows(cls, rows: Sequence[Mapping[str, Any]], shared: Mapping[str, Any] | None = None) -> RowBlock:
        """A block of row dicts (a key missing from a row is a missing value), plus values they all share."""
        shared = dict(shared or {})
        names = set().union(*rows) - shared.keys()
        return cls(len(rows), shared, {c: [r.get(c) for r in rows] for c in names})

    def values(self, columns: Sequence[str]) -> list[tuple[Any, ...]]:
        """The values of `columns`: one tuple per row, or a single one when the block shares them all."""
        if not any(c in self.columns for c in columns):
            return [tuple(self.shared.get(c) for c in columns)]
        parts = [self.columns.get(c) or itertools.repeat(self.shared.get(c), self.size) for c in columns]
        return list(zip(*parts, strict=False))  # repeat() has no length of its own


def _key(value: Any) -> Any:
    """A dictionary key that only equal raw values (same type, same bits) share."""
    kind = value.__class__
    if kind in _PLAIN:
        return value
    if kind is float:
        return (float, value.hex())
    if kind is list or kind is tuple:
        return (list, *(_key(v) for v in value))
    return (kind, value)


@dataclass
class _Memo:
    """One feature: its columns, the Arrow types they convert to, and its outputs by key."""

    columns: tuple[str, ...]
    types: tuple[pa.DataType, ...]
    encode: Callable[[list[pa.Array]], list[Any]]  # one output per row of the arrays
    plain: frozenset[type]  # value classes used as keys as they are
    outputs: dict[Any, Any] = field(default_factory=dict)

    def keys(self, block: RowBlock) -> list[Any] | Any:
        """The key of every row, or one key when the feature reads only shared columns."""
        if len(self.columns) == 1:
            return self._column_keys(self.columns[0], block)
        parts = [self._column_keys(c, block) for c in self.columns]
        varying = [c in block.columns for c in self.columns]
        if not any(varying):
            return tuple(parts)
        columns = (p if v else itertools.repeat(p, block.size) for p, v in zip(parts, varying, strict=True))
        return list(zip(*columns, strict=False))

    def _column_keys(self, column: str, block: RowBlock) -> list[Any] | Any:
        plain = self.plain
        values = block.columns.get(column)
        if values is None:
            value = block.shared.get(column)
            return value if value.__class__ in plain else _key(value)
        if plain.issuperset(map(type, values)):
            return values
        return [v if v.__class__ in plain else _key(v) for v in values]

    def resolve(self, wanted: list[Any], raw: list[tuple[Any, ...]], max_entries: int) -> None:
        """Compute the outputs of keys not memoised yet: `raw[i]` holds the raw values behind `wanted[i]`."""
        todo = {k: values for k, values in zip(wanted, raw, strict=True) if k not in self.outputs}
        if not todo:
            return
        if len(self.outputs) + len(todo) > max_entries:
            # Start over, keeping this call's keys: more than max_entries only while one batch needs them.
            self.outputs.clear()
            todo = dict(zip(wanted, raw, strict=True))
        arrays = [
            column_from_values([v[j] for v in todo.values()], c, t)
            for j, (c, t) in enumerate(zip(self.columns, self.types, strict=True))
        ]
        self.outputs.update(zip(todo, self.encode(arrays), strict=True))


class RowTransform:
    """`FeatureProcessor.transform_rows` for serving: the same model inputs from memoised encoder outputs.

    Only model inputs: labels and weights are None (a request has neither).
    """

    def __init__(self, processor: FeatureProcessor, max_entries: int = MAX_ENTRIES) -> None:
        self.processor = processor
        self.max_entries = max_entries
        sparse, dense = processor.encoders
        self.keys = [info.name for info, _ in sparse]
        self.sparse: list[tuple[_Memo, bool]] = []
        for info, encoder in sparse:
            plain = _PLAIN_NUMERIC if info.transform in ("bucketize", "quantile") else _PLAIN
            memo = _Memo(info.columns, self._types(info.columns), _sparse_outputs(encoder, info.multi_hot), plain)
            self.sparse.append((memo, info.multi_hot))
        self.dense = [
            _Memo((column,), self._types((column,)), _dense_outputs(encoder), _PLAIN_NUMERIC)
            for _, column, encoder in dense
        ]

    def _types(self, columns: tuple[str, ...]) -> tuple[pa.DataType, ...]:
        return tuple(self.processor.row_type(c) for c in columns)

    def __call__(self, blocks: Sequence[RowBlock]) -> TransformedBatch:
        """Model inputs for the rows of every block, in order."""
        b = sum(block.size for block in blocks)
        lengths = np.ones(b * len(self.sparse), dtype=np.int32)
        chunks: list[np.ndarray] = []
        for k, (memo, multi_hot) in enumerate(self.sparse):
            outputs = self._outputs(memo, blocks)
            if multi_hot:
                lengths[k * b : (k + 1) * b] = [len(ids) for ids in outputs]
                chunks.append(np.fromiter(itertools.chain.from_iterable(outputs), dtype=np.int64))
            else:
                chunks.append(np.array(outputs, dtype=np.int64))
        dense = np.empty((b, len(self.dense)), dtype=np.float32)
        for j, memo in enumerate(self.dense):
            dense[:, j] = self._outputs(memo, blocks)
        values = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.int64)
        return TransformedBatch(
            keys=list(self.keys), values=values, lengths=lengths, dense=dense, labels=None, weights=None
        )

    def rows(self, rows: Sequence[Mapping[str, Any]]) -> TransformedBatch:
        """Model inputs for plain row dicts (a key missing from a row is a missing value)."""
        return self([RowBlock.of_rows(rows)])

    def _outputs(self, memo: _Memo, blocks: Sequence[RowBlock]) -> list[Any]:
        """The feature's output for every row of every block, in order."""
        keyed = [memo.keys(block) for block in blocks]
        try:
            return _gather(memo.outputs, blocks, keyed)
        except KeyError:  # values seen for the first time: encode them all at once, then look up again
            wanted: list[Any] = []
            raw: list[tuple[Any, ...]] = []
            for block, keys in zip(blocks, keyed, strict=True):
                wanted.extend(keys if isinstance(keys, list) else [keys])
                raw.extend(block.values(memo.columns))
            memo.resolve(wanted, raw, self.max_entries)
            return _gather(memo.outputs, blocks, keyed)


def _gather(outputs: dict[Any, Any], blocks: Sequence[RowBlock], keyed: list[Any]) -> list[Any]:
    out: list[Any] = []
    for block, keys in zip(blocks, keyed, strict=True):
        if isinstance(keys, list):
            out.extend(map(outputs.__getitem__, keys))
        else:
            out.extend([outputs[keys]] * block.size)
    return out


def _sparse_outputs(encoder: Any, multi_hot: bool) -> Callable[[list[pa.Array]], list[Any]]:
    """Outputs of a sparse feature per row: its id (an int), or its ids (a tuple) when multi-hot."""

    def encode(columns: list[pa.Array]) -> list[Any]:
        if not multi_hot:
            ids = np.empty(len(columns[0]), dtype=np.int64)
            encoder.encode_into(columns, ids)
            return ids.tolist()  # type: ignore[no-any-return]
        encoded = encoder.encode(columns)
        flat, ends = encoded.ids.tolist(), np.cumsum(encoded.lengths).tolist()
        return [tuple(flat[end - n : end]) for n, end in zip(encoded.lengths.tolist(), ends, strict=True)]

    return encode


def _dense_outputs(encoder: Any) -> Callable[[list[pa.Array]], list[Any]]:
    """Outputs of a dense feature per row: its float32 value (as a Python float, which holds it exactly)."""

    def encode(columns: list[pa.Array]) -> list[Any]:
        out = np.empty(len(columns[0]), dtype=np.float64)
        encoder.encode_into(columns[0], out)
        return out.astype(np.float32).tolist()  # type: ignore[no-any-return]

    return encode
