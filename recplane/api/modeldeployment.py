"""ModelDeployment: an autoscaled serving endpoint for a model version."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import Field

from .common import DURATION_PATTERN, ApiModel, BaseStatus, LocalRef, Resources, Scheduling, cel, validations


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
    """A second track: `version`, or (following latest or promoted, no version) each new version first."""

    version: str | None = Field(
        default=None,
        max_length=64,
        description="Model version served as canary. Omit it while following latest or promoted versions "
        "to roll out each new version as canary first.",
    )
    weight: int | None = Field(default=None, ge=0, le=100, description="Percent of traffic sent to the canary.")
    analysis: str = Field(
        default="10m",
        pattern=DURATION_PATTERN,
        description="Without canary.version: how long a new version serves as a ready canary before it becomes "
        "the stable version.",
    )


class Batching(ApiModel):
    max_batch_size: int = Field(default=64, ge=1, le=4096, description="Requests merged into one forward pass.")
    max_latency_ms: int = Field(default=10, ge=1, le=10_000, description="Longest a request waits to be batched.")


class EventLog(ApiModel):
    """Impressions /rank returns and feedback /feedback receives, written to the store as event files.

    A SampleSet with `source.follow` over `status.eventsUri` turns them into labelled samples.
    """

    enabled: bool = Field(default=False, description="Write impression and feedback events to the store.")
    flush_seconds: int = Field(
        default=60, ge=1, le=86_400, description="Each serving worker writes its buffered events this often."
    )
    label_window_seconds: int = Field(
        default=1800,
        ge=1,
        le=7 * 86_400,
        description="Feedback within this time of the impression labels it; later clicks do not count.",
    )
    top_k: int = Field(
        default=0, ge=0, le=100_000, description="Only the first k items of a /rank response are impressions (0: all)."
    )


class ModelDeploymentSpec(ApiModel):
    """Declares a serving endpoint."""

    model_config = validations(
        cel(
            "!has(self.canary) || !has(self.canary.weight) || self.canary.weight == 0 || has(self.canary.version) "
            "|| (has(self.model.trainJobRef) && !has(self.model.trainJobRef.version) && self.model.follow != 'pinned')",
            "canary.weight needs canary.version when the model is pinned (model.uri, model.trainJobRef.version or "
            "model.follow: pinned): name the version to send traffic to, or follow latest or promoted versions to "
            "roll out each new one as canary first",
            ".canary.weight",
        ),
    )

    model: ModelSource
    autoscaling: Autoscaling = Field(default_factory=Autoscaling)
    canary: Canary | None = None
    batching: Batching = Field(default_factory=Batching)
    max_candidates: int = Field(
        default=1000, ge=1, le=100_000, description="Largest candidate list a /rank call takes."
    )
    events: EventLog = Field(default_factory=EventLog)
    image: str | None = Field(default=None, description="Serving image; defaults to the operator's.")
    resources: Resources = Field(default_factory=Resources)
    scheduling: Scheduling = Field(default_factory=Scheduling)


class HistoryEntry(ApiModel):
    """One model version in the life of the deployment, oldest entry first."""

    version: str
    started_at: datetime | None = Field(
        default=None,
        description="When it became the stable version; unset for a version that never did (rejected, or a "
        "canary that is still under analysis or was replaced).",
    )
    canary_started_at: datetime | None = Field(
        default=None, description="When it started taking canary traffic (canary-first rollouts)."
    )
    promoted: bool | None = Field(
        default=None,
        description="Following promoted versions: the TrainJob's verdict. false: rejected, never served.",
    )
    reason: str | None = Field(default=None, description="Why it was chosen, or why not.")


class ModelDeploymentStatus(BaseStatus):
    current_version: str | None = None
    current_uri: str | None = None
    canary_version: str | None = None
    canary_uri: str | None = None
    canary_started_at: datetime | None = Field(
        default=None,
        description="Canary first: since when the canary has served, rolled out and ready, without a break; its "
        "analysis runs from then.",
    )
    ready_replicas: int | None = None
    endpoint: str | None = None
    events_uri: str | None = Field(
        default=None, description="Where the serving pods write impression and feedback events (spec.events)."
    )
    history: list[HistoryEntry] = Field(default_factory=list, description="At most 20 entries, oldest first.")
