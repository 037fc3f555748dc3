"""What every controller shares: the context it works in, upstream resolution, and
writing status (only when it changed, only over the version that was read)."""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from recplane.api import API_VERSION, KINDS
from recplane.api.crd import openapi_schema
from recplane.operator import names, refs, status
from recplane.operator.artifacts import Artifacts, StoreError
from recplane.operator.builders.common import owned_by
from recplane.operator.cache import Cache
from recplane.operator.config import REQUIRED_STORE_KEYS, OperatorConfig
from recplane.operator.kube import ApiError, Conflict, Kube
from recplane.operator.status import Verdict

Obj = dict[str, Any]
EventSink = Callable[[Mapping[str, Any], str, str, str], None]
"""(involved object, type Normal|Warning, reason, message)."""

log = logging.getLogger("recplane.operator")

CONFLICT_RETRIES = 5
STATUS_OWN_FIELDS = frozenset({"phase", "conditions", "observedGeneration", "kopf"})
"""Status fields `status.build_status` computes; the rest are the kind's own."""
SECRET_TTL = 30.0
WRITES_PER_RECONCILE = 3
"""The most writes one reconcile sends side by side (a ModelDeployment's Deployment, Service, autoscaler)."""
T = TypeVar("T")


@dataclass
class Context:
    kube: Kube
    artifacts: Artifacts
    config: OperatorConfig
    events: EventSink
    cache: Cache = field(default_factory=Cache)
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    _secrets: dict[str, tuple[float, bool]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _writers: ThreadPoolExecutor = field(init=False)

    def __post_init__(self) -> None:
        # Enough for every reconcile worker (kopf's and the runner's) to have all its writes in flight.
        workers = WRITES_PER_RECONCILE * 2 * self.config.workers
        self._writers = ThreadPoolExecutor(workers, thread_name_prefix="recplane-write")

    def concurrently(self, tasks: Mapping[str, Callable[[], T]]) -> dict[str, T]:
        """Results of independent requests (a ModelDeployment's Deployment, Service and autoscaler),
        sent side by side: a reconcile then takes as long as its slowest write, not their sum, which
        counts when the API server is busy. Waits for all of them; the first error is raised."""
        if len(tasks) < 2:
            return {key: task() for key, task in tasks.items()}
        futures = {key: self._writers.submit(contextvars.copy_context().run, task) for key, task in tasks.items()}
        wait(futures.values())
        return {key: future.result() for key, future in futures.items()}

    def resource(self, kind: str, namespace: str, name: str) -> Obj | None:
        """A recplane resource: as last seen by the watches, else read from the API server."""
        cached = self.cache.resource(kind, namespace, name)
        return cached if cached is not None else self.kube.get(API_VERSION, kind, namespace, name)

    def children(self, child_kind: str, owner: Mapping[str, Any]) -> list[Obj]:
        """Jobs or Deployments `owner` controls, as the watches show them (listed when there is no cache).

        kopf completes its indexes before any handler runs, so this is the whole set as of the
        last event. A child created a moment ago may be missing: creating it again finds it
        (create-or-read), and deleting goes by uid, so that costs a request, never a duplicate.
        """
        uid = owner["metadata"]["uid"]
        cached = self.cache.children(child_kind, uid)
        if cached is not None:
            return cached
        kind, namespace, name = meta(owner)
        api_version = {"Job": "batch/v1", "Deployment": "apps/v1"}[child_kind]
        listed = self.kube.list(
            api_version, child_kind, namespace, names.label_selector(names.selector_labels(kind, name))
        )
        return [o for o in listed if any(r.get("uid") == uid for r in o["metadata"].get("ownerReferences") or [])]

    def pods(self, owner: Mapping[str, Any], job: str | None = None) -> list[Obj]:
        """Pods of `owner` (of its Job `job` only, when given): from the watches, else listed."""
        kind, namespace, name = meta(owner)
        pods = self.cache.pods(namespace, kind, name)
        if pods is None:
            selector = (
                f"batch.kubernetes.io/job-name={job}"
                if job
                else names.label_selector(names.selector_labels(kind, name))
            )
            return self.kube.list("v1", "Pod", namespace, selector)
        if job:
            pods = [p for p in pods if (p["metadata"].get("labels") or {}).get("batch.kubernetes.io/job-name") == job]
        return pods

    def store_secret_problem(self, namespace: str) -> str | None:
        """Why pods in `namespace` could not read the store settings, or None when the Secret is usable."""
        with self._lock:
            cached = self._secrets.get(namespace)
        if cached and cached[1] and time.monotonic() - cached[0] < SECRET_TTL:
            return None
        name = self.config.store_secret
        try:
            secret = self.kube.get("v1", "Secret", namespace, name)
        except ApiError as exc:
            return f"cannot read Secret {name!r} in namespace {namespace!r}: {exc.message}"
        problem = None
        if secret is None:
            problem = (
                f"Secret {name!r} with the artifact-store settings does not exist in namespace {namespace!r}: "
                f"create it with the keys {', '.join(REQUIRED_STORE_KEYS)} (and RECPLANE_S3_* for MinIO)"
            )
        else:
            missing = [k for k in REQUIRED_STORE_KEYS if k not in (secret.get("data") or {})]
            if missing:
                problem = f"Secret {name!r} in namespace {namespace!r} lacks the key(s) {', '.join(missing)}"
        with self._lock:
            self._secrets[namespace] = (time.monotonic(), problem is None)
        return problem


def meta(obj: Mapping[str, Any]) -> tuple[str, str, str]:
    m = obj.get("metadata") or {}
    return str(obj.get("kind")), str(m.get("namespace") or "default"), str(m.get("name"))


# ------------------------------------------------------------------------------------------ upstream
@dataclass(frozen=True)
class Upstream:
    """The upstream version a resource consumes, or why there is none yet."""

    version: str | None
    obj: Obj | None
    verdict: Verdict | None = None


def waiting(reason: str, message: str, delay: float, warning: bool = False, permanent: bool = False) -> Verdict:
    return Verdict(
        phase="Failed" if permanent else "Waiting",
        reason=reason,
        message=message,
        warning=warning,
        requeue_after=None if permanent else delay,
        permanent=permanent,
        failed=permanent,
    )


def resolve_upstream(ctx: Context, obj: Mapping[str, Any], ref: refs.Ref, retry: int = 0) -> Upstream:
    """Follow `ref`: the pinned version, or the latest version the upstream has produced."""
    kind, namespace, _name = meta(obj)
    delay = ctx.config.backoff(retry, base=5.0)
    up = ctx.resource(ref.kind, namespace, ref.name)
    if up is None:
        return Upstream(
            None,
            None,
            waiting(
                "ReferenceNotFound",
                f"{ref.field} names {ref.kind} {ref.name!r}, which does not exist in namespace {namespace!r}: "
                f"create it or correct {ref.field}.name",
                delay,
                warning=True,
            ),
        )
    cycle = None
    up_status = up.get("status") or {}
    version = _produced_version(ref.kind, up_status)
    # Only a chain that is stuck waiting can be a cycle; a running upstream is not part of one.
    if ref.kind == kind or (version is None and up_status.get("phase") in (None, "Waiting")):
        cycle = refs.find_cycle(obj, lambda k, n: ctx.resource(k, namespace, n), ctx.artifacts.parse_uri)
    if cycle:
        return Upstream(
            None,
            up,
            waiting(
                "ReferenceCycle",
                f"references form a cycle: {refs.describe_chain(cycle)}; none of them can ever become Ready. "
                f"Point {ref.field} at a resource outside the cycle",
                ctx.config.max_backoff_seconds,
                warning=True,
            ),
        )
    if ref.version:
        if ctx.artifacts.manifest(namespace, ref.kind, ref.name, ref.version) is None:
            known = _known_versions(ref.kind, up_status)
            listing = f"stored versions: {', '.join(known[-5:])}" if known else "it has no stored version yet"
            return Upstream(
                None,
                up,
                waiting(
                    "VersionNotFound",
                    f"{ref.field}.version {ref.version!r} is not a version of {ref.kind} {ref.name!r} ({listing}): "
                    f"pin an existing version or remove {ref.field}.version to follow the latest",
                    ctx.config.backoff(retry, base=30.0),
                    warning=True,
                ),
            )
        return Upstream(ref.version, up)
    if version is None:
        phase, _ready, reason = status.summary(up_status)
        state = f"it is {phase or 'Pending'}" + (f" ({reason})" if reason else "")
        failed = status.condition(up_status, "Failed") or {}
        if failed.get("status") == "True":
            state += f": {failed.get('message') or reason}"
        return Upstream(
            None,
            up,
            waiting("Waiting", f"waiting for {ref.kind} {ref.name!r} to produce a version; {state}", delay),
        )
    return Upstream(version, up)


def _produced_version(kind: str, up_status: Mapping[str, Any]) -> str | None:
    """The newest complete version an upstream offers: kept while it re-runs, so consumers go on."""
    if kind == "TrainJob":
        return up_status.get("latestVersion")
    return up_status.get("version")


def _known_versions(kind: str, up_status: Mapping[str, Any]) -> list[str]:
    versions = up_status.get("versions") or []
    return [v["version"] if isinstance(v, dict) else str(v) for v in versions]


# -------------------------------------------------------------------------------------------- status
_SCHEMAS: dict[str, Obj] = {}


def prune(value: Any, schema: Mapping[str, Any]) -> Any:
    """Drop what the API server would prune from `value` under `schema`, so that what is written
    compares equal to what is read back (a repeated reconcile then writes nothing)."""
    if isinstance(value, dict):
        props = schema.get("properties")
        if props is not None and not schema.get("x-kubernetes-preserve-unknown-fields"):
            return {k: prune(v, props[k]) for k, v in value.items() if k in props}
        if props is not None:
            return {k: prune(v, props[k]) if k in props else v for k, v in value.items()}
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):
            return {k: prune(v, extra) for k, v in value.items()}
        return value
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [prune(v, schema["items"]) for v in value]
    return value


