"""Serving's memoised transform gives exactly the model inputs of `FeatureProcessor.transform_rows`."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from recplane.api.featureset import FeatureSetSpec
from recplane.api.sampleset import SampleSetSpec
from recplane.data.catalogs import feed_features
from recplane.data.errors import DataError
from recplane.data.features import FeatureProcessor, TransformedBatch
from recplane.data.row_transform import RowBlock, RowTransform
from recplane.data.samples import read_split
from recplane.data.steps import materialize_featureset, materialize_sampleset
from recplane.store import LocalStore

SHARED = ("user_id", "recent_topics", "user_activity", "hour", "device", "network", "referrer")


@pytest.fixture(scope="module")
def feed(tmp_path_factory: pytest.TempPathFactory) -> tuple[FeatureProcessor, list[dict[str, Any]]]:
    """The feed catalog fitted on synthetic events, and validation rows (with missing values) to serve."""
    store = LocalStore(tmp_path_factory.mktemp("rows") / "store")
    spec = SampleSetSpec.model_validate(
        {"source": {"format": "synthetic", "synthetic": {"events": 12_000, "users": 800, "items": 1500}}}
    )
    samples = materialize_sampleset(spec, store, "default", "feed")
    spec_fs = FeatureSetSpec.model_validate({"sampleSetRef": {"name": "feed"}, "features": feed_features()})
    features = materialize_featureset(spec_fs, store, "default", "feed-features")
    processor = FeatureProcessor.from_store(store, features)
    rows = read_split(store, samples, "validation", processor.input_columns).to_pylist()
    return processor, rows


def requests(rows: list[dict[str, Any]], size: int) -> list[tuple[dict[str, Any], list[dict[str, Any]]]]:
    """Ranking-shaped requests: the user and context of each chunk's first row, the chunk's items."""
    out = []
    for start in range(0, len(rows), size):
        chunk = rows[start : start + size]
        shared = {c: chunk[0][c] for c in SHARED}
        out.append((shared, [{c: v for c, v in r.items() if c not in SHARED} for r in chunk]))
    return out


def assert_same(served: TransformedBatch, expected: TransformedBatch) -> None:
    assert served.keys == expected.keys
    np.testing.assert_array_equal(served.values, expected.values)
    np.testing.assert_array_equal(served.lengths, expected.lengths)
    np.testing.assert_array_equal(served.dense, expected.dense)
    assert served.dense.dtype == expected.dense.dtype and served.values.dtype == expected.values.dtype


@pytest.mark.parametrize("max_entries", [32_768, 7])
def test_grouped_rows_get_the_inputs_of_transform_rows_first_time_and_memoised(
    feed: tuple[FeatureProcessor, list[dict[str, Any]]], max_entries: int
) -> None:
    processor, rows = feed
    rows = rows[:600]
    assert any(r["network"] is None for r in rows) and any(not r["recent_topics"] for r in rows)
    transform = RowTransform(processor, max_entries=max_entries)
    calls = requests(rows, 100)
    blocks = [RowBlock.of_rows(candidates, shared) for shared, candidates in calls]
    expected = processor.transform_rows([{**shared, **row} for shared, candidates in calls for row in candidates])
    for _ in range(2):  # the first pass encodes, the second looks up (or, with 7 entries, starts over)
        assert_same(transform(blocks), expected)
    for (shared, candidates), block in zip(calls, blocks, strict=True):  # one request at a time
        assert_same(transform([block]), processor.transform_rows([{**shared, **r} for r in candidates]))
    assert_same(transform.rows(rows), processor.transform_rows(rows))
    assert_same(transform([RowBlock(3, shared=rows[0])]), processor.transform_rows([rows[0]] * 3))


def test_missing_and_unseen_values_get_the_ids_of_transform_rows(
    feed: tuple[FeatureProcessor, list[dict[str, Any]]],
) -> None:
    processor, rows = feed
    transform = RowTransform(processor)
    shared = {"user_id": rows[0]["user_id"], "hour": 9, "device": None}
    candidates = [{"item_id": "never-seen", "topic": None}, {"item_id": rows[1]["item_id"]}, {"recent_topics": []}]
    assert_same(
        transform([RowBlock.of_rows(candidates, shared)]),
        processor.transform_rows([{**shared, **r} for r in candidates]),
    )


def test_equal_values_of_other_types_each_get_their_own_inputs(
    feed: tuple[FeatureProcessor, list[dict[str, Any]]],
) -> None:
    processor, _ = feed
    transform = RowTransform(processor)
    # 1, True, "1" and 1.0 are equal or alike to Python, but Arrow converts each its own way.
    refused = 0
    for value in (1, True, "1", 1.0, 7, 7.0, -0.0, 0.0, "true"):
        for column in ("user_id", "hour", "item_age_hours", "position", "topic"):
            row = [{column: value}]
            try:
                expected = processor.transform_rows(row)
            except DataError:
                with pytest.raises(DataError):  # e.g. "true" for a number: refused alike
                    transform.rows(row)
                refused += 1
                continue
            assert_same(transform.rows(row), expected)
    assert refused


def test_the_memo_of_a_feature_stays_within_its_bound(feed: tuple[FeatureProcessor, list[dict[str, Any]]]) -> None:
    processor, _ = feed
    transform = RowTransform(processor, max_entries=100)
    rows = [{"user_id": f"u-{i}", "item_id": f"i-{i}"} for i in range(1000)]
    for start in range(0, 1000, 50):
        chunk = rows[start : start + 50]
        assert_same(transform.rows(chunk), processor.transform_rows(chunk))
    assert max(len(memo.outputs) for memo, _ in transform.sparse) <= 100
