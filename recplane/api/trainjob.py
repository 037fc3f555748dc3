"""TrainJob: a sharded-embedding model trained over a FeatureSet."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import ConfigDict, Field

from .common import (
    DURATION_PATTERN,
    ApiModel,
    BaseStatus,
    DeletionPolicy,
    LocalRef,
    Resources,
    Scheduling,
    cel,
    validations,
)

ModelType = Literal["lr", "fm", "ffm", "wide_deep", "deepfm", "dcn_v2", "fibinet", "two_tower", "fm_recall"]
RANKING_MODELS = ("lr", "fm", "ffm", "wide_deep", "deepfm", "dcn_v2", "fibinet")
RECALL_MODELS = ("two_tower", "fm_recall")
ShardingType = Literal["auto", "table_wise", "column_wise", "table_column_wise", "row_wise", "data_parallel"]


class ModelConfig(ApiModel):
    """Which model and its architecture hyper-parameters."""

    type: ModelType = Field(description="lr | fm | ffm | wide_deep | deepfm | dcn_v2 | fibinet | two_tower | fm_recall")
    embedding_dim: int = Field(default=16, ge=1, le=1024, description="Default embedding size of every sparse feature.")
    dense_layers: list[int] = Field(
        default_factory=lambda: [256, 128], max_length=16, description="Hidden sizes of the deep part."
    )
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    batch_norm: bool = Field(default=False, description="Batch normalisation between dense layers.")
    cross_layers: int = Field(default=3, ge=1, le=16, description="DCN-v2: number of cross layers.")
    bilinear_type: Literal["field_all", "field_each", "field_interaction"] = Field(
        default="field_interaction", description="FiBiNET: bilinear interaction type."
    )
    senet_reduction: int = Field(default=3, ge=1, description="FiBiNET: SENET reduction ratio.")
    user_groups: list[str] = Field(
        default_factory=lambda: ["id", "reader", "context", "environment"],
        description="Recall models: feature groups that form the user tower; the rest form the item tower.",
    )
    temperature: float = Field(default=0.05, gt=0.0, description="Two-tower: softmax temperature.")
    top_k: int = Field(default=50, ge=1, le=10_000, description="Recall models: K for recall@K and NDCG@K.")


class Optimization(ApiModel):
    """Optimisers, schedule and stability knobs."""

    batch_size: int = Field(default=4096, ge=1, le=1_048_576, description="Global batch size.")
    epochs: int = Field(default=1, ge=1, le=1000)
    max_steps: int | None = Field(default=None, ge=1, description="Stop after this many steps (overrides epochs).")
    learning_rate: float = Field(default=0.001, gt=0.0, le=10.0, description="Dense learning rate.")
    sparse_learning_rate: float = Field(default=0.05, gt=0.0, le=10.0, description="Embedding learning rate.")
    sparse_optimizer: Literal["rowwise_adagrad", "adam", "sgd"] = "rowwise_adagrad"
    dense_optimizer: Literal["adam", "adagrad", "sgd"] = "adam"
    lr_schedule: Literal["constant", "cosine", "linear_warmup"] = "constant"
    warmup_steps: int = Field(default=0, ge=0)
    gradient_clip_norm: float | None = Field(default=None, gt=0.0, description="Clip dense gradients by global norm.")
    embedding_precision: Literal["fp32", "fp16"] = Field(
        default="fp32", description="Storage precision of embedding tables."
    )
    dense_precision: Literal["fp32", "bf16"] = Field(
        default="fp32",
        description=(
            "Compute precision of the dense layers while training. bf16 runs their matrix products under "
            "autocast (weights, gradients and optimiser state stay fp32): faster on GPUs and on CPUs with AMX "
            "or AVX512-BF16, slower elsewhere. Evaluation and serving compute in fp32."
        ),
    )
    seed: int = Field(default=0, ge=0)


class Distributed(ApiModel):
    """How training is spread over pods and processes."""

    model_config = validations(
        cel(
            "self.sharding != 'row_wise' || self.backend == 'nccl'",
            "sharding row_wise needs GPUs: set distributed.backend to nccl (and resources.gpu), or pick "
            "table_wise, column_wise, table_column_wise or data_parallel",
            ".sharding",
        ),
    )

    workers: int = Field(default=1, ge=1, le=1024, description="Worker pods.")
    procs_per_worker: int = Field(default=2, ge=1, le=64, description="torchrun processes per worker pod.")
    backend: Literal["gloo", "nccl"] = Field(default="gloo", description="gloo on CPU, nccl on GPU.")
    sharding: ShardingType = Field(default="auto", description="Sharding plan: auto lets the TorchRec planner choose.")


class Checkpointing(ApiModel):
    every_steps: int = Field(default=500, ge=1, description="Write a checkpoint every N steps.")
    keep: int = Field(default=2, ge=1, le=100, description="Complete checkpoints kept.")


class Continuous(ApiModel):
    """Minute-level retraining: warm-start from the latest version on each new data batch."""

    interval: str = Field(default="5m", pattern=DURATION_PATTERN, description="How often to look for new data.")
    warm_start: bool = True


class PromotionRule(ApiModel):
    """A version is promoted only when it passes every set threshold."""

    min_auc: float | None = Field(default=None, ge=0.0, le=1.0)
    max_auc_drop: float | None = Field(
        default=None, ge=0.0, le=1.0, description="Largest allowed AUC drop versus the current promoted version."
    )


class TrainJobSpec(ApiModel):
    """Declares a training job."""

    model_config = validations(
        cel(
            "self.distributed.backend != 'nccl' || self.resources.gpu > 0",
            "distributed.backend nccl needs GPUs: set resources.gpu to at least 1",
            ".resources.gpu",
        ),
    )

    feature_set_ref: LocalRef = Field(description="The FeatureSet to train on.")
    model: ModelConfig
    optimization: Optimization = Field(default_factory=Optimization)
    distributed: Distributed = Field(default_factory=Distributed)
    checkpoint: Checkpointing = Field(default_factory=Checkpointing)
    continuous: Continuous | None = None
    promote_if: PromotionRule = Field(default_factory=PromotionRule)
    max_restarts: int = Field(default=3, ge=0, le=100, description="Group restarts after a worker fails.")
    image: str | None = Field(default=None, description="Trainer image; defaults to the operator's.")
    resources: Resources = Field(default_factory=Resources)
    scheduling: Scheduling = Field(default_factory=Scheduling)
    deletion_policy: DeletionPolicy = "Retain"


class ModelMetrics(ApiModel):
    model_config = ConfigDict(extra="allow")

    auc: float | None = None
    logloss: float | None = None
    samples_per_second: float | None = None
    recall_at_k: float | None = None
    ndcg_at_k: float | None = None


class ModelVersion(ApiModel):
    version: str
    uri: str
    created_at: datetime | None = None
    metrics: ModelMetrics = Field(default_factory=ModelMetrics)
    promoted: bool | None = None
    reason: str | None = None


class TrainJobStatus(BaseStatus):
    workers_ready: int | None = None
    step: int | None = None
    restarts: int = 0
    feature_set_version: str | None = None
    metrics: ModelMetrics | None = None
    latest_version: str | None = None
    promoted_version: str | None = None
    versions: list[ModelVersion] = Field(default_factory=list)
