"""Prometheus metrics of the serving endpoints, labelled with the model version.

BentoML runs its workers with PROMETHEUS_MULTIPROC_DIR set and serves the merged
registry on `/metrics`, next to its own `bentoml_service_*` series. The metrics
are created inside the worker (not at import), so prometheus_client starts in
multiprocess mode there.

Online click-through rate per model version is a ratio of two counters, e.g. a
canary against the stable version:

    sum by (model_version) (rate(recplane_serving_clicks_total[5m]))
      / sum by (model_version) (rate(recplane_serving_impressions_total[5m]))

The event log's own counters (rows written, dropped, failed writes) carry the
event kind instead of a version.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

PREFIX = "recplane_serving"
# Feed serving answers in milliseconds: fine buckets below 50 ms, coarse above.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.025, 0.035, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0)
SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 65536)


class ServingMetrics:
    """The metric families; one instance per worker process (`registry`: another than the default, for tests)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        from prometheus_client import REGISTRY, Counter, Gauge, Histogram

        registry = REGISTRY if registry is None else registry
        self.requests: Counter = Counter(
            f"{PREFIX}_requests",
            "Requests by endpoint and HTTP status code.",
            ["endpoint", "code", "model_version"],
            registry=registry,
        )
        self.latency: Histogram = Histogram(
            f"{PREFIX}_request_duration_seconds",
            "Time from the request's first byte to its response, by endpoint.",
            ["endpoint", "model_version"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.candidates: Histogram = Histogram(
            f"{PREFIX}_candidates",
            "Candidates per /rank request.",
            ["model_version"],
            buckets=SIZE_BUCKETS,
            registry=registry,
        )
        self.batch_requests: Histogram = Histogram(
            f"{PREFIX}_batch_requests",
            "Requests merged into one forward pass by adaptive batching.",
            ["model_version"],
            buckets=SIZE_BUCKETS,
            registry=registry,
        )
        self.batch_rows: Histogram = Histogram(
            f"{PREFIX}_batch_rows",
            "Rows (user x candidate) scored in one forward pass.",
            ["model_version"],
            buckets=SIZE_BUCKETS,
            registry=registry,
        )
        self.batch_wait_seconds: Histogram = Histogram(
            f"{PREFIX}_batch_wait_seconds",
            "Time a /rank request waited in the batching queue before its forward pass began.",
            ["model_version"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.forward_seconds: Histogram = Histogram(
            f"{PREFIX}_forward_seconds",
            "Transform plus forward time of one merged batch.",
            ["model_version"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.model_info: Gauge = Gauge(
            f"{PREFIX}_model_info",
            "1 for the model version this worker serves.",
            ["model_version", "model_type", "variant"],
            multiprocess_mode="max",
            registry=registry,
        )
        # Online click-through rate: clicks / impressions per version (a canary vs the stable one).
        self.impressions: Counter = Counter(
            f"{PREFIX}_impressions",
            "Items /rank returned (the first RECPLANE_EVENTS_TOP_K of each response when set), by ranking version.",
            ["model_version"],
            registry=registry,
        )
        self.clicks: Counter = Counter(
            f"{PREFIX}_clicks",
            "Clicks reported to /feedback, by the version that served the impression (`unknown` when not known).",
            ["model_version"],
            registry=registry,
        )
        # The event log (RECPLANE_EVENTS_URI): rows written to the store, rows given up, failed writes.
        self.events_written: Counter = Counter(
            f"{PREFIX}_events_written",
            "Impression and feedback events written to the store, by kind.",
            ["event"],
            registry=registry,
        )
        self.events_dropped: Counter = Counter(
            f"{PREFIX}_events_dropped",
            "Events given up, by kind: the buffer was full while the store could not be written.",
            ["event"],
            registry=registry,
        )
        self.event_write_errors: Counter = Counter(
            f"{PREFIX}_event_write_errors",
            "Failed attempts to write buffered events to the store (the events are kept and retried).",
            registry=registry,
        )
