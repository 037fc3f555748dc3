"""SampleSet: where behaviour events come from and how they become training samples."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from .common import DURATION_PATTERN, ApiModel, BaseStatus, DeletionPolicy, Resources, cel, validations

SourceFormat = Literal["synthetic", "parquet", "csv", "jsonl"]
DEFAULT_FOLLOW_INTERVAL = "1m"
"""`source.followInterval` when it is not set (not a schema default: it is only allowed with `follow`)."""


class SyntheticSource(ApiModel):
    """The built-in feed generator: users, authors, posts and contexts with a known click model."""

    shape: Literal["feed", "criteo"] = Field(
        default="feed",
        description="`feed`: named feed columns (user, author, item, topic, context); "
        "`criteo`: 26 sparse + 13 dense anonymous columns.",
    )
    events: int = Field(default=200_000, ge=1_000, le=2_000_000_000, description="Impressions to generate.")
    users: int = Field(default=5_000, ge=10, description="Distinct users.")
    items: int = Field(default=20_000, ge=10, description="Distinct posts.")
    authors: int = Field(default=1_000, ge=2, description="Distinct authors.")
    topics: int = Field(default=32, ge=2, le=1024, description="Distinct post topics.")
    days: int = Field(default=7, ge=1, le=365, description="Time span of the events in days.")
    seed: int = Field(default=0, ge=0, description="Random seed; the same seed gives the same events.")
    drift: float = Field(
        default=0.0,
        ge=0.0,
        le=1.0,
        description="How far user tastes drift across batches (0 = stationary); for continuous updates.",
    )
    batch: int = Field(
        default=0,
        ge=0,
        description="Which batch of events: batch b covers the `days` after batch b-1, with tastes drifted b times.",
    )


class Source(ApiModel):
    """Where events are read from."""

    model_config = validations(
        cel(
            "!has(self.followInterval) || (has(self.follow) && self.follow)",
            "source.followInterval is only used when source.follow is true: set follow: true or remove followInterval",
            ".followInterval",
        ),
    )

    format: SourceFormat = Field(description="Event file format, or `synthetic` for the built-in generator.")
    uri: str | None = Field(
        default=None,
        max_length=2048,
        description="Local path, glob, or store URI (`s3://bucket/prefix/`) of the event files.",
    )
    synthetic: SyntheticSource | None = None
    follow: bool = Field(
        default=False,
        description="Keep watching `uri` for new files; each new batch becomes a new version with only the new events.",
    )
    follow_interval: str | None = Field(
        default=None,
        pattern=DURATION_PATTERN,
        description="With `follow`: how long the operator waits after one look for new files has finished "
        "before it starts the next (a new step Job). Default 1m; only allowed with `follow: true`.",
    )


class LabelRule(ApiModel):
    """The benchmark label: positive when the user clicked and dwelled at least `minDwellSeconds`."""

    click_column: str = Field(default="clicked", min_length=1)
    dwell_column: str | None = Field(default="dwell_s", description="Omit to label by click alone.")
    min_dwell_seconds: float = Field(default=3.0, ge=0.0)


class Dedupe(ApiModel):
    """Drop repeated impressions of the same item to the same user, keeping the first."""

    enabled: bool = True
    keys: list[str] = Field(default_factory=lambda: ["user_id", "item_id"], min_length=1)


class BotFilter(ApiModel):
    """Drop users who produce more than `maxEvents` events inside any `windowSeconds` window."""

    enabled: bool = True
    max_events: int = Field(default=300, ge=1)
    window_seconds: int = Field(default=60, ge=1)


class InactiveUserFilter(ApiModel):
    """Drop users with fewer than `minEvents` events: too little signal to learn from."""

    enabled: bool = True
    min_events: int = Field(default=5, ge=1)


class NegativeSampling(ApiModel):
    """Keep a fraction of negatives; kept negatives get weight 1/rate so estimates stay unbiased."""

    rate: float = Field(default=1.0, gt=0.0, le=1.0, description="Fraction of negatives kept (1 = keep all).")


class Split(ApiModel):
    """Time-based train/validation split: the newest fraction of the time range is validation."""

    validation_fraction: float = Field(default=0.1, gt=0.0, lt=1.0)


class Columns(ApiModel):
    """Names of the columns every strategy relies on."""

    user: str = "user_id"
    item: str = "item_id"
    timestamp: str = "ts"


class SampleSetSpec(ApiModel):
    """Declares how behaviour events become versioned training samples."""

    model_config = validations(
        cel(
            "self.source.format == 'synthetic' || has(self.source.uri)",
            "source.uri is required unless source.format is synthetic",
            ".source.uri",
        ),
        cel(
            "self.source.format != 'synthetic' || !has(self.source.uri)",
            "source.uri must be omitted when source.format is synthetic; set source.synthetic instead",
            ".source.uri",
        ),
        cel(
            "!has(self.source.synthetic) || self.source.format == 'synthetic'",
            "source.synthetic is only allowed when source.format is synthetic",
            ".source.synthetic",
        ),
    )

    source: Source
    columns: Columns = Field(default_factory=Columns)
    label: LabelRule = Field(default_factory=LabelRule)
    dedupe: Dedupe = Field(default_factory=Dedupe)
    bot_filter: BotFilter = Field(default_factory=BotFilter)
    inactive_users: InactiveUserFilter = Field(default_factory=InactiveUserFilter)
    negative_sampling: NegativeSampling = Field(default_factory=NegativeSampling)
    split: Split = Field(default_factory=Split)
    shard_rows: int = Field(default=500_000, ge=1_000, description="Rows per Parquet shard.")
    resources: Resources = Field(default_factory=Resources)
    deletion_policy: DeletionPolicy = Field(
        default="Retain", description="`Delete` removes the stored versions when the resource is deleted."
    )


class SampleSetStatus(BaseStatus):
    version: str | None = None
    artifact_uri: str | None = None
    rows: dict[str, int] = Field(default_factory=dict, description="Rows after each strategy, in order.")
    train_rows: int | None = None
    validation_rows: int | None = None
    positive_rate: float | None = None
    bayes_auc: float | None = Field(default=None, description="Bayes-optimal validation AUC (synthetic sources).")
    schema_: list[dict[str, Any]] = Field(default_factory=list, alias="schema")
    versions: list[str] = Field(default_factory=list, description="Stored versions, newest last.")
