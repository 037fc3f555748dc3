"""ModelDeployment: an autoscaled serving endpoint for a model version."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from .common import ApiModel, BaseStatus, LocalRef, Resources, Scheduling, cel, validations


class ModelSource(ApiModel):
    """Which model to serve: a TrainJob's version, or a stored version by URI."""

    model_config = validations(
        cel(
            "has(self.trainJobRef) != has(self.uri)",
            "set exactly one of model.trainJobRef and model.uri",
            ".trainJobRef",
        ),
    )

    train_job_ref: LocalRef | None = Field(
        default=None, description="The TrainJob whose versions are served; `version` pins one."
    )
    uri: str | None = Field(default=None, max_length=2048, description="URI of a stored model version.")
    follow: Literal["latest", "promoted", "pinned"] = Field(
        default="promoted",
        description="Roll out each new version (latest), each promoted one (promoted), or only trainJobRef.version.",
    )


class Autoscaling(ApiModel):
    model_config = validations(
        cel(
            "self.minReplicas <= self.maxReplicas",
            "autoscaling.minReplicas must not exceed autoscaling.maxReplicas",
            ".minReplicas",
        ),
    )

    min_replicas: int = Field(default=1, ge=0, le=1000)
    max_replicas: int = Field(default=4, ge=1, le=1000)
    target_cpu_utilization: int = Field(default=70, ge=1, le=100, description="Average CPU % the autoscaler aims for.")


class Canary(ApiModel):
    model_config = validations(
        cel(
            "!has(self.weight) || self.weight == 0 || has(self.version)",
            "canary.weight needs canary.version: name the version to send traffic to",
            ".weight",
        ),
    )

    version: str | None = Field(default=None, max_length=64, description="Model version served as canary.")
    weight: int | None = Field(default=None, ge=0, le=100, description="Percent of traffic sent to the canary.")


class Batching(ApiModel):
    max_batch_size: int = Field(default=64, ge=1, le=4096, description="Requests merged into one forward pass.")
    max_latency_ms: int = Field(default=10, ge=1, le=10_000, description="Longest a request waits to be batched.")


class ModelDeploymentSpec(ApiModel):
    """Declares a serving endpoint."""

    model: ModelSource
    autoscaling: Autoscaling = Field(default_factory=Autoscaling)
    canary: Canary | None = None
    batching: Batching = Field(default_factory=Batching)
    max_candidates: int = Field(
        default=1000, ge=1, le=100_000, description="Largest candidate list a /rank call takes."
    )
    image: str | None = Field(default=None, description="Serving image; defaults to the operator's.")
    resources: Resources = Field(default_factory=Resources)
    scheduling: Scheduling = Field(default_factory=Scheduling)


class HistoryEntry(ApiModel):
    version: str
    started_at: datetime | None = None
    reason: str | None = None


class ModelDeploymentStatus(BaseStatus):
    current_version: str | None = None
    current_uri: str | None = None
    canary_version: str | None = None
    ready_replicas: int | None = None
    endpoint: str | None = None
    history: list[HistoryEntry] = Field(default_factory=list)
