"""One reconcile at a time per resource, bursts of triggers coalesced, requeues scheduled.

Triggers arrive from many places at once (the resource's own changes, its Jobs,
pods and Deployments, its upstream producing a version, timers). They all end in
`Runner.poke`: if that resource is already being reconciled, the running
reconcile simply runs once more when it finishes, so N triggers during one
reconcile cost one extra reconcile, not N.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import threading
import time
from collections.abc import Callable, Mapping
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
        self._errors: dict[Key, int] = {}
        self._timers: dict[Key, tuple[float, asyncio.TimerHandle]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._context: contextvars.Context | None = None

    def bind(self, loop: asyncio.AbstractEventLoop, context: contextvars.Context) -> None:
        """Remember the operator's event loop and context, for requeues that fire later."""
        self._loop = loop
        self._context = context

    # --------------------------------------------------------------------------- entry points
    def reconcile(self, key: Key, body: Mapping[str, Any] | None = None, retry: int = 0) -> Verdict | None:
        """Reconcile now and return the verdict, waiting for a reconcile of the same resource to finish first."""
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

    def requeue(self, key: Key, delay: float) -> None:
        """Poke `key` after `delay` seconds (the earliest request wins)."""
        loop = self._loop
        if loop is None:
            return
        loop.call_soon_threadsafe(self._arm, key, max(delay, 0.1))

    def forget(self, key: Key) -> None:
        with self._mu:
            self._dirty.discard(key)
            self._errors.pop(key, None)
            timer = self._timers.pop(key, None)
            lock = self._locks.get(key)
            if lock is not None and not lock.locked():
                del self._locks[key]
        if timer is not None:
            timer[1].cancel()
        self._gauge()

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
                        break
        except BaseException:
            with self._mu:
                rerun = key in self._dirty
                lock.release()
            if rerun:  # a trigger arrived meanwhile: it still deserves a reconcile
                self.requeue(key, 0.1)
            raise
        finally:
            self._gauge()
        return verdict

    def _run_once(self, key: Key, body: Mapping[str, Any] | None, retry: int, raise_errors: bool) -> Verdict | None:
        kind, namespace, name = key
        started = time.perf_counter()
        try:
            obj = dict(body) if body is not None else self.ctx.kube.get(API_VERSION, kind, namespace, name)
            verdict = reconcile_once(self.ctx, CONTROLLERS[kind], obj, retry) if obj is not None else None
        except Exception as exc:
            self.metrics.reconciles.labels(kind, "error").inc()
            self.metrics.latency.labels(kind).observe(time.perf_counter() - started)
            with self._mu:
                errors = self._errors.get(key, 0)
                self._errors[key] = errors + 1
            if raise_errors:
                raise
            delay = self.ctx.config.backoff(errors, base=2.0)
            log.warning("reconcile of %s %s/%s failed (retry in %.0fs): %s", kind, namespace, name, delay, exc)
            self.requeue(key, delay)
            return None
        with self._mu:
            self._errors.pop(key, None)
        self.metrics.reconciles.labels(kind, result_of(verdict)).inc()
        self.metrics.latency.labels(kind).observe(time.perf_counter() - started)
        if verdict is not None and verdict.requeue_after is not None and not raise_errors:
            self.requeue(key, verdict.requeue_after)
        return verdict

    def _arm(self, key: Key, delay: float) -> None:
        assert self._loop is not None
        due = self._loop.time() + delay
        current = self._timers.get(key)
        if current is not None:
            if current[0] <= due:
                return
            current[1].cancel()
        self._timers[key] = (due, self._loop.call_at(due, self._fire, key))
        self._gauge()

    def _fire(self, key: Key) -> None:
        self._timers.pop(key, None)
        assert self._loop is not None and self._context is not None
        run: Callable[[], None] = lambda: self.poke(key)  # noqa: E731
        self._loop.run_in_executor(None, self._context.copy().run, run)

    def _gauge(self) -> None:
        with self._mu:
            self._gauge_locked()

    def _gauge_locked(self) -> None:
        self.metrics.queue_depth.set(self._depth_locked())

    def _depth_locked(self) -> int:
        busy = sum(1 for lock in self._locks.values() if lock.locked())
        return busy + len(self._dirty) + len(self._timers)

    def depth(self) -> int:
        """Reconciles running, waiting to run again, or scheduled for later."""
        with self._mu:
            return self._depth_locked()
