"""The fast paths of reading and encoding give exactly what the plain ones give: read-ahead, larger
reads, parallel fitting and encoding, the hash directory."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from recplane.api.featureset import FeatureSetSpec
from recplane.api.sampleset import SampleSetSpec
from recplane.data import features, fitting, samples
from recplane.data.catalogs import feed_features
from recplane.data.errors import DataError
from recplane.data.features import FeatureProcessor, _HashIndex
from recplane.data.fitting import fit_processor
from recplane.data.samples import iter_record_batches
from recplane.data.steps import materialize_sampleset
from recplane.store import LocalStore, Manifest, Store

NS = "default"


@pytest.fixture(scope="module")
def feed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Store, Manifest]:
    store = LocalStore(tmp_path_factory.mktemp("scan") / "store")
    spec = SampleSetSpec.model_validate(
        {
            "source": {"format": "synthetic", "synthetic": {"events": 40_000, "users": 3000, "items": 5000}},
            "shardRows": 12_000,  # several shards, so reads cross files
        }
    )
    return store, materialize_sampleset(spec, store, NS, "feed")


def _batches(store: Store, m: Manifest, **kw: object) -> list[pa.RecordBatch]:
    return list(iter_record_batches(store, m, "train", 1000, dictionary_strings=True, **kw))  # type: ignore[arg-type]


@pytest.mark.parametrize("exact", [True, False])
def test_read_ahead_and_larger_reads_give_the_same_batches(
    feed: tuple[Store, Manifest], monkeypatch: pytest.MonkeyPatch, exact: bool
) -> None:
    store, m = feed
    reference = _batches(store, m, exact=exact, prefetch=False)
    monkeypatch.setattr(samples, "READ_ROWS", 1000)  # one batch per read
    for got in (_batches(store, m, exact=exact), _batches(store, m, exact=exact, use_threads=False)):
        assert [b.num_rows for b in got] == [b.num_rows for b in reference]
        assert pa.Table.from_batches(got).equals(pa.Table.from_batches(reference))


def test_a_read_error_reaches_the_caller_and_leaving_early_stops_the_reader(feed: tuple[Store, Manifest]) -> None:
    store, m = feed
    with pytest.raises(DataError, match="no_such_column"):
        list(iter_record_batches(store, m, "train", 1000, columns=["no_such_column"]))
    batches = iter_record_batches(store, m, "train", 1000)
    next(batches)
    batches.close()
    assert not [t for t in threading.enumerate() if t.name == "recplane-read"]


def test_parallel_fitting_and_encoding_give_what_one_thread_gives(
    feed: tuple[Store, Manifest], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    store, m = feed
    spec = FeatureSetSpec(sample_set_ref={"name": "feed"}, features=feed_features())
    parallel, stats = fit_processor(spec, store, m, batch_rows=5000)
    batch = next(iter_record_batches(store, m, "train", 20_000, dictionary_strings=True))
    assert batch.num_rows > features._PARALLEL_ROWS  # large enough to be encoded in parallel
    encoded = parallel.transform(batch)
    monkeypatch.setattr(fitting, "_fit_threads", lambda: 1)
    monkeypatch.setattr(features, "_pool", lambda: None)
    serial, serial_stats = fit_processor(spec, store, m, batch_rows=5000)
    assert stats == serial_stats and parallel.config == serial.config
    for name, vocab in serial.vocabularies.items():
        assert parallel.vocabularies[name].equals(vocab)
    expected = serial.transform(batch)
    np.testing.assert_array_equal(encoded.values, expected.values)
    np.testing.assert_array_equal(encoded.lengths, expected.lengths)
    np.testing.assert_array_equal(encoded.dense, expected.dense)
    parallel.save(tmp_path / "saved")  # vocabularies written in parallel, read back alike
    np.testing.assert_array_equal(FeatureProcessor.load(tmp_path / "saved").transform(batch).values, expected.values)


def test_the_hash_directory_finds_what_a_binary_search_finds() -> None:
    rng = np.random.default_rng(3)
    keys = np.sort(rng.integers(0, 2**64, 5000, dtype=np.uint64))
    keys = np.sort(np.concatenate([keys, keys[::97]]))  # some keys twice: the first position counts
    queries = np.concatenate([keys, rng.integers(0, 2**64, 5000, dtype=np.uint64), keys[:1] - np.uint64(1)])
    pos = np.searchsorted(keys, queries)
    found = (pos < len(keys)) & (keys[np.minimum(pos, len(keys) - 1)] == queries)
    assert _HashIndex(keys).find(queries).tolist() == np.where(found, pos, -1).tolist()
    assert _HashIndex(keys[:0]).find(queries).tolist() == [-1] * len(queries)
