"""Model versions: what rank 0 writes at the end of training, and how serving loads it back.

A version directory holds everything serving needs and nothing else:

    model.pt            unsharded fp32 state dict of the inference model
    model_int8.pt       the same with row-wise int8 embedding tables (TorchRec quantized EBC)
    model_config.json   model type and hyper-parameters, the model inputs, the version
    features/           the FeatureSet's feature-spec artifact it was trained with
    metrics.json        validation metrics (fp32 and int8), throughput
    sharding_plan.json  the TorchRec plan the run used
    MODEL_CARD.md       the model card
    item_index/         recall models only: ids.parquet (raw item ids) + embeddings.npy [N, E]
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch import nn

from recplane.api.trainjob import ModelConfig
from recplane.data.features import FeatureProcessor
from recplane.data.tensors import TorchBatch, to_torch
from recplane.store import MANIFEST_FILE, Manifest

from .evaluate import ItemIndex
from .models import ModelInputs, RecallModel, build_model
from .quantize import int8_skeleton

# 2: each feature's first-order weight sits in 4 extra columns of its embedding row.
FORMAT_VERSION = 2
MODEL_FILE = "model.pt"
MODEL_INT8_FILE = "model_int8.pt"
CONFIG_FILE = "model_config.json"
FEATURES_DIR = "features"
METRICS_FILE = "metrics.json"
PLAN_FILE = "sharding_plan.json"
CARD_FILE = "MODEL_CARD.md"
ITEM_INDEX_DIR = "item_index"
VARIANTS = ("fp32", "int8")


class ModelVersionError(ValueError):
    """A directory that is not a loadable model version; the message says what is missing."""


@dataclass(frozen=True)
class VersionConfig:
    """`model_config.json`: what to build and what it reads."""

    version: str
    model: ModelConfig
    inputs: ModelInputs
    trained_precision: str = "fp32"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def task(self) -> str:
        return "recall" if self.model.type in ("two_tower", "fm_recall") else "ranking"

    def to_json(self) -> dict[str, Any]:
        return {
            "formatVersion": FORMAT_VERSION,
            "version": self.version,
            "task": self.task,
            "model": self.model.to_wire(),
            "inputs": self.inputs.to_json(),
            "trainedPrecision": self.trained_precision,
            **self.extra,
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> VersionConfig:
        if doc.get("formatVersion") != FORMAT_VERSION:
            raise ModelVersionError(
                f"model version {doc.get('version')} has model format {doc.get('formatVersion')}, and this "
                f"recplane reads format {FORMAT_VERSION}; train the TrainJob again (or serve the version "
                "with the recplane release that stored it)"
            )
        known = {"formatVersion", "version", "task", "model", "inputs", "trainedPrecision"}
        return cls(
            version=str(doc["version"]),
            model=ModelConfig.model_validate(doc["model"]),
            inputs=ModelInputs.from_json(doc["inputs"]),
            trained_precision=str(doc.get("trainedPrecision", "fp32")),
            extra={k: v for k, v in doc.items() if k not in known},
        )


def build_inference_model(config: VersionConfig, state: dict[str, torch.Tensor]) -> nn.Module:
    """The unsharded fp32 model with `state` loaded (tables assigned, never allocated twice)."""
    model = build_model(config.model, config.inputs, "fp32", device=torch.device("meta"))
    model.load_state_dict(state, strict=True, assign=True)
    return model.eval()


@dataclass
class LoadedModel:
    """A model version ready to score: what serving and offline evaluation use."""

    model: nn.Module
    processor: FeatureProcessor
    config: VersionConfig
    metrics: dict[str, Any]
    version: str
    variant: str
    item_index: ItemIndex | None = None
    manifest: Manifest | None = None

    @property
    def task(self) -> str:
        return self.config.task

    @property
    def model_type(self) -> str:
        return self.config.model.type

    @torch.no_grad()
    def logits(self, batch: TorchBatch) -> torch.Tensor:
        """[B] raw scores."""
        return self.model(batch.sparse, batch.dense)

    @torch.no_grad()
    def score(self, batch: TorchBatch) -> torch.Tensor:
        """[B] click probabilities (recall models: sigmoid of their pointwise score)."""
        return torch.sigmoid(self.logits(batch))

    def _recall(self) -> RecallModel:
        if not isinstance(self.model, RecallModel):
            raise TypeError(f"model type {self.model_type} is a ranking model; it has no user or item embeddings")
        return self.model

    @torch.no_grad()
    def user_embedding(self, batch: TorchBatch) -> torch.Tensor:
        """[B, E]: recall models only; reads the user-side features of `batch`."""
        return self._recall().user_embedding(batch.sparse, batch.dense)

    @torch.no_grad()
    def item_embedding(self, batch: TorchBatch) -> torch.Tensor:
        """[B, E]: recall models only; reads the item-side features of `batch`."""
        return self._recall().item_embedding(batch.sparse, batch.dense)

    def score_table(self, table: pa.Table | pa.RecordBatch, batch_size: int = 4096) -> np.ndarray:
        """Offline click probabilities [N] for raw rows (the serving transforms, in batches)."""
        return score_table(self, table, batch_size)


def score_table(loaded: LoadedModel, table: pa.Table | pa.RecordBatch, batch_size: int = 4096) -> np.ndarray:
    """Offline click probabilities [N] of `loaded` for the raw rows of `table`."""
    if isinstance(table, pa.RecordBatch):
        table = pa.Table.from_batches([table])
    out = [np.zeros(0, dtype=np.float32)]
    for start in range(0, table.num_rows, batch_size):
        chunk = table.slice(start, batch_size)
        out.append(loaded.score(to_torch(loaded.processor.transform(chunk))).numpy().astype(np.float32))
    return np.concatenate(out)


def load_model_version(local_dir: Path | str, variant: str = "fp32") -> LoadedModel:
    """Load the model version in `local_dir` (a store version directory) as `variant` fp32 or int8."""
    root = Path(local_dir)
    if variant not in VARIANTS:
        raise ModelVersionError(f"variant must be one of {', '.join(VARIANTS)}, got {variant!r}")
    for required in (CONFIG_FILE, MODEL_FILE, FEATURES_DIR):
        if not (root / required).exists():
            raise ModelVersionError(f"{root} is not a model version: {required} is missing")
    config = VersionConfig.from_json(json.loads((root / CONFIG_FILE).read_text()))
    processor = FeatureProcessor.load(root / FEATURES_DIR)
    if variant == "int8":
        if not (root / MODEL_INT8_FILE).exists():
            raise ModelVersionError(f"{root} has no int8 variant ({MODEL_INT8_FILE} is missing); load variant fp32")
        skeleton = int8_skeleton(build_model(config.model, config.inputs, "fp32", device=torch.device("meta")))
        # Copy, not assign: the int8 kernels keep references to the tensors they were built with.
        skeleton.load_state_dict(_load_state(root / MODEL_INT8_FILE), strict=True)
        model = skeleton.eval()
    else:
        model = build_inference_model(config, _load_state(root / MODEL_FILE))
    metrics = json.loads((root / METRICS_FILE).read_text()) if (root / METRICS_FILE).exists() else {}
    manifest = Manifest.from_json((root / MANIFEST_FILE).read_text()) if (root / MANIFEST_FILE).exists() else None
    return LoadedModel(
        model=model,
        processor=processor,
        config=config,
        metrics=metrics,
        version=manifest.version if manifest else config.version,
        variant=variant,
        item_index=read_item_index(root) if (root / ITEM_INDEX_DIR).exists() else None,
        manifest=manifest,
    )


def _load_state(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True, mmap=True)


# ---- writing ---------------------------------------------------------------------------
def write_item_index(directory: Path, index: ItemIndex) -> None:
    target = directory / ITEM_INDEX_DIR
    target.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({"item": pa.array(index.ids.tolist())}), target / "ids.parquet")
    np.save(target / "embeddings.npy", index.embeddings.numpy().astype(np.float32))


def read_item_index(directory: Path) -> ItemIndex:
    source = Path(directory) / ITEM_INDEX_DIR
    ids = pq.read_table(source / "ids.parquet")["item"].to_numpy(zero_copy_only=False)
    return ItemIndex(ids=ids, embeddings=torch.from_numpy(np.load(source / "embeddings.npy")))


def build_item_index(
    model: RecallModel, processor: FeatureProcessor, items: Iterator[tuple[pa.Table, list[object]]]
) -> ItemIndex:
    """Embed one representative row per item (its features as first seen in training)."""
    ids: list[object] = []
    parts = []
    with torch.no_grad():
        for table, raw in items:
            batch = to_torch(processor.transform(table))
            parts.append(model.item_embedding(batch.sparse, batch.dense))
            ids.extend(raw)
    embeddings = torch.cat(parts) if parts else torch.zeros(0, 1)
    return ItemIndex(ids=np.asarray(ids, dtype=object), embeddings=embeddings.float().contiguous())