def status_schema(kind: str) -> Obj:
    if kind not in _SCHEMAS:
        schema = openapi_schema(KINDS[kind].status)
        schema["x-kubernetes-preserve-unknown-fields"] = True
        _SCHEMAS[kind] = schema
    return _SCHEMAS[kind]


Controller = Callable[[Context, Obj, int, bool], tuple[Verdict, Obj]]
"""(context, resource, retry, full) -> (verdict, kind-specific status fields).

`full` is set when the resource itself changed (or the operator restarted): then every
child is applied. Otherwise (a child or upstream changed) children whose desired
state is known to be in place are left alone, which spares the API server a
server-side apply per child per event.
"""


def reconcile(ctx: Context, controller: Controller, obj: Obj, retry: int = 0, full: bool = True) -> Verdict | None:
    """Run `controller` over the freshest `obj` and write the status it computes.

    Status is written only when it differs, and only over the resourceVersion that was
    read: on a conflict the resource is read again and the whole computation repeated.
    Returns None when the resource is gone or being deleted.
    """
    kind, namespace, name = meta(obj)
    for _ in range(CONFLICT_RETRIES):
        if (obj.get("metadata") or {}).get("deletionTimestamp"):
            return None
        previous = obj.get("status") or {}
        try:
            verdict, fields = controller(ctx, obj, retry, full)
        except StoreError as exc:
            # What the status said is kept (versions, what is served): the store is only out of reach.
            verdict, fields = (
                waiting("StoreUnavailable", f"cannot read the artifact store: {exc}", ctx.config.backoff(retry, 5.0)),
                {k: v for k, v in previous.items() if k not in STATUS_OWN_FIELDS},
            )
        generation = (obj.get("metadata") or {}).get("generation")
        new = status.build_status(verdict, prune(fields, status_schema(kind)), previous, generation)
        if _same(previous, new):
            return verdict
        try:
            written = ctx.kube.patch_status(obj, new)
            ctx.cache.remember(written, based_on=str(obj["metadata"].get("resourceVersion")))
        except Conflict:
            fresh = ctx.kube.get(API_VERSION, kind, namespace, name)
            if fresh is None:
                return None
            obj = fresh
            continue
        except ApiError as exc:
            if exc.status != 422:
                raise
            # The computed status does not fit the schema (e.g. an odd manifest): say so instead of looping.
            log.error("status of %s %s/%s refused: %s", kind, namespace, name, exc.message)
            verdict = Verdict(phase="Failed", reason="StatusRejected", message=exc.message, failed=True, warning=True)
            new = status.build_status(verdict, {}, previous, generation)
            ctx.kube.patch_status(obj, new)
        if status.event_due(previous, new):
            level = logging.WARNING if status.event_type(verdict) == "Warning" else logging.INFO
            log.log(
                level, "%s %s/%s is %s (%s): %s", kind, namespace, name, verdict.phase, verdict.reason, verdict.message
            )
            ctx.events(obj, status.event_type(verdict), verdict.reason, verdict.message)
        for notice in verdict.notices:
            # Derived from the status just replaced and the one written over it, so a repeated
            # reconcile (or a restarted operator) finds nothing new to announce.
            log.info("%s %s/%s: %s: %s", kind, namespace, name, notice.reason, notice.message)
            ctx.events(obj, notice.type, notice.reason, notice.message)
        return verdict
    raise Conflict(409, "Conflict", f"{kind} {namespace}/{name} kept changing while its status was written")


