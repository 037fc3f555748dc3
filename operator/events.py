"""Kubernetes Events for status transitions, posted like the kubelet or a controller does.

Posted directly rather than through kopf, because reconciles also run on the
operator's worker threads, outside any kopf handler; and posted from a queue by a
thread of their own, so a reconcile never waits for one (an Event is best effort:
the status says it all).
"""

from __future__ import annotations

import logging
import queue
import socket
import threading
from collections.abc import Mapping
from typing import Any

from recplane.operator.kube import ApiError, Kube
from recplane.operator.status import now_rfc3339

log = logging.getLogger("recplane.operator")

Obj = dict[str, Any]

COMPONENT = "recplane-operator"
MAX_MESSAGE = 1024  # what `kubectl describe` shows comfortably; the condition keeps the full text


class EventPoster:
    def __init__(self, kube: Kube, instance: str | None = None, backlog: int = 10_000) -> None:
        self._kube = kube
        self._instance = instance or socket.gethostname()
        self._queue: queue.Queue[Obj | None] = queue.Queue(backlog)
        self._thread: threading.Thread | None = None

    def start(self) -> EventPoster:
        self._thread = threading.Thread(target=self._post_all, name="events", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Post what is queued (for up to `timeout`), then stop."""
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(timeout)

    def _post_all(self) -> None:
        while (event := self._queue.get()) is not None:
            self._post(event)

    def _post(self, event: Obj) -> None:
        try:
            self._kube.create(event)
        except ApiError as exc:
            involved = event["involvedObject"]
            log.warning(
                "could not post Event %s for %s/%s: %s",
                event["reason"],
                involved.get("namespace"),
                involved.get("name"),
                exc,
            )

    def __call__(self, obj: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        meta = obj.get("metadata") or {}
        now = now_rfc3339()
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta.get('name')}.", "namespace": meta.get("namespace") or "default"},
            "involvedObject": {
                "apiVersion": obj.get("apiVersion"),
                "kind": obj.get("kind"),
                "name": meta.get("name"),
                "namespace": meta.get("namespace"),
                "uid": meta.get("uid"),
            },
            "type": type_,
            "reason": reason,
            "message": message if len(message) <= MAX_MESSAGE else message[: MAX_MESSAGE - 3] + "...",
            "source": {"component": COMPONENT},
            "reportingComponent": COMPONENT,
            "reportingInstance": self._instance,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        if self._thread is None:  # not started: post in the caller's thread
            self._post(event)
            return
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            log.warning("Event backlog full: dropped %s for %s/%s", reason, meta.get("namespace"), meta.get("name"))
