"""Model versions: what a finished run stores, how serving loads it back (fp32 and int8), recall indexes,
warm starts, and a re-run of the same spec finding its version instead of training again."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pipeline_data as pdx
import pyarrow.compute as pc
import pytest
import torch

from recplane.api.trainjob import TrainJobStatus
from recplane.data.metrics import roc_auc
from recplane.data.samples import read_split
from recplane.data.tensors import to_torch
from recplane.store import LocalStore, Manifest
from recplane.trainer.export import ModelVersionError, load_model_version, score_table
from recplane.trainer.step import train_job

VERSION_FILES = {
    "model.pt",
    "model_int8.pt",
    "model_config.json",
    "metrics.json",
    "sharding_plan.json",
    "MODEL_CARD.md",
    "features/feature_spec.json",
}


@pytest.fixture(scope="module")
def trained(store_template: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[LocalStore, Manifest]:
    root = tmp_path_factory.mktemp("versions") / "store"
    shutil.copytree(store_template, root)
    store = LocalStore(root)
    doc = pdx.trainjob(
        "ranker",
        model={"type": "deepfm", "batchNorm": True},
        optimization={"epochs": 2},
        distributed={"procsPerWorker": 1, "sharding": "auto"},
        checkpoint={"everySteps": 1000},
    )
    return store, train_job(pdx.resource(doc), store)


def validation(store: LocalStore):  # type: ignore[no-untyped-def]
    samples = store.latest("default", "sampleset", pdx.SAMPLES)
    assert samples is not None
    return read_split(store, samples, "validation")


def test_a_version_holds_what_serving_needs_and_nothing_else(trained: tuple[LocalStore, Manifest]) -> None:
    _, manifest = trained
    files = set(manifest.files)
    assert files >= VERSION_FILES
    assert {f for f in files if not f.startswith("features/")} == {f for f in VERSION_FILES if "/" not in f}
    # The manifest carries the TrainJob status in the API's camelCase form.
    status = TrainJobStatus.model_validate(manifest.status)
    assert status.latest_version == manifest.version
    assert status.versions[0].uri == manifest.uri
    assert status.metrics is not None and status.metrics.auc is not None
    assert manifest.inputs["featureSet"]["name"] == pdx.FEATURES
    card = (Path(manifest.uri) / "MODEL_CARD.md").read_text()
    for section in ("## Intended use", "## Data", "## Training", "## Validation metrics", "## Limitations"):
        assert section in card
    assert manifest.version in card


def test_loaded_model_scores_validation_rows_with_the_stored_auc(trained: tuple[LocalStore, Manifest]) -> None:
    store, manifest = trained
    loaded = load_model_version(manifest.uri)
    table = validation(store)
    scores = score_table(loaded, table)
    assert scores.shape == (table.num_rows,)
    assert np.all((scores > 0) & (scores < 1))
    auc = roc_auc(scores, table["label"].to_numpy())
    assert auc == pytest.approx(loaded.metrics["auc"], abs=1e-4)
    assert loaded.version == manifest.version and loaded.model_type == "deepfm" and loaded.task == "ranking"


def test_the_serving_path_gives_the_offline_scores(trained: tuple[LocalStore, Manifest]) -> None:
    store, manifest = trained
    loaded = load_model_version(manifest.uri)
    table = validation(store).slice(0, 16)
    offline = score_table(loaded, table)
    online = loaded.score(to_torch(loaded.processor.transform_rows(table.to_pylist()))).numpy()
    np.testing.assert_allclose(online, offline, rtol=1e-6, atol=1e-6)


def test_the_int8_variant_is_smaller_and_ranks_almost_as_well(trained: tuple[LocalStore, Manifest]) -> None:
    store, manifest = trained
    metrics = json.loads((Path(manifest.uri) / "metrics.json").read_text())
    assert abs(metrics["aucInt8"] - metrics["auc"]) < 0.01
    assert metrics["embeddingBytes"]["int8"] < metrics["embeddingBytes"]["fp32"] / 2
    int8 = load_model_version(manifest.uri, variant="int8")
    table = validation(store)
    auc = roc_auc(score_table(int8, table), table["label"].to_numpy())
    assert auc == pytest.approx(metrics["aucInt8"], abs=1e-4)
    tables = [t for k, t in int8.model.state_dict().items() if k.endswith("emb_user_id.weight")]
    assert tables and tables[0].dtype == torch.uint8


def test_bf16_dense_layers_train_a_model_that_ranks_as_well_and_is_stored_in_fp32(
    trained: tuple[LocalStore, Manifest],
) -> None:
    store, fp32 = trained
    doc = pdx.trainjob(
        "ranker-bf16",
        model={"type": "deepfm", "batchNorm": True},
        optimization={"epochs": 2, "densePrecision": "bf16"},
        distributed={"procsPerWorker": 1, "sharding": "auto"},
        checkpoint={"everySteps": 1000},
    )
    bf16 = train_job(pdx.resource(doc), store)
    weights = torch.load(Path(bf16.uri) / "model.pt", weights_only=True)
    assert {t.dtype for n, t in weights.items() if "num_batches" not in n} == {torch.float32}
    loaded = load_model_version(bf16.uri)
    table = validation(store)
    auc = roc_auc(score_table(loaded, table), table["label"].to_numpy())
    assert auc == pytest.approx(loaded.metrics["auc"], abs=1e-4)
    assert abs(auc - load_model_version(fp32.uri).metrics["auc"]) < 0.01


def test_a_version_in_an_older_model_format_is_refused_naming_the_fix(
    trained: tuple[LocalStore, Manifest], tmp_path: Path
) -> None:
    store, manifest = trained
    old = tmp_path / "old-version"
    shutil.copytree(manifest.uri, old)
    config = json.loads((old / "model_config.json").read_text())
    (old / "model_config.json").write_text(json.dumps({**config, "formatVersion": 1}))
    with pytest.raises(ModelVersionError, match=r"model format 1.*train the TrainJob again"):
        load_model_version(old)
    doc = pdx.trainjob("ranker", model={"type": "deepfm", "batchNorm": True}, optimization={"maxSteps": 1})
    with pytest.raises(ModelVersionError, match="train the TrainJob again"):
        train_job(pdx.resource(doc), store, warm_start_from=old)


def test_running_the_same_spec_again_returns_the_stored_version(trained: tuple[LocalStore, Manifest]) -> None:
    store, manifest = trained
    doc = pdx.trainjob(
        "ranker",
        model={"type": "deepfm", "batchNorm": True},
        optimization={"epochs": 2},
        distributed={"procsPerWorker": 1, "sharding": "auto"},
        checkpoint={"everySteps": 1000},
    )
    again = train_job(pdx.resource(doc), store)
    assert again == manifest
    assert [m.version for m in store.versions("default", "trainjob", "ranker")] == [manifest.version]


def test_a_warm_start_continues_from_the_given_version(trained: tuple[LocalStore, Manifest]) -> None:
    store, manifest = trained
    # Learning rates near zero: the new version must keep the warm-start weights.
    doc = pdx.trainjob(
        "ranker",
        model={"type": "deepfm", "batchNorm": True},
        optimization={"maxSteps": 1, "learningRate": 1e-9, "sparseLearningRate": 1e-9, "sparseOptimizer": "sgd"},
        distributed={"procsPerWorker": 1, "sharding": "auto"},
        checkpoint={"everySteps": 1000},
    )
    warm = train_job(pdx.resource(doc), store, warm_start_from=manifest.version)
    assert warm.version != manifest.version
    assert warm.inputs["warmStartFrom"] == manifest.version
    before = torch.load(Path(manifest.uri) / "model.pt", weights_only=True)
    after = torch.load(Path(warm.uri) / "model.pt", weights_only=True)
    for name, tensor in before.items():
        if "running_" in name or "num_batches" in name:
            continue  # batch-norm statistics move with the new batch whatever the learning rate
        torch.testing.assert_close(after[name], tensor, atol=1e-5, rtol=0, msg=name)


@pytest.mark.parametrize("model_type", ["two_tower", "fm_recall"])
def test_recall_models_store_an_item_index_and_recall_metrics(store: LocalStore, model_type: str) -> None:
    doc = pdx.trainjob(
        f"recall-{model_type.replace('_', '-')}",
        model={"type": model_type, "topK": 20},
        optimization={"epochs": 1},
        distributed={"procsPerWorker": 1},
        checkpoint={"everySteps": 1000},
    )
    manifest = train_job(pdx.resource(doc), store)
    assert {"item_index/ids.parquet", "item_index/embeddings.npy"} <= set(manifest.files)
    loaded = load_model_version(manifest.uri)
    assert loaded.task == "recall" and loaded.item_index is not None
    metrics = loaded.metrics
    assert 0.0 <= metrics["recallAtK"] <= 1.0 and 0.0 <= metrics["ndcgAtK"] <= metrics["recallAtK"]
    assert metrics["k"] == 20 and metrics["itemIndexSize"] == len(loaded.item_index) > 20
    rows = validation(store).slice(0, 4)
    batch = to_torch(loaded.processor.transform(rows))
    users = loaded.user_embedding(batch)
    assert users.shape == (4, loaded.item_index.embeddings.shape[1])
    scores, items = loaded.item_index.top_k(users, 5)
    assert scores.shape == (4, 5) and items.shape == (4, 5)
    assert torch.all(scores[:, :-1] >= scores[:, 1:])
    # The index holds exactly what the item tower computes for an item's row.
    first = loaded.item_index.ids[0]
    train = read_split(store, store.latest("default", "sampleset", pdx.SAMPLES), "train")  # type: ignore[arg-type]
    row = train.filter(pc.equal(train["item_id"], first)).slice(0, 1)
    embedded = loaded.item_embedding(to_torch(loaded.processor.transform(row)))
    torch.testing.assert_close(embedded[0], loaded.item_index.embeddings[0], atol=1e-5, rtol=1e-5)
