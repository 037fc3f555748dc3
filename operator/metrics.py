"""Prometheus metrics of the operator, served on --metrics-port.

recplane_operator_reconciles_total{kind,result}     reconciles by kind and outcome
recplane_operator_reconcile_duration_seconds{kind}  reconcile latency (histogram)
recplane_operator_triggers_total{kind,source}       why reconciles were asked for (change, child, upstream, poll)
recplane_operator_queue_depth                       resources queued, being reconciled, or due again
recplane_operator_api_requests_total{verb,resource,code}  requests to the API server
recplane_operator_api_request_duration_seconds{verb}      their latency (histogram)
recplane_operator_peak_rss_bytes                    peak resident memory of the process
plus the client library's process_* and python_* collectors.
"""

from __future__ import annotations

import resource
import sys
from collections.abc import Iterable

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)


class _PeakRss(Collector):
    def collect(self) -> Iterable[GaugeMetricFamily]:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        # ru_maxrss is KiB on Linux, bytes on macOS.
        value = peak if sys.platform == "darwin" else peak * 1024
        yield GaugeMetricFamily("recplane_operator_peak_rss_bytes", "Peak resident memory of the operator.", value)


class Metrics:
    def __init__(self, registry: CollectorRegistry = REGISTRY) -> None:
        self.registry = registry
        self.reconciles = Counter(
            "recplane_operator_reconciles_total",
            "Reconciles by kind and result (ready, progressing, waiting, failed, error, gone).",
            ["kind", "result"],
            registry=registry,
        )
        self.latency = Histogram(
            "recplane_operator_reconcile_duration_seconds",
            "Time one reconcile of one resource takes.",
            ["kind"],
            buckets=BUCKETS,
            registry=registry,
        )
        self.triggers = Counter(
            "recplane_operator_triggers_total",
            "Why reconciles were asked for: change (of the resource), child, upstream, poll.",
            ["kind", "source"],
            registry=registry,
        )
        self.queue_depth = Gauge(
            "recplane_operator_queue_depth",
            "Reconciles running, waiting to run again, or scheduled for later.",
            registry=registry,
        )
        self.api_requests = Counter(
            "recplane_operator_api_requests_total",
            "Requests to the Kubernetes API server.",
            ["verb", "resource", "code"],
            registry=registry,
        )
        self.api_latency = Histogram(
            "recplane_operator_api_request_duration_seconds",
            "Time a request to the Kubernetes API server takes, as the operator sees it.",
            ["verb"],
            buckets=BUCKETS,
            registry=registry,
        )
        registry.register(_PeakRss())

    def on_request(self, verb: str, plural: str, code: int, seconds: float) -> None:
        self.api_requests.labels(verb, plural, str(code)).inc()
        self.api_latency.labels(verb).observe(seconds)

    def serve(self, port: int, addr: str = "0.0.0.0") -> None:
        start_http_server(port, addr=addr, registry=self.registry)


_DEFAULT: Metrics | None = None


def default_metrics() -> Metrics:
    """One set per process on the default registry (prometheus_client refuses duplicates)."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = Metrics()
    return _DEFAULT
