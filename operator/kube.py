"""A small dictionary-in, dictionary-out Kubernetes client for the reconcilers.

Built on the official client's connection handling (auth, TLS, token refresh,
pooling) but without its model classes: the builders produce plain dicts and
children are written with server-side apply, so a repeated apply of the same
object changes nothing. Every request is counted for the metrics endpoint.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from kubernetes import client as k8s
from kubernetes import config as k8s_config

from recplane.api import API_VERSION, KINDS

Obj = dict[str, Any]
FIELD_MANAGER = "recplane-operator"


class ApiError(RuntimeError):
    """A request the API server refused; `status` is the HTTP code (0: no answer)."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message


class Conflict(ApiError):
    """409: the object changed since it was read (optimistic concurrency), or a field-manager conflict."""


class NotFound(ApiError):
    """404."""


@dataclass(frozen=True)
class ResourceType:
    api_version: str
    kind: str
    plural: str
    namespaced: bool = True

    def path(self, namespace: str | None = None, name: str | None = None, subresource: str | None = None) -> str:
        base = "/api/v1" if self.api_version == "v1" else f"/apis/{self.api_version}"
        parts = [base]
        if self.namespaced and namespace:
            parts.append(f"namespaces/{quote(namespace, safe='')}")
        parts.append(self.plural)
        if name:
            parts.append(quote(name, safe=""))
            if subresource:
                parts.append(subresource)
        return "/".join(parts)


TYPES: dict[tuple[str, str], ResourceType] = {
    (t.api_version, t.kind): t
    for t in (
        ResourceType("v1", "ConfigMap", "configmaps"),
        ResourceType("v1", "Service", "services"),
        ResourceType("v1", "Pod", "pods"),
        ResourceType("v1", "Secret", "secrets"),
        ResourceType("v1", "Event", "events"),
        ResourceType("batch/v1", "Job", "jobs"),
        ResourceType("apps/v1", "Deployment", "deployments"),
        ResourceType("autoscaling/v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers"),
        *(ResourceType(API_VERSION, k.kind, k.plural) for k in KINDS.values()),
    )
}


def resource_type(api_version: str, kind: str) -> ResourceType:
    try:
        return TYPES[(api_version, kind)]
    except KeyError:
        raise ValueError(f"the operator does not manage {api_version} {kind}") from None


RequestHook = Callable[[str, str, int, float], None]
"""Called after every request with (verb, resource plural, HTTP status, seconds)."""


def api_client(kubeconfig: str | None = None, pool_size: int = 16, context: str | None = None) -> k8s.ApiClient:
    """In-cluster credentials inside a pod, else the kubeconfig (KUBECONFIG or ~/.kube/config)."""
    cfg = k8s.Configuration()
    if kubeconfig is None and not os.environ.get("KUBECONFIG") and os.environ.get("KUBERNETES_SERVICE_HOST"):
        k8s_config.load_incluster_config(client_configuration=cfg)
    else:
        k8s_config.load_kube_config(config_file=kubeconfig, context=context, client_configuration=cfg)
    cfg.connection_pool_maxsize = pool_size
    return k8s.ApiClient(cfg)


