"""One reconcile at a time per resource; bursts of triggers coalesced.

Triggers arrive from many places at once (the resource's own changes, its Jobs,
pods and Deployments, its upstream producing a version, kopf timers). They all
end here: if that resource is already being reconciled, the running reconcile
simply runs once more when it finishes, so N triggers during one reconcile cost
one extra reconcile, not N.

Nothing here schedules work for later: delayed retries are kopf's (TemporaryError
and timers), so a replica that kopf has paused in favour of the leader never acts.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from typing import Any

from recplane.api import API_VERSION
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


class Runner:
    def __init__(self, ctx: Context, metrics: Metrics) -> None:
        self.ctx = ctx
        self.metrics = metrics
        self._mu = threading.Lock()
        self._locks: dict[Key, threading.Lock] = {}
        self._dirty: set[Key] = set()

    def reconcile(self, key: Key, body: Mapping[str, Any] | None = None, retry: int = 0) -> Verdict | None:
        """Reconcile now and return the verdict (after a reconcile of the same resource that is running).

        Errors propagate: the caller is a kopf change handler, which retries with back-off.
        """
        lock = self._lock_for(key)
        lock.acquire()
        self._gauge()
        return self._drain(key, lock, body, retry, raise_errors=True)

    def poke(self, key: Key) -> None:
        """Reconcile soon: now in this thread, or right after the reconcile that is running."""
        lock = self._lock_for(key)
        with self._mu:
            if not lock.acquire(blocking=False):
                self._dirty.add(key)
                self._gauge_locked()
                return
        self._gauge()
        self._drain(key, lock, None, 0, raise_errors=False)

    def forget(self, key: Key) -> None:
        """The resource is gone: drop what was kept for it."""
        with self._mu:
            self._dirty.discard(key)
            lock = self._locks.get(key)
            if lock is not None and not lock.locked():
                del self._locks[key]
            self._gauge_locked()

    def depth(self) -> int:
        """Reconciles running or waiting to run again."""
        with self._mu:
            return self._depth_locked()

    # -------------------------------------------------------------------------------- internals
    def _lock_for(self, key: Key) -> threading.Lock:
        with self._mu:
            lock = self._locks.get(key)
            if lock is None:
                lock = self._locks[key] = threading.Lock()
            return lock

    def _drain(
        self, key: Key, lock: threading.Lock, body: Mapping[str, Any] | None, retry: int, raise_errors: bool
    ) -> Verdict | None:
        verdict: Verdict | None = None
        try:
            while True:
                with self._mu:
                    self._dirty.discard(key)
                verdict = self._run_once(key, body, retry, raise_errors)
                body = None  # a re-run reads the resource afresh
                with self._mu:
                    if key not in self._dirty:
                        lock.release()
                        self._gauge_locked()
                        return verdict
        except BaseException:
            with self._mu:
                lock.release()
                self._gauge_locked()
            raise

    def _run_once(self, key: Key, body: Mapping[str, Any] | None, retry: int, raise_errors: bool) -> Verdict | None:
        kind, namespace, name = key
        started = time.perf_counter()
        try:
            obj = dict(body) if body is not None else self.ctx.kube.get(API_VERSION, kind, namespace, name)
            verdict = reconcile_once(self.ctx, CONTROLLERS[kind], obj, retry) if obj is not None else None
        except Exception as exc:
            self.metrics.reconciles.labels(kind, "error").inc()
            self.metrics.latency.labels(kind).observe(time.perf_counter() - started)
            if raise_errors:
                raise
            # The next event, timer or change handler retry reconciles it again.
            log.warning("reconcile of %s %s/%s failed: %s", kind, namespace, name, exc)
            return None
        self.metrics.reconciles.labels(kind, result_of(verdict)).inc()
        self.metrics.latency.labels(kind).observe(time.perf_counter() - started)
        return verdict

    def _gauge(self) -> None:
        with self._mu:
            self._gauge_locked()

    def _gauge_locked(self) -> None:
        self.metrics.queue_depth.set(self._depth_locked())

    def _depth_locked(self) -> int:
        return sum(1 for lock in self._locks.values() if lock.locked()) + len(self._dirty)
