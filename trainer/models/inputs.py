"""What a model reads: the sparse and dense features of a FeatureSet, as the trainer sees them.

The FeatureSet's `FeatureProcessor` describes its outputs (`sparse_features`,
`dense_features`); `ModelInputs.from_processor` turns that description into the
plain, picklable form the model zoo is built from, with every embedding size
resolved (a feature's own `embeddingDim`, else the TrainJob's `model.embeddingDim`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from torchrec import EmbeddingBagConfig, PoolingType
from torchrec.modules.embedding_configs import DataType

Precision = Literal["fp32", "fp16"]
_DATA_TYPES = {"fp32": DataType.FP32, "fp16": DataType.FP16}


@dataclass(frozen=True)
class SparseInput:
    """One id (or multi-hot id list) feature and its embedding table."""

    name: str
    group: str
    num_embeddings: int
    embedding_dim: int
    pooling: Literal["sum", "mean"] = "sum"
    multi_hot: bool = False


@dataclass(frozen=True)
class DenseInput:
    """One numeric feature: a column of the dense tensor [B, D]."""

    name: str
    group: str = "context"


@dataclass(frozen=True)
class ModelInputs:
    """The ordered features a model consumes; sparse order = KJT key order, dense order = tensor columns."""

    sparse: tuple[SparseInput, ...]
    dense: tuple[DenseInput, ...] = field(default_factory=tuple)
    # The features that read the SampleSet's user and item id columns (recall towers split on them).
    user_key: str | None = None
    item_key: str | None = None

    def __post_init__(self) -> None:
        names = [f.name for f in self.sparse] + [f.name for f in self.dense]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"feature names must be unique, {', '.join(dupes)} appear twice")

    @property
    def sparse_names(self) -> list[str]:
        return [f.name for f in self.sparse]

    @property
    def dense_names(self) -> list[str]:
        return [f.name for f in self.dense]

    def to_json(self) -> dict[str, Any]:
        return {
            "sparse": [asdict(f) for f in self.sparse],
            "dense": [asdict(f) for f in self.dense],
            "userKey": self.user_key,
            "itemKey": self.item_key,
        }

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> ModelInputs:
        return cls(
            sparse=tuple(SparseInput(**f) for f in doc.get("sparse", [])),
            dense=tuple(DenseInput(**f) for f in doc.get("dense", [])),
            user_key=doc.get("userKey"),
            item_key=doc.get("itemKey"),
        )

    @classmethod
    def from_processor(
        cls,
        processor: Any,
        default_embedding_dim: int,
        user_column: str | None = None,
        item_column: str | None = None,
    ) -> ModelInputs:
        """Inputs of a FeatureSet's `FeatureProcessor`; `user_column`/`item_column` (the SampleSet's
        id columns) mark which features identify the user and the item, whatever their group."""
        groups: dict[str, str] = dict(getattr(processor, "groups", {}) or {})
        sparse = tuple(
            SparseInput(
                name=f.name,
                group=str(f.group),
                num_embeddings=int(f.num_embeddings),
                embedding_dim=int(f.embedding_dim or default_embedding_dim),
                pooling="mean" if str(f.pooling) == "mean" else "sum",
                multi_hot=bool(f.multi_hot),
            )
            for f in processor.sparse_features
        )
        dense = tuple(DenseInput(name=n, group=groups.get(n, "context")) for n in processor.dense_features)

        def reading(column: str | None) -> str | None:
            for f in processor.sparse_features:
                if column is not None and tuple(f.columns) == (column,):
                    return str(f.name)
            return None

        return cls(sparse=sparse, dense=dense, user_key=reading(user_column), item_key=reading(item_column))


def table_name(feature: str, role: str = "emb") -> str:
    """Embedding table names are `<role>_<feature>`: the names the sharding plan and checkpoints use."""
    return f"{role}_{feature}"


def table_configs(
    features: Iterable[SparseInput],
    precision: Precision = "fp32",
    role: str = "emb",
    dim: int | None = None,
    widths: Sequence[int] | None = None,
) -> list[EmbeddingBagConfig]:
    """One TorchRec table per feature. `dim` overrides every feature's size (FFM tables); `widths`
    gives each table's columns outright (embedding plus first-order columns)."""
    features = list(features)
    widths = list(widths) if widths is not None else [dim or f.embedding_dim for f in features]
    return [
        EmbeddingBagConfig(
            name=table_name(f.name, role),
            feature_names=[f.name],
            num_embeddings=f.num_embeddings,
            embedding_dim=width,
            pooling=PoolingType.MEAN if f.pooling == "mean" else PoolingType.SUM,
            data_type=_DATA_TYPES[precision],
        )
        for f, width in zip(features, widths, strict=True)
    ]
