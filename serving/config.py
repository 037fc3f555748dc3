"""Serving configuration: every knob is one environment variable, read once at start-up.

`recplane serve` and the ModelDeployment's pods set these; `docs/serving.md`
lists them (a test keeps that page and this module in step). Store access
(`RECPLANE_STORE`, `RECPLANE_S3_*`, `RECPLANE_CACHE`) belongs to
`recplane.store` and is documented there too, not re-read here.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

MODEL_URI_ENV = "RECPLANE_MODEL_URI"


class ConfigError(ValueError):
    """A serving environment variable holds a value that cannot be used; the message names it."""


class ServingConfig(BaseModel):
    """Settings of one serving process. Field aliases are the environment variable names."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore", frozen=True)

    model_uri: str = Field(
        default="",
        alias="RECPLANE_MODEL_URI",
        description="The model version to serve: a version directory, `file:///...`, "
        "`s3://bucket/<ns>/trainjob/<name>/<version>`, or `<ns>/trainjob/<name>/<version|latest>` "
        "resolved against RECPLANE_STORE.",
    )
    variant: Literal["fp32", "int8"] = Field(
        default="fp32",
        alias="RECPLANE_MODEL_VARIANT",
        description="Which exported weights to load: fp32, or int8 (row-wise quantised embedding tables).",
    )
    max_candidates: int = Field(
        default=1000,
        ge=1,
        le=100_000,
        alias="RECPLANE_SERVE_MAX_CANDIDATES",
        description="Largest candidate list one /rank call takes (ModelDeployment spec.maxCandidates).",
    )
    max_recall_k: int = Field(
        default=1000, ge=1, le=100_000, alias="RECPLANE_SERVE_MAX_RECALL_K", description="Largest `k` of /recall."
    )
    max_body_bytes: int = Field(
        default=4 * 1024 * 1024,
        ge=1024,
        alias="RECPLANE_SERVE_MAX_BODY_BYTES",
        description="Largest request body in bytes; larger bodies get 413 before they are parsed.",
    )
    unknown_features: Literal["refuse", "ignore"] = Field(
        default="refuse",
        alias="RECPLANE_SERVE_UNKNOWN_FEATURES",
        description="A request key that is no input column of the model: `refuse` (400 naming the key) "
        "or `ignore` (dropped, e.g. when clients send whole logged events).",
    )
    max_batch_size: int = Field(
        default=64,
        ge=2,
        le=4096,
        alias="RECPLANE_SERVE_MAX_BATCH_SIZE",
        description="Most /rank requests merged into one forward pass (ModelDeployment spec.batching.maxBatchSize).",
    )
    max_latency_ms: int = Field(
        default=100,
        ge=1,
        le=60_000,
        alias="RECPLANE_SERVE_MAX_LATENCY_MS",
        description="Adaptive batching deadline: a request whose expected wait plus forward time exceeds it is "
        "shed with 503 instead of queueing (BentoML max_latency_ms). Batches form only when waiting pays off.",
    )
    workers: int = Field(
        default=1, ge=1, le=64, alias="RECPLANE_SERVE_WORKERS", description="Server processes, each with the model."
    )
    torch_threads: int = Field(
        default=1,
        ge=1,
        le=256,
        alias="RECPLANE_SERVE_TORCH_THREADS",
        description="Intra-op threads of each forward pass (torch.set_num_threads).",
    )
    timeout_s: int = Field(
        default=10, ge=1, le=3600, alias="RECPLANE_SERVE_TIMEOUT_S", description="Per-request timeout in seconds."
    )
    access_log: bool = Field(
        default=False,
        alias="RECPLANE_SERVE_ACCESS_LOG",
        description="One log line per request; off by default (it costs more than validating a ranking call, "
        "and /metrics counts requests).",
    )
    tracing: bool = Field(
        default=False,
        alias="RECPLANE_SERVE_TRACING",
        description="Trace /rank, /recall and /feedback with BentoML's OpenTelemetry middleware (set the exporter "
        "and sample rate in BENTOML_CONFIG_OPTIONS). Off by default: with nothing sampled it still builds spans for "
        "every request and response message, a fifth of the CPU of a /rank call.",
    )
    max_concurrency: int | None = Field(
        default=None,
        ge=1,
        alias="RECPLANE_SERVE_MAX_CONCURRENCY",
        description="Requests in flight per service before new ones get 503 (unset: unlimited).",
    )

    events_uri: str = Field(
        default="",
        alias="RECPLANE_EVENTS_URI",
        description="Where impression and feedback events are written: a prefix inside RECPLANE_STORE "
        "(`default/events/feed-ranker`) or a location of its own (`s3://bucket/prefix`, `file:///dir`, `/dir`). "
        "Unset: no event files (the CTR metrics are exported either way).",
    )
    events_flush_seconds: float = Field(
        default=60.0,
        gt=0.0,
        le=3600.0,
        alias="RECPLANE_EVENTS_FLUSH_SECONDS",
        description="Buffered events are written as one Parquet file at least this often.",
    )
    events_flush_records: int = Field(
        default=50_000,
        ge=1,
        le=10_000_000,
        alias="RECPLANE_EVENTS_FLUSH_RECORDS",
        description="... or as soon as this many events are buffered.",
    )
    events_max_buffered: int = Field(
        default=1_000_000,
        ge=1,
        alias="RECPLANE_EVENTS_MAX_BUFFERED",
        description="Events held in memory while the store cannot be written; further events are dropped "
        "(and counted) until a write succeeds.",
    )
    events_label_window_seconds: int = Field(
        default=1800,
        ge=1,
        le=7 * 86_400,
        alias="RECPLANE_EVENTS_LABEL_WINDOW_SECONDS",
        description="Attribution window: feedback within it labels the impression; an impression row is "
        "stamped (`ts`) at the end of its window, so a SampleSet's dedupe keeps the earlier feedback row.",
    )
    events_top_k: int = Field(
        default=0,
        ge=0,
        alias="RECPLANE_EVENTS_TOP_K",
        description="Only the first k items of each /rank response count and are logged as impressions "
        "(the ones the client shows); 0: every returned item.",
    )
    events_tracked_requests: int = Field(
        default=100_000,
        ge=1,
        le=10_000_000,
        alias="RECPLANE_EVENTS_TRACKED_REQUESTS",
        description="Recent /rank requests each worker remembers (version, time, user; with the event log on, "
        "the items' positions and scores, at most 2 million items), for feedback that does not carry them.",
    )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ServingConfig:
        """The configuration in `environ` (default: the process environment); unset variables take defaults."""
        env = os.environ if environ is None else environ
        aliases = {f.alias for f in cls.model_fields.values() if f.alias}
        raw = {k: v for k, v in env.items() if k in aliases and v != ""}
        try:
            return cls.model_validate(raw)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc'])}={e.get('input')!r}: {e['msg']}" for e in exc.errors()
            )
            raise ConfigError(f"invalid serving configuration: {problems}") from None

    def require_model_uri(self) -> str:
        if not self.model_uri:
            raise ConfigError(
                f"{MODEL_URI_ENV} is not set: name the model version to serve, e.g. "
                "default/trainjob/feed-deepfm/latest (or pass --model to `recplane serve`)"
            )
        return self.model_uri


def env_variables() -> dict[str, str]:
    """{environment variable: description} of every serving setting (for docs and `--help`)."""
    return {f.alias: f.description or "" for f in ServingConfig.model_fields.values() if f.alias}