class Kube:
    """Typed-by-convention access to the objects the operator reads and writes."""

    def __init__(self, client: k8s.ApiClient, on_request: RequestHook | None = None, timeout: float = 30.0) -> None:
        self._client = client
        self._on_request = on_request
        self._timeout = timeout

    # ---------------------------------------------------------------- transport
    def request(
        self,
        method: str,
        path: str,
        query: Mapping[str, str] | None = None,
        body: Any = None,
        content_type: str = "application/json",
    ) -> Any:
        plural, named = _plural_of(path)
        verb = method.lower() if method != "GET" or named else "list"
        method, url, headers, payload, _ = self._client.param_serialize(
            method=method,
            resource_path=path,
            query_params=list((query or {}).items()),
            header_params={"Accept": "application/json", "Content-Type": content_type},
            body=body,
            auth_settings=["BearerToken"],
        )
        started = time.perf_counter()
        status = 0
        try:
            resp = self._client.call_api(
                method, url, header_params=headers, body=payload, _request_timeout=self._timeout
            )
            raw = resp.read()
            status = resp.status
        except k8s.ApiException as exc:
            status = exc.status or 0
            raise ApiError(status, str(exc.reason), str(exc.body or "")) from None
        except OSError as exc:  # urllib3 connection errors derive from OSError
            raise ApiError(0, "Unreachable", str(exc)) from None
        finally:
            if self._on_request:
                self._on_request(verb, plural, status, time.perf_counter() - started)
        if 200 <= status < 300:
            return json.loads(raw) if raw else None
        raise _error(status, raw)

    # ------------------------------------------------------------------- verbs
    def get(self, api_version: str, kind: str, namespace: str, name: str) -> Obj | None:
        try:
            return self.request("GET", resource_type(api_version, kind).path(namespace, name))  # type: ignore[no-any-return]
        except NotFound:
            return None

    def list(self, api_version: str, kind: str, namespace: str, selector: str | None = None) -> list[Obj]:
        query = {"labelSelector": selector} if selector else None
        out = self.request("GET", resource_type(api_version, kind).path(namespace), query=query)
        items: list[Obj] = out.get("items") or []
        # List items carry no apiVersion/kind; put them back so items can be passed around as objects.
        for item in items:
            item.setdefault("apiVersion", api_version)
            item.setdefault("kind", kind)
        return items

    def apply(self, obj: Obj, field_manager: str = FIELD_MANAGER) -> Obj:
        """Server-side apply: create or converge `obj`; fields other managers own are taken over (force)."""
        meta = obj["metadata"]
        rtype = resource_type(obj["apiVersion"], obj["kind"])
        return self.request(  # type: ignore[no-any-return]
            "PATCH",
            rtype.path(meta.get("namespace"), meta["name"]),
            query={"fieldManager": field_manager, "force": "true"},
            body=obj,
            content_type="application/apply-patch+yaml",
        )

    def create(self, obj: Obj, field_manager: str = FIELD_MANAGER) -> Obj | None:
        """POST `obj`; None when an object of that name already exists."""
        meta = obj["metadata"]
        try:
            return self.request(  # type: ignore[no-any-return]
                "POST",
                resource_type(obj["apiVersion"], obj["kind"]).path(meta.get("namespace")),
                query={"fieldManager": field_manager},
                body=obj,
            )
        except Conflict:
            return None

    def delete(
        self,
        api_version: str,
        kind: str,
        namespace: str,
        name: str,
        uid: str | None = None,
        propagation: str = "Background",
    ) -> bool:
        """Delete (only the object with `uid`, when given); False when it was already gone."""
        body: Obj = {"apiVersion": "v1", "kind": "DeleteOptions", "propagationPolicy": propagation}
        if uid:
            body["preconditions"] = {"uid": uid}
        try:
            self.request("DELETE", resource_type(api_version, kind).path(namespace, name), body=body)
        except NotFound:
            return False
        except Conflict:  # the uid precondition failed: a newer object of that name is not ours to delete
            return False
        return True

    def patch_status(self, obj: Mapping[str, Any], status: Obj) -> Obj:
        """Merge-patch the status subresource, only if `obj` is unchanged since it was read.

        Keys of the old status missing from `status` are removed. Raises Conflict when
        someone else wrote in between; the caller re-reads and recomputes.
        """
        meta = obj["metadata"]
        old = obj.get("status") or {}
        # kopf's own bookkeeping (if any) is left alone.
        patch_body = {**{k: None for k in old if k not in status and k != "kopf"}, **status}
        rtype = resource_type(obj["apiVersion"], obj["kind"])
        return self.request(  # type: ignore[no-any-return]
            "PATCH",
            rtype.path(meta.get("namespace"), meta["name"], "status"),
            body={"metadata": {"resourceVersion": meta["resourceVersion"]}, "status": patch_body},
            content_type="application/merge-patch+json",
        )

    def merge_patch(self, api_version: str, kind: str, namespace: str, name: str, patch: Obj) -> Obj:
        return self.request(  # type: ignore[no-any-return]
            "PATCH",
            resource_type(api_version, kind).path(namespace, name),
            body=patch,
            content_type="application/merge-patch+json",
        )


def _plural_of(path: str) -> tuple[str, bool]:
    """("trainjobs/status", True) for .../namespaces/ns/trainjobs/name/status: the resource, and
    whether the path names one object."""
    parts = [p for p in path.split("/") if p]
    if "namespaces" in parts:
        i = parts.index("namespaces")
        rest = parts[i + 2 :]
    else:
        rest = parts[2:] if parts and parts[0] == "api" else parts[3:]
    if not rest:
        return "namespaces", False
    return "/".join([rest[0], *rest[2:3]]), len(rest) > 1


def _error(status: int, raw: bytes | None) -> ApiError:
    try:
        doc = json.loads(raw or b"{}")
    except ValueError:
        doc = {}
    reason = str(doc.get("reason") or status)
    message = str(doc.get("message") or (raw or b"").decode(errors="replace")[:500])
    if status == 404:
        return NotFound(status, reason, message)
    if status == 409:
        return Conflict(status, reason, message)
    return ApiError(status, reason, message)
