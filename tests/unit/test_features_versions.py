"""FeatureSet versions over a followed SampleSet: vocabularies grow, ids never move, warm starts line up."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from recplane.api.featureset import Feature, FeatureSetSpec
from recplane.api.sampleset import SampleSetSpec
from recplane.data.features import OOV_ID, FeatureProcessor
from recplane.data.steps import materialize_featureset, materialize_sampleset
from recplane.data.tensors import to_torch
from recplane.store import LocalStore, Manifest, Store

torch.set_num_threads(1)
NS = "default"
MAX_SIZE = 6
VALIDATION_ROWS = 4  # the newest tenth of each batch


def _land_batch(events: Path, batch: int, counts: dict[str, int]) -> None:
    """One new event file: `counts` training rows per user id, then a few newer validation rows (all "a")."""
    users = [u for u, n in counts.items() for _ in range(n)] + ["a"] * VALIDATION_ROWS
    start = batch * 1_000
    rows = [{"user_id": u, "alias": u.upper(), "ts": start + k, "clicked": k % 2} for k, u in enumerate(users)]
    pq.write_table(pa.Table.from_pylist(rows), events / f"events-{batch:03d}.parquet")


def _sampleset(events: Path) -> SampleSetSpec:
    return SampleSetSpec.model_validate(
        {
            "source": {"format": "parquet", "uri": str(events), "follow": True},
            "dedupe": {"enabled": False},
            "botFilter": {"enabled": False},
            "inactiveUsers": {"enabled": False},
            "label": {"dwellColumn": None},
            "split": {"validationFraction": 0.1},
        }
    )


def _featureset() -> FeatureSetSpec:
    user = {"type": "vocabulary", "minCount": 2, "maxSize": MAX_SIZE}
    features = [
        {"name": "user", "group": "id", "type": "sparse", "columns": ["user_id"], "transform": user},
        {
            "name": "user_hashed",
            "group": "id",
            "type": "sparse",
            "columns": ["user_id"],
            "transform": {"type": "hash", "buckets": 64},
        },
    ]
    return FeatureSetSpec(sample_set_ref={"name": "events"}, features=[Feature.model_validate(f) for f in features])


def _version(store: Store, events: Path, batch: int, counts: dict[str, int]) -> Manifest:
    _land_batch(events, batch, counts)
    samples = materialize_sampleset(_sampleset(events), store, NS, "events")
    assert samples.row_counts["train"] == sum(counts.values())
    return materialize_featureset(_featureset(), store, NS, "features")


def _ids(processor: FeatureProcessor, users: list[str]) -> list[int]:
    return processor.transform_rows([{"user_id": u} for u in users]).ids("user")[0].tolist()


@pytest.fixture
def versions(tmp_path: Path) -> tuple[Store, Manifest, Manifest]:
    events = tmp_path / "events"
    events.mkdir()
    store = LocalStore(tmp_path / "store")
    # r is seen once (below minCount 2); the first version keeps a..e.
    first = _version(store, events, 0, {"a": 12, "b": 10, "c": 7, "d": 4, "e": 2, "r": 1})
    # New ids f, g, h and old a, b again; c, d and e do not come back. Room for one more id: f, the most frequent.
    second = _version(store, events, 1, {"f": 12, "b": 10, "g": 8, "h": 4, "a": 1, "r": 1})
    return store, first, second


def test_a_new_version_keeps_every_id_and_appends_new_values_up_to_max_size(
    versions: tuple[Store, Manifest, Manifest],
) -> None:
    store, first, second = versions
    assert second.version != first.version
    assert second.inputs["grownFrom"] == first.version and first.inputs["grownFrom"] is None
    v1, v2 = FeatureProcessor.from_store(store, first), FeatureProcessor.from_store(store, second)
    old, new = ["a", "b", "c", "d", "e"], ["f", "g", "h", "r", "never-seen"]
    assert _ids(v1, old) == [2, 3, 4, 5, 6]
    assert _ids(v1, new) == [OOV_ID] * 5
    assert _ids(v2, old) == [2, 3, 4, 5, 6]  # ids never move, seen again or not
    assert _ids(v2, new) == [7, OOV_ID, OOV_ID, OOV_ID, OOV_ID]  # f fills the last place; the rest map to OOV
    vocab = v2.vocabularies["user"]
    assert vocab["value"].to_pylist() == ["a", "b", "c", "d", "e", "f"]
    assert vocab["count"].to_pylist() == [13, 20, 7, 4, 2, 12]  # counted over both versions' data
    # The table has room for maxSize ids from the first version on, so its shape never changes.
    assert {s.name: s.num_embeddings for s in v1.sparse_features} == {"user": MAX_SIZE + 2, "user_hashed": 65}
    assert [s.num_embeddings for s in v2.sparse_features] == [s.num_embeddings for s in v1.sparse_features]
    stats = {s["name"]: s for s in second.status["features"]}
    assert stats["user"]["cardinality"] == 6  # distinct values in the new version's training rows
    assert stats["user"]["oovRate"] == 0.0  # "a" in validation is not in the newest batch's ranking, but kept


def test_earlier_versions_stay_as_they_were_and_a_rerun_finds_the_current_one(
    versions: tuple[Store, Manifest, Manifest], tmp_path: Path
) -> None:
    store, first, second = versions
    again = materialize_featureset(_featureset(), store, NS, "features")
    assert again.version == second.version
    assert [m.version for m in store.versions(NS, "featureset", "features")] == [first.version, second.version]
    reloaded = FeatureProcessor.from_store(store, store.resolve(NS, "featureset", "features", first.version))
    assert reloaded.vocabularies["user"]["value"].to_pylist() == ["a", "b", "c", "d", "e"]


def test_a_new_min_count_keeps_the_ids_and_a_vocabulary_over_other_columns_starts_afresh(
    versions: tuple[Store, Manifest, Manifest],
) -> None:
    store, _, _ = versions
    spec = _featureset()
    spec.features[0].transform.min_count = 1  # for the values appended from now on
    kept = FeatureProcessor.from_store(store, materialize_featureset(spec, store, NS, "features"))
    assert _ids(kept, ["a", "b", "c", "d", "e", "f", "g"]) == [2, 3, 4, 5, 6, 7, OOV_ID]
    spec.features[0].columns = ["alias"]
    fresh = FeatureProcessor.from_store(store, materialize_featureset(spec, store, NS, "features"))
    # Ranked on the newest batch alone (A and R, seen once, fill the last places in some order).
    assert fresh.vocabularies["user"]["value"].to_pylist()[:4] == ["F", "B", "G", "H"]
    assert fresh.sparse_features[0].num_embeddings == MAX_SIZE + 2


def test_a_warm_started_model_scores_old_ids_as_the_model_it_started_from(
    versions: tuple[Store, Manifest, Manifest],
) -> None:
    from recplane.api.trainjob import ModelConfig
    from recplane.trainer.job import check_warm_start
    from recplane.trainer.models import ModelInputs, build_model
    from recplane.trainer.weights import init_embeddings, load_unsharded

    store, first, second = versions
    v1, v2 = FeatureProcessor.from_store(store, first), FeatureProcessor.from_store(store, second)
    config = ModelConfig(type="fm", embedding_dim=4)
    inputs1, inputs2 = ModelInputs.from_processor(v1, 4), ModelInputs.from_processor(v2, 4)
    check_warm_start(inputs1, inputs2, first.version)  # same table shapes: the warm start is allowed
    torch.manual_seed(0)
    old = build_model(config, inputs1, device=torch.device("cpu"))
    init_embeddings(old, seed=1)
    torch.manual_seed(1)
    warm = build_model(config, inputs2, device=torch.device("cpu"))
    init_embeddings(warm, seed=2)
    load_unsharded(warm, old.state_dict(), prefix="")
    rows: list[dict[str, Any]] = [{"user_id": u} for u in ["a", "b", "c", "e"]]
    with torch.no_grad():
        before = old.eval()(*_inputs(v1, rows))
        after = warm.eval()(*_inputs(v2, rows))
    torch.testing.assert_close(after, before)


def _inputs(processor: FeatureProcessor, rows: list[dict[str, Any]]) -> tuple[Any, torch.Tensor]:
    batch = to_torch(processor.transform_rows(rows))
    return batch.sparse, batch.dense
