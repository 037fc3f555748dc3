"""Prometheus metrics of the serving endpoints, every series labelled with the model version.

BentoML runs its workers with PROMETHEUS_MULTIPROC_DIR set and serves the merged
registry on `/metrics`, next to its own `bentoml_service_*` series. The metrics
are created inside the worker (not at import), so prometheus_client starts in
multiprocess mode there.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from prometheus_client import Counter, Gauge, Histogram

PREFIX = "recplane_serving"
# Feed serving answers in milliseconds: fine buckets below 50 ms, coarse above.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.025, 0.035, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0)
SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 65536)


class ServingMetrics:
    """The metric families; one instance per worker process."""

    def __init__(self) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        self.requests: Counter = Counter(
            f"{PREFIX}_requests",
            "Requests by endpoint and HTTP status code.",
            ["endpoint", "code", "model_version"],
        )
        self.latency: Histogram = Histogram(
            f"{PREFIX}_request_duration_seconds",
            "Time from the request's first byte to its response, by endpoint.",
            ["endpoint", "model_version"],
            buckets=LATENCY_BUCKETS,
        )
        self.candidates: Histogram = Histogram(
            f"{PREFIX}_candidates",
            "Candidates per /rank request.",
            ["model_version"],
            buckets=SIZE_BUCKETS,
        )
        self.batch_requests: Histogram = Histogram(
            f"{PREFIX}_batch_requests",
            "Requests merged into one forward pass by adaptive batching.",
            ["model_version"],
            buckets=SIZE_BUCKETS,
        )
        self.batch_rows: Histogram = Histogram(
            f"{PREFIX}_batch_rows",
            "Rows (user x candidate) scored in one forward pass.",
            ["model_version"],
            buckets=SIZE_BUCKETS,
        )
        self.batch_wait_seconds: Histogram = Histogram(
            f"{PREFIX}_batch_wait_seconds",
            "Time a /rank request waited in the batching queue before its forward pass began.",
            ["model_version"],
            buckets=LATENCY_BUCKETS,
        )
        self.forward_seconds: Histogram = Histogram(
            f"{PREFIX}_forward_seconds",
            "Transform plus forward time of one merged batch.",
            ["model_version"],
            buckets=LATENCY_BUCKETS,
        )
        self.model_info: Gauge = Gauge(
            f"{PREFIX}_model_info",
            "1 for the model version this worker serves.",
            ["model_version", "model_type", "variant"],
            multiprocess_mode="max",
        )
