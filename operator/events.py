"""Kubernetes Events for status transitions, posted like the kubelet or a controller does.

Posted directly rather than through kopf, because reconciles also run on the
operator's worker threads, outside any kopf handler.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Mapping
from typing import Any

from recplane.operator.kube import ApiError, Kube
from recplane.operator.status import now_rfc3339

log = logging.getLogger("recplane.operator")

COMPONENT = "recplane-operator"
MAX_MESSAGE = 1024  # what `kubectl describe` shows comfortably; the condition keeps the full text


class EventPoster:
    def __init__(self, kube: Kube, instance: str | None = None) -> None:
        self._kube = kube
        self._instance = instance or socket.gethostname()

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
        try:
            self._kube.create(event)
        except ApiError as exc:  # an Event is worth a retry of nothing: the status says it all
            log.warning("could not post Event %s for %s/%s: %s", reason, meta.get("namespace"), meta.get("name"), exc)
