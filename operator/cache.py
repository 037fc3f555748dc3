"""What the operator already knows from its watches: its resources and their Jobs and Deployments.

Backed by kopf indexes, which kopf fills from the same watch streams it handles
and completes before any handler runs, so a lookup here is as fresh as the last
event and needs no request to the API server. Reconciles that must be
authoritative (a resource's own change, an operator restart) still read the API
server; the event-driven ones in between read from here.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

import kopf

from recplane.api import API_VERSION, KINDS
from recplane.operator import names

Obj = dict[str, Any]

CHILD_KINDS = {"Job": "jobs", "Deployment": "deployments"}


def object_index_id(kind: str) -> str:
    return f"{KINDS[kind].plural}_objects"


def child_index_id(child_kind: str) -> str:
    return f"{CHILD_KINDS[child_kind]}_by_owner"


async def index_object(*, body: kopf.Body, namespace: str | None, name: str, **_: Any) -> Any:
    """(namespace, name) -> the resource as last seen."""
    return {(namespace or "default", name): dict(body)}


POD_INDEX = "pods_by_owner"


async def index_pod(*, body: kopf.Body, namespace: str | None, **_: Any) -> Any:
    """(namespace, kind, name) of the recplane resource behind a pod -> what reconciles read of it."""
    owner = names.parse_owner_key((body.get("metadata", {}).get("annotations") or {}).get(names.OWNER_ANNOTATION, ""))
    if owner is None:
        return None
    meta = body.get("metadata", {})
    st = body.get("status") or {}
    kept = ("phase", "reason", "message", "containerStatuses", "initContainerStatuses")
    return {
        (namespace or "default", *owner): {
            "metadata": {"name": meta.get("name"), "labels": dict(meta.get("labels") or {})},
            "status": {k: st[k] for k in kept if k in st},
        }
    }


async def index_child(*, body: kopf.Body, **_: Any) -> Any:
    """Owner uid -> the child as last seen (only children a recplane resource controls)."""
    for ref in body.get("metadata", {}).get("ownerReferences") or []:
        if ref.get("apiVersion") == API_VERSION and ref.get("controller") and ref.get("kind") in KINDS:
            return {ref["uid"]: dict(body)}
    return None


class Cache:
    def __init__(self) -> None:
        self._indexes: dict[str, kopf.Index[Any, Obj]] = {}
        self._written: dict[tuple[str, str, str], tuple[str, Obj]] = {}
        self._lock = threading.Lock()

    def bind(self, handler_kwargs: Mapping[str, Any]) -> None:
        """Keep hold of kopf's (live) indexes; every handler gets them, so the first one to run binds them."""
        if len(self._indexes) == len(KINDS) + len(CHILD_KINDS) + 1:
            return
        with self._lock:
            for kind in KINDS:
                self._indexes[object_index_id(kind)] = handler_kwargs[object_index_id(kind)]
            for child in CHILD_KINDS:
                self._indexes[child_index_id(child)] = handler_kwargs[child_index_id(child)]
            self._indexes[POD_INDEX] = handler_kwargs[POD_INDEX]

    def resource(self, kind: str, namespace: str, name: str) -> Obj | None:
        """The recplane resource as last seen, or None when not known (read the API server then)."""
        index = self._indexes.get(object_index_id(kind))
        if index is None:
            return None
        found = list(index.get((namespace, name), ()))
        seen = found[0] if found else None
        with self._lock:
            written = self._written.pop((kind, namespace, name), None)
            if written is not None and seen is not None and seen["metadata"].get("resourceVersion") == written[0]:
                self._written[(kind, namespace, name)] = written
                return written[1]
        return seen

    def pods(self, namespace: str, kind: str, name: str) -> list[Obj] | None:
        """Pods (name, labels, status) of one recplane resource, or None when the cache is not bound yet."""
        index = self._indexes.get(POD_INDEX)
        if index is None:
            return None
        return list(index.get((namespace, kind, name), ()))

    def remember(self, written: Obj, based_on: str) -> None:
        """`written` (a status write's answer) replaces the cached object while the cache still holds
        the version it was written over: the next reconcile does not start from a stale version."""
        meta = written.get("metadata") or {}
        with self._lock:
            self._written[(str(written.get("kind")), str(meta.get("namespace")), str(meta.get("name")))] = (
                based_on,
                written,
            )

    def children(self, child_kind: str, owner_uid: str) -> list[Obj] | None:
        """Children of one resource (complete: kopf filled the index before any handler ran),
        or None when the cache is not bound yet."""
        index = self._indexes.get(child_index_id(child_kind))
        if index is None:
            return None
        return list(index.get(owner_uid, ()))
