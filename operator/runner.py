"""A work queue of resources to reconcile: one reconcile at a time per resource, bursts coalesced.

Triggers arrive from many places at once (a resource's Jobs, pods and Deployments,
its upstream producing a version, kopf timers). They only enqueue the resource;
a few worker threads reconcile what is queued. A resource already queued is not
queued twice, and one that is being reconciled is reconciled once more when that
run ends, so N triggers cost at most one extra reconcile, and the kopf handlers
that deliver them return at once.

kopf's change handlers (create, update, resume) reconcile in their own thread
instead, because they need the verdict to tell kopf to retry (TemporaryError).

Nothing here schedules work for later: delayed retries are kopf's (TemporaryError
and timers), so a replica that kopf has paused in favour of the leader starts nothing.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from recplane.operator.controllers import CONTROLLERS
from recplane.operator.controllers.base import Context
from recplane.operator.controllers.base import reconcile as reconcile_once
from recplane.operator.metrics import Metrics
from recplane.operator.status import Verdict

log = logging.getLogger("recplane.operator")

Key = tuple[str, str, str]
"""(kind, namespace, name)."""


def result_of(verdict: Verdict | None) -> str:
    if verdict is None:
        return "gone"
    if verdict.failed:
        return "failed"
    if verdict.waiting:
        return "waiting"
    if verdict.progressing:
        return "progressing"
    return "ready" if verdict.ready else "waiting"


Reconcile = Callable[[Key, Mapping[str, Any] | None, int, bool], Verdict | None]
"""(key, the resource as just seen or None to read it, kopf's retry count, full) -> verdict (None: gone).

`full`: the resource itself changed, so every child is applied (see controllers.base.Controller)."""


def reconciler(ctx: Context) -> Reconcile:
    """Reconcile one resource against the cluster with the controller of its kind."""

    def run(key: Key, body: Mapping[str, Any] | None, retry: int, full: bool) -> Verdict | None:
        kind, namespace, name = key
        obj = dict(body) if body is not None else ctx.resource(kind, namespace, name)
        return reconcile_once(ctx, CONTROLLERS[kind], obj, retry, full) if obj is not None else None

    return run


class Runner:
    def __init__(self, reconcile: Reconcile, metrics: Metrics) -> None:
        self._reconcile = reconcile
        self.metrics = metrics
        self._cv = threading.Condition()
        self._queue: deque[Key] = deque()
        self._queued: set[Key] = set()
        self._running: set[Key] = set()
        self._dirty: set[Key] = set()
        self._threads: list[threading.Thread] = []
        self._stopping = False

    # ------------------------------------------------------------------------------ lifecycle
    def start(self, workers: int) -> None:
        """Start the worker threads, in the caller's context (kopf's, so that Events can be posted)."""
        context = contextvars.copy_context()
        for i in range(workers):
            thread = threading.Thread(target=context.copy().run, args=(self._work,), name=f"reconcile-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 10.0) -> None:
        """Let the workers finish the reconcile they are in (up to `timeout` in all) and exit."""
        with self._cv:
            self._stopping = True
            self._cv.notify_all()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    # ---------------------------------------------------------------------------- entry points
    def poke(self, key: Key, source: str = "child") -> None:
        """Reconcile `key` soon (returns at once); `source` says why, for the metrics."""
        self.metrics.triggers.labels(key[0], source).inc()
        with self._cv:
            self._enqueue_locked(key)

    def reconcile(self, key: Key, body: Mapping[str, Any] | None = None, retry: int = 0) -> Verdict | None:
        """Reconcile `key` now, in this thread, applying every child, and return the verdict. Errors propagate.

        Waits for a reconcile of the same resource that is running; a queued one is dropped,
        since this one reads the resource afresh anyway.
        """
        self.metrics.triggers.labels(key[0], "change").inc()
        with self._cv:
            self._queued.discard(key)
            while key in self._running:
                self._cv.wait()
            self._running.add(key)
            self._gauge_locked()
        try:
            return self._run_once(key, body, retry, full=True)
        finally:
            self._done(key)

    def forget(self, key: Key) -> None:
        """The resource is gone: a queued reconcile of it is dropped."""
        with self._cv:
            self._queued.discard(key)
            self._dirty.discard(key)
            self._gauge_locked()

    def depth(self) -> int:
        """Resources queued, being reconciled, or due to be reconciled again."""
        with self._cv:
            return self._depth_locked()

    # ------------------------------------------------------------------------------- internals
    def _work(self) -> None:
        while True:
            with self._cv:
                while not self._queue and not self._stopping:
                    self._cv.wait()
                if self._stopping:
                    return
                key = self._queue.popleft()
                if key not in self._queued:
                    continue  # dropped meanwhile (reconciled by a change handler, or deleted)
                self._queued.discard(key)
                if key in self._running:
                    self._dirty.add(key)
                    continue
                self._running.add(key)
            try:
                self._run_once(key, None, 0, full=False)
            except Exception as exc:
                # The next event, kopf timer or change-handler retry reconciles it again.
                log.warning("reconcile of %s %s/%s failed: %s", *key, exc)
            finally:
                self._done(key)

    def _done(self, key: Key) -> None:
        with self._cv:
            self._running.discard(key)
            if key in self._dirty:
                self._dirty.discard(key)
                self._enqueue_locked(key)
            self._cv.notify_all()
            self._gauge_locked()

    def _enqueue_locked(self, key: Key) -> None:
        if key in self._running:
            self._dirty.add(key)
        elif key not in self._queued:
            self._queued.add(key)
            self._queue.append(key)
            self._cv.notify()
        self._gauge_locked()

    def _run_once(self, key: Key, body: Mapping[str, Any] | None, retry: int, full: bool) -> Verdict | None:
        kind = key[0]
        started = time.perf_counter()
        try:
            verdict = self._reconcile(key, body, retry, full)
        except Exception:
            self.metrics.reconciles.labels(kind, "error").inc()
            self.metrics.latency.labels(kind).observe(time.perf_counter() - started)
            raise
        self.metrics.reconciles.labels(kind, result_of(verdict)).inc()
        self.metrics.latency.labels(kind).observe(time.perf_counter() - started)
        return verdict

    def _gauge_locked(self) -> None:
        self.metrics.queue_depth.set(self._depth_locked())

    def _depth_locked(self) -> int:
        return len(self._queued) + len(self._running) + len(self._dirty)
