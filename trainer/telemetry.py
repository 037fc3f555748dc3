"""Progress for people (rank 0's stderr) and for Prometheus (rank 0's /metrics).

Prometheus metrics are served when RECPLANE_METRICS_PORT is set (the operator sets
it in pods; locally it is off). They live in their own registry, so nothing else of
the process leaks into the scrape.
"""

from __future__ import annotations

import os
import sys
import time
from datetime import timedelta
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Gauge, start_http_server

METRICS_PORT_ENV = "RECPLANE_METRICS_PORT"
LOG_EVERY_SECONDS = 10.0


class TrainTelemetry:
    """Rank 0 reports; other ranks hold a silent instance so call sites need no branches."""

    def __init__(self, job: str, enabled: bool, total_steps: int | None = None) -> None:
        self.job = job
        self.enabled = enabled
        self.total_steps = total_steps
        self._last_log = 0.0
        self.registry = CollectorRegistry()
        self.step = Gauge("recplane_train_step", "Optimiser steps done.", ["trainjob"], registry=self.registry)
        self.loss = Gauge(
            "recplane_train_loss", "Training loss (mean over ranks).", ["trainjob"], registry=self.registry
        )
        self.samples_per_second = Gauge(
            "recplane_train_samples_per_second", "Training throughput, all ranks.", ["trainjob"], registry=self.registry
        )
        self.auc = Gauge(
            "recplane_train_auc", "Validation AUC of the last evaluation.", ["trainjob"], registry=self.registry
        )
        self.port: int | None = None
        self._server: WSGIServer | None = None
        port = os.environ.get(METRICS_PORT_ENV)
        if enabled and port:
            self._server, _ = start_http_server(int(port), registry=self.registry)
            self.port = int(port)

    def close(self) -> None:
        """Stop serving /metrics (the end of the run)."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def log(self, message: str) -> None:
        if self.enabled:
            print(message, file=sys.stderr, flush=True)

    def progress(
        self, step: int, loss: float, samples_per_second: float, elapsed: float, done: int, force: bool = False
    ) -> None:
        """`step`: steps of the run so far; `done`: steps this process made in `elapsed` seconds (for the ETA)."""
        if not self.enabled:
            return
        self.step.labels(self.job).set(step)
        self.loss.labels(self.job).set(loss)
        self.samples_per_second.labels(self.job).set(samples_per_second)
        now = time.monotonic()
        if not force and now - self._last_log < LOG_EVERY_SECONDS:
            return
        self._last_log = now
        total = f"/{self.total_steps}" if self.total_steps else ""
        eta = ""
        if self.total_steps and done:
            remaining = elapsed / done * max(0, self.total_steps - step)
            eta = f"  eta {timedelta(seconds=round(remaining))}"
        self.log(f"step {step}{total}  loss {loss:.5f}  {samples_per_second:,.0f} samples/s{eta}")

    def evaluated(self, auc: float | None) -> None:
        if self.enabled and auc is not None:
            self.auc.labels(self.job).set(auc)