def _same(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    return {k: v for k, v in old.items() if k != "kopf"} == dict(new)


def carried(previous: Mapping[str, Any], keys: tuple[str, ...]) -> Obj:
    """Fields of the last good version, kept while a new run is under way or has failed."""
    return {k: previous[k] for k in keys if k in previous}


# ------------------------------------------------------------------------------------------ children
HASH_ANNOTATION = "recplane.io/desired-hash"


def stamped(obj: Obj) -> Obj:
    """`obj` with a hash of itself in an annotation: a later reconcile tells from the live object
    whether this exact desired state was applied (removed fields included)."""
    annotations = {k: v for k, v in (obj["metadata"].get("annotations") or {}).items() if k != HASH_ANNOTATION}
    body = {**obj, "metadata": {**obj["metadata"], "annotations": annotations}}
    digest = names.short_hash(body, length=16)
    return {**obj, "metadata": {**obj["metadata"], "annotations": {**annotations, HASH_ANNOTATION: digest}}}


def contains(live: Any, desired: Any) -> bool:
    """Every field of `desired` is in `live` with the same value (the API server adds defaults)."""
    if isinstance(desired, dict):
        return isinstance(live, dict) and all(k in live and contains(live[k], v) for k, v in desired.items())
    if isinstance(desired, list):
        return isinstance(live, list) and len(live) == len(desired) and all(map(contains, live, desired))
    return bool(live == desired)


def apply_if_changed(ctx: Context, desired: Obj, live: Obj | None) -> Obj:
    """Server-side apply `desired` unless `live` already is it: same desired hash, no drift in our fields."""
    desired = stamped(desired)
    if live is not None:
        live_hash = ((live.get("metadata") or {}).get("annotations") or {}).get(HASH_ANNOTATION)
        if live_hash == desired["metadata"]["annotations"][HASH_ANNOTATION] and contains(live, desired):
            return live
    return ctx.kube.apply(desired)


def create_job(ctx: Context, job: Obj, configmap: Obj) -> Obj:
    """Create a run's Job, then its spec ConfigMap owned by it. A Job is never changed once created
    (a new input is a new run), so this is a plain create; one that exists already, not yet seen
    through the watch, is read instead."""
    made = ctx.kube.create(job)
    if made is None:
        meta_ = job["metadata"]
        made = ctx.kube.get("batch/v1", "Job", meta_["namespace"], meta_["name"]) or job
    if made.get("metadata", {}).get("uid"):
        ctx.kube.create(owned_by(configmap, made))
    return made
