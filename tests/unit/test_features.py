"""FeatureSet: materialisation, the transforms, training/serving parity, sensitivity and errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from recplane.api.featureset import Feature, FeatureSetSpec
from recplane.api.sampleset import SampleSetSpec
from recplane.data import fitting
from recplane.data.catalogs import criteo_features, feed_features
from recplane.data.errors import DataError
from recplane.data.features import MISSING_ID, OOV_ID, FeatureProcessor
from recplane.data.fitting import fit_processor
from recplane.data.hashing import hash_array
from recplane.data.samples import iter_record_batches, read_split
from recplane.data.steps import check_sensitive, materialize_featureset, materialize_sampleset
from recplane.data.tensors import to_torch
from recplane.store import LocalStore, Manifest, Store

torch.set_num_threads(1)
NS = "default"


def _feature(name: str, type_: str, columns: list[str], transform: dict[str, Any], **kw: Any) -> Feature:
    return Feature.model_validate(
        {"name": name, "group": kw.pop("group", "id"), "type": type_, "columns": columns, "transform": transform, **kw}
    )


def _fs(features: list[Feature], sample_set: str = "feed", **kw: Any) -> FeatureSetSpec:
    return FeatureSetSpec(sample_set_ref={"name": sample_set}, features=features, **kw)


@pytest.fixture(scope="module")
def feed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Store, Manifest, Manifest]:
    """A small synthetic feed SampleSet and the feed catalog over it (shared: read-only in tests)."""
    store = LocalStore(tmp_path_factory.mktemp("feed") / "store")
    spec = SampleSetSpec.model_validate(
        {"source": {"format": "synthetic", "synthetic": {"events": 30_000, "users": 2000, "items": 4000}}}
    )
    samples = materialize_sampleset(spec, store, NS, "feed")
    features = materialize_featureset(_fs(feed_features()), store, NS, "feed-features")
    return store, samples, features


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return LocalStore(tmp_path / "store")


def _samples_from_rows(store: Store, rows: list[dict[str, Any]], tmp_path: Path, name: str = "s") -> Manifest:
    path = tmp_path / f"{name}.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    spec = SampleSetSpec.model_validate(
        {
            "source": {"format": "parquet", "uri": str(path)},
            "dedupe": {"enabled": False},
            "botFilter": {"enabled": False},
            "inactiveUsers": {"enabled": False},
            "label": {"dwellColumn": None},
            "split": {"validationFraction": 0.25},
        }
    )
    return materialize_sampleset(spec, store, NS, name)


# ---- the processor over the feed ----------------------------------------------------------------
def test_training_and_serving_paths_give_identical_tensors(feed: tuple[Store, Manifest, Manifest]) -> None:
    store, samples, features = feed
    processor = FeatureProcessor.from_store(store, features)
    batch = next(iter_record_batches(store, samples, "validation", 2000, dictionary_strings=True))
    assert batch["network"].null_count > 0  # missing values are part of the comparison
    trained = processor.transform(batch)
    served = processor.transform_rows(batch.to_pylist())
    assert trained.keys == served.keys
    np.testing.assert_array_equal(trained.values, served.values)
    np.testing.assert_array_equal(trained.lengths, served.lengths)
    np.testing.assert_array_equal(trained.dense, served.dense)
    assert served.labels is not None and trained.labels is not None
    a, b = to_torch(trained), to_torch(served)
    assert torch.equal(a.sparse.values(), b.sparse.values()) and torch.equal(a.dense, b.dense)


def test_the_processor_describes_the_model_inputs(feed: tuple[Store, Manifest, Manifest]) -> None:
    store, _, features = feed
    processor = FeatureProcessor.from_store(store, features)
    sparse = {s.name: s for s in processor.sparse_features}
    assert list(sparse) == [f.name for f in feed_features() if f.type != "dense"]
    assert processor.dense_features == ["item_age_hours", "author_followers", "user_activity"]
    assert sparse["recent_topics"].multi_hot and sparse["recent_topics"].pooling == "mean"
    assert sparse["hour"].num_embeddings == 25 and sparse["position"].num_embeddings == 9
    assert sparse["topic"].num_embeddings == 32 + 2  # 32 topics, missing and OOV
    assert processor.groups["author_id"] == "author"


def test_to_torch_gives_a_keyed_jagged_tensor_in_range(feed: tuple[Store, Manifest, Manifest]) -> None:
    store, samples, features = feed
    processor = FeatureProcessor.from_store(store, features)
    batch = next(iter_record_batches(store, samples, "train", 256))
    tb = to_torch(processor.transform(batch))
    assert tb.sparse.keys() == [s.name for s in processor.sparse_features]
    assert tb.dense.shape == (256, 3) and tb.dense.dtype == torch.float32
    assert tb.labels is not None and tb.labels.shape == (256,)
    assert tb.weights is not None and tb.weights.shape == (256,)
    jagged = tb.sparse.to_dict()
    for s in processor.sparse_features:
        values, lengths = jagged[s.name].values(), jagged[s.name].lengths()
        assert lengths.shape == (256,)
        assert int(values.min()) >= 0 and int(values.max()) < s.num_embeddings
        if not s.multi_hot:
            assert bool((lengths == 1).all())
        else:
            assert bool((lengths >= 1).all())  # empty lists become one "missing" id


def test_statistics_describe_each_feature(feed: tuple[Store, Manifest, Manifest]) -> None:
    store, samples, features = feed
    stats = {s["name"]: s for s in features.status["features"]}
    train = read_split(store, samples, "train")
    assert stats["user_id"]["cardinality"] == len(set(train["user_id"].to_pylist()))
    assert stats["network"]["nullRate"] == pytest.approx(train["network"].null_count / train.num_rows, abs=1e-6)
    assert stats["item_id"]["oovRate"] > 0  # minCount 2 and new posts in validation
    ages = train["item_age_hours"].to_numpy().astype(np.float64)
    assert stats["item_age_hours"]["mean"] == pytest.approx(ages.mean(), rel=1e-4)
    assert stats["item_age_hours"]["std"] == pytest.approx(ages.std(), rel=1e-3)
    # HyperLogLog: within a few percent of the exact count.
    distinct = len(set(train["item_age_hours"].to_pylist()))
    assert stats["item_age_bucket"]["cardinality"] == pytest.approx(distinct, rel=0.05)
    assert features.status["sampleSetVersion"] == samples.version


def test_a_featureset_rerun_is_idempotent_and_follows_new_samples(feed: tuple[Store, Manifest, Manifest]) -> None:
    store, _, features = feed
    assert materialize_featureset(_fs(feed_features()), store, NS, "feed-features").version == features.version
    changed = _fs([*feed_features()[:3]])
    assert materialize_featureset(changed, store, NS, "other").version != features.version


# ---- each transform ------------------------------------------------------------------------------
def _rows(n: int = 40) -> list[dict[str, Any]]:
    rows = []
    for k in range(n):
        rows.append(
            {
                "user_id": "u-frequent" if k % 2 == 0 else ("u-rare" if k == 1 else f"u{k % 5}"),
                "city": None if k % 10 == 0 else ["paris", "rome"][k % 2],
                "amount": float(k) - 10.0,
                "count": k,
                "tags": [] if k % 4 == 0 else [f"t{k % 3}", f"t{(k + 1) % 3}"],
                "ts": 1_000 + k,
                "clicked": k % 3 == 0,
            }
        )
    return rows


def test_vocabulary_ids_are_by_frequency_with_oov_and_missing(store: Store, tmp_path: Path) -> None:
    samples = _samples_from_rows(store, _rows(), tmp_path)
    spec = _fs([_feature("user", "sparse", ["user_id"], {"type": "vocabulary", "minCount": 2})], "s")
    processor = FeatureProcessor.from_store(store, materialize_featureset(spec, store, NS, "f"))
    out = processor.transform_rows(
        [{"user_id": "u-frequent"}, {"user_id": "u-rare"}, {"user_id": "never-seen"}, {"user_id": None}, {}]
    )
    ids, _ = out.ids("user")
    assert ids.tolist() == [2, OOV_ID, OOV_ID, MISSING_ID, MISSING_ID]
    vocab = processor.vocabularies["user"]
    assert vocab["value"][0].as_py() == "u-frequent" and "u-rare" not in vocab["value"].to_pylist()
    assert samples.status["trainRows"] == 30


def test_hash_bucketize_quantile_cross_and_dense_transforms(store: Store, tmp_path: Path) -> None:
    _samples_from_rows(store, _rows(), tmp_path)
    features = [
        _feature("user_h", "sparse", ["user_id"], {"type": "hash", "buckets": 7}),
        _feature("amount_b", "sparse", ["amount"], {"type": "bucketize", "boundaries": [-5.0, 0.0, 5.0]}),
        _feature("count_q", "sparse", ["count"], {"type": "quantile", "numQuantiles": 4}),
        _feature("user_x_city", "sparse", ["user_id", "city"], {"type": "cross", "buckets": 100}),
        _feature("tags", "multi_hot", ["tags"], {"type": "vocabulary"}),
        _feature("amount_log", "dense", ["amount"], {"type": "log1p"}),
        _feature("count_std", "dense", ["count"], {"type": "standardize"}),
        _feature("count_raw", "dense", ["count"], {"type": "identity"}),
    ]
    processor = FeatureProcessor.from_store(store, materialize_featureset(_fs(features, "s"), store, NS, "f"))
    rows = [
        {"user_id": "a", "city": "rome", "amount": -7.0, "count": 0, "tags": ["t1", "t0"]},
        {"user_id": "a", "city": "rome", "amount": -5.0, "count": 29, "tags": []},
        {"user_id": "b", "city": None, "amount": 5.0, "count": None, "tags": None},
        {"user_id": None, "city": "rome", "amount": None, "count": 12},
    ]
    out = processor.transform_rows(rows)
    h, _ = out.ids("user_h")
    assert h[0] == h[1] and 1 <= h[0] <= 7 and h[3] == MISSING_ID
    assert out.ids("amount_b")[0].tolist() == [1, 2, 4, MISSING_ID]  # x < -5 | -5 <= x < 0 | x >= 5
    q = processor.params("count_q")["boundaries"]
    assert q == sorted(q) and len(q) == 3 and out.ids("count_q")[0][2] == MISSING_ID
    cross, _ = out.ids("user_x_city")
    assert cross[0] == cross[1] and cross[2] == MISSING_ID and cross[3] == MISSING_ID
    tags, tag_lengths = out.ids("tags")
    assert tag_lengths.tolist() == [2, 1, 1, 1] and tags[2:].tolist() == [MISSING_ID] * 3
    assert set(tags[:2].tolist()) <= {2, 3, 4}
    dense = dict(zip(processor.dense_features, out.dense.T, strict=True))
    assert dense["amount_log"][:3] == pytest.approx([-np.log1p(7.0), -np.log1p(5.0), np.log1p(5.0)])
    assert dense["amount_log"][3] == 0.0
    mean, std = processor.params("count_std")["mean"], processor.params("count_std")["std"]
    assert dense["count_std"][[0, 1, 3]] == pytest.approx([(0 - mean) / std, (29 - mean) / std, (12 - mean) / std])
    assert dense["count_std"][2] == 0.0 and dense["count_raw"].tolist() == [0.0, 29.0, 0.0, 12.0]


def test_quantile_buckets_hold_about_equal_shares(store: Store, tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rows = [{"user_id": f"u{k}", "ts": k, "clicked": 1, "x": float(v)} for k, v in enumerate(rng.lognormal(size=4000))]
    samples = _samples_from_rows(store, rows, tmp_path)
    spec = _fs([_feature("xq", "sparse", ["x"], {"type": "quantile", "numQuantiles": 8})], "s")
    processor = FeatureProcessor.from_store(store, materialize_featureset(spec, store, NS, "f"))
    ids, _ = processor.transform(read_split(store, samples, "train")).ids("xq")
    shares = np.bincount(ids, minlength=10)[1:9] / len(ids)
    assert shares == pytest.approx([1 / 8] * 8, abs=0.01)


def test_the_hash_is_stable_across_processes_and_encodings() -> None:
    # Pinned: changing these breaks every stored model's embedding rows.
    assert hash_array(pa.array(["u1", "", "a somewhat longer id 12345"]))[0].tolist() == [
        5393791202661110065,
        10616074799439803362,
        11465318053345216177,
    ]
    assert hash_array(pa.array([0, 1, -5]))[0].tolist() == [
        11286133854226296554,
        16572613472718614229,
        17989071919490194653,
    ]
    values = pa.array(["x", None, "yy", "zzzzzzzzzzzz", "x"])
    plain, nulls = hash_array(values)
    assert nulls.tolist() == [False, True, False, False, False]
    for other in (
        values.dictionary_encode(),
        values.cast(pa.large_string()),
        pa.chunked_array([values[:2], values[2:]]),
    ):
        assert hash_array(other)[0].tolist() == plain.tolist()
    assert hash_array(values.slice(2))[0].tolist() == plain[2:].tolist()
    assert hash_array(pa.array([1, 2], pa.int32()))[0].tolist() == hash_array(pa.array([1, 2], pa.int64()))[0].tolist()


def test_serving_values_are_cast_to_the_training_types(store: Store, tmp_path: Path) -> None:
    _samples_from_rows(store, _rows(), tmp_path)
    spec = _fs([_feature("count_v", "sparse", ["count"], {"type": "vocabulary"})], "s")
    processor = FeatureProcessor.from_store(store, materialize_featureset(spec, store, NS, "f"))
    as_int = processor.transform_rows([{"count": 3}])
    as_text = processor.transform_rows([{"count": "3"}])
    assert as_int.values.tolist() == as_text.values.tolist() != [OOV_ID]
    with pytest.raises(DataError, match=r"rows\[1\].count: expected int64, got 'three'"):
        processor.transform_rows([{"count": 3}, {"count": "three"}])


# ---- sensitivity and bad specs -------------------------------------------------------------------
def _sensitive(allowed: list[str]) -> Feature:
    return _feature(
        "user_income", "dense", ["count"], {"type": "log1p"}, group="reader", sensitive=True, allowedNamespaces=allowed
    )


def test_a_sensitive_feature_is_refused_outside_its_namespaces(store: Store, tmp_path: Path) -> None:
    _samples_from_rows(store, _rows(), tmp_path)
    spec = _fs([_feature("count_v", "sparse", ["count"], {"type": "vocabulary"}), _sensitive(["finance"])], "s")
    errors = check_sensitive(spec, NS)
    assert len(errors) == 1 and "spec.features[1] (user_income)" in errors[0] and "'default'" in errors[0]
    assert "allowedNamespaces: finance" in errors[0]
    with pytest.raises(DataError, match=r"user_income.*not allowed in namespace 'default'"):
        materialize_featureset(spec, store, NS, "f")
    assert store.versions(NS, "featureset", "f") == []
    assert check_sensitive(spec, "finance") == []
    assert check_sensitive(_fs([_sensitive([])], "s"), "finance")  # sensitive with no namespace: nobody


def test_a_column_absent_from_the_samples_is_named(store: Store, tmp_path: Path) -> None:
    _samples_from_rows(store, _rows(), tmp_path)
    spec = _fs(
        [
            _feature("count_v", "sparse", ["count"], {"type": "vocabulary"}),
            _feature("age", "dense", ["user_age"], {"type": "log1p"}),
        ],
        "s",
    )
    with pytest.raises(DataError, match=r"spec.features\[1\].columns: feature 'age': column 'user_age' is not in"):
        materialize_featureset(spec, store, NS, "f")
    assert store.versions(NS, "featureset", "f") == []


@pytest.mark.parametrize(
    ("feature", "message"),
    [
        (_feature("t", "sparse", ["tags"], {"type": "vocabulary"}), "declare the feature multi_hot"),
        (_feature("u", "multi_hot", ["user_id"], {"type": "vocabulary"}), "multi_hot needs a list column"),
        (_feature("u", "dense", ["user_id"], {"type": "log1p"}), "a dense feature needs a numeric column"),
        (_feature("u", "sparse", ["city"], {"type": "quantile"}), "quantile needs numbers"),
        (_feature("p", "dense", ["_p_label"], {"type": "identity"}), "column '_p_label' is internal"),
    ],
)
def test_a_feature_that_does_not_fit_its_column_is_refused(
    store: Store, tmp_path: Path, feature: Feature, message: str
) -> None:
    _samples_from_rows(store, _rows(), tmp_path)
    with pytest.raises(DataError, match=rf"spec.features\[0\].columns: .*{message}"):
        materialize_featureset(_fs([feature], "s"), store, NS, "f")


def test_a_missing_sampleset_is_named(store: Store) -> None:
    with pytest.raises(DataError, match=r"spec.sampleSetRef: SampleSet default/nowhere has no a version"):
        materialize_featureset(_fs(feed_features(), "nowhere"), store, NS, "f")


def test_the_criteo_catalog_fits_the_criteo_shape(store: Store) -> None:
    spec = SampleSetSpec.model_validate(
        {"source": {"format": "synthetic", "synthetic": {"shape": "criteo", "events": 8000}}}
    )
    materialize_sampleset(spec, store, NS, "criteo")
    m = materialize_featureset(_fs(criteo_features(), "criteo"), store, NS, "criteo-features")
    processor = FeatureProcessor.from_store(store, m)
    assert len(processor.sparse_features) == 26 and len(processor.dense_features) == 13


def test_nan_counts_as_missing_and_booleans_are_numbers(store: Store, tmp_path: Path) -> None:
    rows = [
        {
            "user_id": f"u{k}",
            "ts": k,
            "clicked": 1,
            "score": float("nan") if k % 4 == 0 else float(k),
            "flag": k % 2 == 0,
        }
        for k in range(40)
    ]
    samples = _samples_from_rows(store, rows, tmp_path)
    features = [
        _feature("score", "dense", ["score"], {"type": "identity"}),
        _feature("flag", "dense", ["flag"], {"type": "standardize"}),
        _feature("score_b", "sparse", ["score"], {"type": "bucketize", "boundaries": [10.0]}),
    ]
    m = materialize_featureset(_fs(features, "s"), store, NS, "f")
    stats = {s["name"]: s for s in m.status["features"]}
    train = [r for r in read_split(store, samples, "train").to_pylist()]
    finite = [r["score"] for r in train if r["score"] == r["score"]]
    assert stats["score"]["nullRate"] == pytest.approx(1 - len(finite) / len(train), abs=1e-6)
    assert stats["score"]["mean"] == pytest.approx(np.mean(finite), rel=1e-6)
    assert stats["flag"]["mean"] == pytest.approx(np.mean([r["flag"] for r in train]), rel=1e-6)
    processor = FeatureProcessor.from_store(store, m)
    out = processor.transform_rows([{"score": float("nan"), "flag": True}, {"score": 12.0, "flag": False}])
    assert out.dense[:, 0].tolist() == [0.0, 12.0]
    assert out.ids("score_b")[0].tolist() == [MISSING_ID, 2]


def test_vocabularies_do_not_depend_on_how_partial_counts_are_merged(
    feed: tuple[Store, Manifest, Manifest], monkeypatch: pytest.MonkeyPatch
) -> None:
    store, samples, _ = feed
    spec = _fs([f for f in feed_features() if f.transform.type == "vocabulary"])
    once = fit_processor(spec, store, samples)[0]
    monkeypatch.setattr(fitting, "_same_values", lambda a, b: False)  # every batch on its own
    monkeypatch.setattr(fitting, "_MERGE_ROWS", 50)  # merged in after (almost) every batch
    often = fit_processor(spec, store, samples, batch_rows=1000)[0]
    for name, vocab in once.vocabularies.items():
        assert often.vocabularies[name].select(["value", "count"]).equals(vocab.select(["value", "count"]))
