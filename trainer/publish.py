"""Writing a model version (rank 0): unsharded weights, the int8 variant with its own validation
metrics, the item index of recall models, config, plan, metrics and the model card."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import torch
from torch import nn

from recplane.api.trainjob import ModelMetrics, ModelVersion, TrainJobSpec, TrainJobStatus
from recplane.store import Manifest, Store

from .card import render_card
from .data import Batch, SampleData
from .evaluate import BinaryMetrics, ItemIndex, recall_metrics
from .export import (
    CARD_FILE,
    CONFIG_FILE,
    FEATURES_DIR,
    METRICS_FILE,
    MODEL_FILE,
    MODEL_INT8_FILE,
    PLAN_FILE,
    VersionConfig,
    build_inference_model,
    build_item_index,
    write_item_index,
)
from .job import KIND, JobInputs, content_spec
from .loop import TrainSummary
from .models import RecallModel
from .quantize import quantize_int8, table_bytes

EVAL_BATCH = 4096


@dataclass
class PublishRequest:
    store: Store
    namespace: str
    name: str
    version: str
    spec: TrainJobSpec
    job: JobInputs
    data: SampleData
    summary: TrainSummary
    metrics: dict[str, Any]
    plan: dict[str, Any]
    world_size: int
    backend: str
    log: Any = print


@torch.no_grad()
def _local_metrics(model: nn.Module, data: SampleData) -> dict[str, float | None]:
    """AUC and logloss of an unsharded model over the whole validation split (this process only)."""
    metrics = BinaryMetrics(sync=False)
    seen = 0
    for batch, _ in data.batches("validation", EVAL_BATCH, 0, 1):
        assert batch.inputs.labels is not None
        metrics.update(model(batch.inputs.sparse, batch.inputs.dense), batch.inputs.labels, batch.inputs.weights)
        seen += batch.rows
    return metrics.compute() if seen else {"auc": None, "logloss": None}


def _catalog(data: SampleData) -> Iterator[tuple[pa.Table, list[object]]]:
    """One row per training item (its first appearance), in batches: the items recall can return."""
    assert data.item_column is not None
    seen: set[object] = set()
    for record in data.record_batches("train", 65_536, 0, 1):
        keep, fresh = [], []
        for i, v in enumerate(record.column(data.item_column).to_pylist()):
            if v is not None and v not in seen:
                seen.add(v)
                keep.append(i)
                fresh.append(v)
        if keep:
            yield pa.Table.from_batches([record]).take(pa.array(keep)), fresh


def _recall_batches(data: SampleData) -> Iterator[tuple[Batch, list[object]]]:
    assert data.item_column is not None
    for batch, record in data.batches("validation", EVAL_BATCH, 0, 1):
        yield batch, record.column(data.item_column).to_pylist()


def publish(req: PublishRequest, state: dict[str, torch.Tensor]) -> Manifest:
    """Evaluate the exported variants and store the version (manifest last)."""
    spec, job = req.spec, req.job
    config = VersionConfig(
        version=req.version,
        model=spec.model,
        inputs=job.inputs,
        trained_precision=spec.optimization.embedding_precision,
        extra={"trainJob": {"namespace": req.namespace, "name": req.name}},
    )
    model = build_inference_model(config, state)
    int8 = quantize_int8(model)
    req.log("evaluating the int8 variant on the validation split")
    int8_metrics = _local_metrics(int8, req.data)
    metrics: dict[str, Any] = {
        **req.metrics,
        "samplesPerSecond": round(req.summary.samples_per_second, 1),
        "aucInt8": int8_metrics["auc"],
        "loglossInt8": int8_metrics["logloss"],
        "steps": req.summary.steps,
        "trainSeconds": round(req.summary.seconds, 2),
        "embeddingBytes": {
            "trained": _trained_bytes(req.plan),
            "fp32": _trained_bytes(req.plan, 4),
            "int8": table_bytes(int8),
        },
        "bayesAuc": (job.samples.status or {}).get("bayesAuc"),
    }
    index: ItemIndex | None = None
    if isinstance(model, RecallModel) and req.data.item_column is not None:
        req.log("building the item index and computing recall@K / NDCG@K")
        index = build_item_index(model, job.processor, _catalog(req.data))

        def embed(batch: Batch) -> torch.Tensor:
            assert isinstance(model, RecallModel)
            return model.user_embedding(batch.inputs.sparse, batch.inputs.dense)

        with torch.no_grad():
            metrics.update(recall_metrics(embed, index, _recall_batches(req.data), spec.model.top_k))
        metrics["itemIndexSize"] = len(index)
    created = datetime.now(UTC)
    facts = {
        "createdAt": created.isoformat(timespec="seconds"),
        "featureSet": job.featureset.name,
        "featureSetVersion": job.featureset.version,
        "sampleSet": job.samples.name,
        "sampleSetVersion": job.samples.version,
        "trainRows": req.data.rows_per_rank("train", 1),
        "validationRows": req.data.rows_per_rank("validation", 1),
        "warmStartFrom": job.warm_start.version if job.warm_start else None,
        "worldSize": req.world_size,
        "backend": req.backend,
        "sharding": spec.distributed.sharding,
        "sparseOptimizer": spec.optimization.sparse_optimizer,
        "denseOptimizer": spec.optimization.dense_optimizer,
        "lrSchedule": spec.optimization.lr_schedule,
        "steps": req.summary.steps,
    }
    with tempfile.TemporaryDirectory(prefix="recplane-model-") as tmp:
        staging = Path(tmp)
        torch.save(model.state_dict(), staging / MODEL_FILE)
        torch.save(int8.state_dict(), staging / MODEL_INT8_FILE)
        (staging / CONFIG_FILE).write_text(json.dumps(config.to_json(), indent=2, sort_keys=True))
        job.processor.save(staging / FEATURES_DIR)
        (staging / METRICS_FILE).write_text(json.dumps(metrics, indent=2, sort_keys=True))
        (staging / PLAN_FILE).write_text(json.dumps(req.plan, indent=2, sort_keys=True))
        (staging / CARD_FILE).write_text(render_card(config, req.name, req.namespace, metrics, facts, req.plan))
        if index is not None:
            write_item_index(staging, index)
        uri = req.store.version_uri(req.namespace, KIND, req.name, req.version)
        model_metrics = ModelMetrics.model_validate(
            {k: v for k, v in metrics.items() if k in ("auc", "logloss", "samplesPerSecond", "recallAtK", "ndcgAtK")}
            | {"aucInt8": metrics["aucInt8"]}
        )
        status = TrainJobStatus(
            step=req.summary.steps,
            feature_set_version=job.featureset.version,
            metrics=model_metrics,
            latest_version=req.version,
            versions=[ModelVersion(version=req.version, uri=uri, created_at=created, metrics=model_metrics)],
        ).to_wire()
        status.pop("conditions", None)
        status.pop("restarts", None)
        manifest = Manifest(
            kind=KIND,
            namespace=req.namespace,
            name=req.name,
            version=req.version,
            created_at=created,
            spec=spec.to_wire(),
            inputs={
                "featureSet": {"name": job.featureset.name, "version": job.featureset.version},
                "sampleSet": {"name": job.samples.name, "version": job.samples.version},
                "warmStartFrom": facts["warmStartFrom"],
                "content": content_spec(spec),
            },
            row_counts={
                "train": req.data.rows_per_rank("train", 1),
                "validation": req.data.rows_per_rank("validation", 1),
            },
            status=status,
        )
        return req.store.publish(staging, manifest)


def _trained_bytes(plan: dict[str, Any], bytes_per_value: int | None = None) -> int:
    size = {"fp32": 4, "fp16": 2}
    return sum(
        int(p["rows"]) * int(p["dim"]) * (bytes_per_value or size.get(str(p["dataType"]), 4)) for p in plan.values()
    )
