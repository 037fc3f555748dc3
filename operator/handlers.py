"""kopf handlers: thin. Each one turns a trigger into a reconcile of the right resource.

Triggers:
- the resource itself changes (create / update / resume after an operator restart);
- a Job, pod or Deployment it owns changes state (watched by our managed-by label);
- the resource it consumes produces a new version, or appears, or goes away
  (dependents are found through kopf indexes of every reference);
- a kopf timer while a resource is in a state no event announces the end of (a running
  TrainJob's new versions and metrics, a restart back-off, a missing store Secret, a canary
  under analysis, a followed SampleSet's next round).
Everything funnels into `Runner`, which reconciles one resource at a time. The handlers that only
route an event are coroutines: they run on kopf's event loop without a thread hand-off.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import kopf

from recplane.api import API_VERSION, GROUP, KINDS, VERSION
from recplane.operator import names, refs
from recplane.operator.artifacts import Artifacts
from recplane.operator.cache import (
    CHILD_KINDS,
    POD_INDEX,
    Cache,
    child_index_id,
    index_child,
    index_object,
    index_pod,
    object_index_id,
)
from recplane.operator.config import OperatorConfig
from recplane.operator.controllers import Context
from recplane.operator.controllers import jobs as jobs_
from recplane.operator.controllers.base import WRITES_PER_RECONCILE
from recplane.operator.events import EventPoster
from recplane.operator.kube import ApiError, Kube, api_client
from recplane.operator.metrics import Metrics, default_metrics
from recplane.operator.runner import Key, Runner, reconciler

log = logging.getLogger("recplane.operator")

CHILD_SELECTOR = f"{names.MANAGED_BY}={names.MANAGER}"
# Who consumes whom: upstream kind -> downstream kinds (a SampleSet may also read another's output).
CONSUMERS = {
    "SampleSet": ("FeatureSet", "SampleSet"),
    "FeatureSet": ("TrainJob", "SampleSet"),
    "TrainJob": ("ModelDeployment", "SampleSet"),
    "ModelDeployment": (),
}
UPSTREAM_DIGEST_FIELDS = ("version", "latestVersion", "promotedVersion")
API_ERROR = "API error: "
POLLED_REASONS = ("StoreSecretMissing", "StoreUnavailable", "RestartBackoff", "CanaryAnalysis")


def _runner(memo: Any) -> Runner:
    return memo.runner  # type: ignore[no-any-return]


def _index_id(kind: str) -> str:
    return f"{KINDS[kind].plural}_by_upstream"


# ------------------------------------------------------------------------------------------- startup
async def configure(*, settings: kopf.OperatorSettings, memo: Any, **_: Any) -> None:
    config: OperatorConfig = memo.config
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    # Held while stored versions must be deleted with the resource (deletionPolicy: Delete) or a
    # timer polls it (a continuous TrainJob, a back-off, a missing store Secret): never on one at rest.
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    # Our resources are known up front: no watching of CRDs or namespaces (and no RBAC for them).
    settings.scanning.disabled = True
    settings.execution.max_workers = config.workers
    # Children are watched server-side filtered: the operator never lists other people's pods.
    for group_plural in (("batch", "jobs"), ("v1", "pods"), ("apps", "deployments")):
        settings.watching.label_selectors[group_plural] = CHILD_SELECTOR
    settings.posting.reporting_component = "recplane-operator"
    # Events are posted for status transitions (see recplane.operator.status); kopf's own
    # per-retry log lines would only repeat them.
    settings.posting.level = logging.CRITICAL
    settings.networking.request_timeout = 60
    settings.peering.lifetime = memo.peering_lifetime

    metrics: Metrics = memo.metrics
    # Reconciles run on the worker threads and in kopf's executor (change handlers), each with up to
    # WRITES_PER_RECONCILE requests in flight: a connection each, so none is opened and dropped.
    pool_size = 2 * config.workers * WRITES_PER_RECONCILE + 4
    kube = Kube(api_client(memo.kubeconfig, pool_size=pool_size), on_request=metrics.on_request)
    events = EventPoster(kube).start()
    ctx = Context(kube=kube, artifacts=Artifacts.from_env(), config=config, events=events, cache=memo.cache)
    runner = Runner(reconciler(ctx), metrics)
    runner.start(config.workers)
    memo.runner = runner
    memo.events = events
    memo.artifacts = ctx.artifacts
    if memo.metrics_port:
        metrics.serve(memo.metrics_port)


def shutdown(*, memo: Any, **_: Any) -> None:
    runner = getattr(memo, "runner", None)
    if runner is not None:
        runner.stop()
    events = getattr(memo, "events", None)
    if events is not None:
        events.stop()


async def probe_queue(*, memo: Any, **_: Any) -> int:
    runner = getattr(memo, "runner", None)
    return runner.depth() if runner else 0


# ------------------------------------------------------------------------------- the resource itself
def on_change(
    *, param: Any = None, body: kopf.Body, namespace: str | None, name: str, retry: int, memo: Any, **kwargs: Any
) -> None:
    """Create, update (spec, labels, annotations) or resume: reconcile, and let kopf retry while waiting."""
    memo.cache.bind(kwargs)
    config: OperatorConfig = memo.config
    try:
        verdict = _runner(memo).reconcile((param, namespace or "default", name), body=body, retry=retry)
    except ApiError as exc:
        raise kopf.TemporaryError(f"{API_ERROR}{exc}", delay=config.backoff(retry, base=2.0)) from exc
    if verdict is None:
        return
    if verdict.permanent:
        raise kopf.PermanentError(f"{verdict.reason}: {verdict.message}")
    if verdict.requeue_after is not None:
        raise kopf.TemporaryError(f"{verdict.reason}: {verdict.message}", delay=verdict.requeue_after)


def needs_polling(spec: Mapping[str, Any], status: Mapping[str, Any], resource: kopf.Resource, **_: Any) -> bool:
    """States that change without a Kubernetes event: a continuous TrainJob storing versions while it
    runs, a restart waiting out its back-off, a missing store Secret, an unreachable store, a canary
    under analysis, a SampleSet that follows its source (its next round is due `followInterval`
    after the last one finished). (A batch TrainJob's version and metrics arrive when its Job
    completes, which is an event.)"""
    ready: Mapping[str, Any] = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), {})
    continuous = resource.kind == "TrainJob" and bool(spec.get("continuous")) and status.get("phase") == "Running"
    followed = resource.kind == "SampleSet" and bool((spec.get("source") or {}).get("follow"))
    return continuous or followed or ready.get("reason") in POLLED_REASONS


async def on_poll(*, param: Any = None, namespace: str | None, name: str, memo: Any, **kwargs: Any) -> None:
    memo.cache.bind(kwargs)
    _runner(memo).poke((param, namespace or "default", name), "poll")


def delete_stored_versions(
    *, param: Any = None, namespace: str | None, name: str, memo: Any, logger: Any, **_: Any
) -> None:
    """deletionPolicy: Delete: remove every stored version before the resource goes."""
    artifacts: Artifacts = memo.artifacts
    namespace = namespace or "default"
    deleted = artifacts.delete_all(namespace, param, name)
    logger.info(f"deleted {deleted} stored object(s) of {param.lower()}/{namespace}/{name} (deletionPolicy: Delete)")


# --------------------------------------------------------------------------------- dependents & index
async def index_upstream(
    *, param: Any = None, body: kopf.Body, namespace: str | None, name: str, memo: Any, **_: Any
) -> Any:
    """Index every resource by the one it consumes: (namespace, upstream kind, upstream name) -> its name."""
    artifacts = getattr(memo, "artifacts", None)
    parse = artifacts.parse_uri if artifacts else None
    ref = refs.upstream_ref(body, parse)
    return {(namespace or "default", ref.kind, ref.name): name} if ref else None


async def on_own_event(
    *,
    param: Any = None,
    event: kopf.RawEvent,
    body: kopf.Body,
    namespace: str | None,
    name: str,
    memo: Any,
    **kwargs: Any,
) -> None:
    """When a resource produces a new version, becomes ready, appears or goes: reconcile its consumers."""
    memo.cache.bind(kwargs)
    seen: dict[str, Any] = memo.seen
    namespace = namespace or "default"
    uid = body.get("metadata", {}).get("uid")
    key = f"{param}/{uid}"
    runner = _runner(memo)
    if event.get("type") == "DELETED":
        seen.pop(key, None)
        runner.forget((param, namespace, name))
        digest: Any = "deleted"
    else:
        st = body.get("status") or {}
        ready = next((c.get("status") for c in st.get("conditions") or [] if c.get("type") == "Ready"), None)
        digest = (tuple(st.get(f) for f in UPSTREAM_DIGEST_FIELDS), ready)
        before = seen.get(key)
        seen[key] = digest
        if before == digest or (before is None and event.get("type") is None):
            return  # nothing new, or the initial listing (resume handlers reconcile everything then)
    for downstream in CONSUMERS[param]:
        index: kopf.Index[Any, str] = kwargs[_index_id(downstream)]
        for consumer in index.get((namespace, param, name), []):
            log.debug("%s %s/%s changed: reconciling %s %s", param, namespace, name, downstream, consumer)
            runner.poke((downstream, namespace, consumer), "upstream")


# ------------------------------------------------------------------------------------------ children
def _owner_from_refs(body: Mapping[str, Any]) -> tuple[str, str] | None:
    for ref in body.get("metadata", {}).get("ownerReferences") or []:
        if ref.get("apiVersion") == API_VERSION and ref.get("controller") and ref.get("kind") in KINDS:
            return str(ref["kind"]), str(ref["name"])
    return None


def _child_digest(body: Mapping[str, Any]) -> Any:
    """What of a child's status a reconcile depends on; other changes are not worth one."""
    st = body.get("status") or {}
    if body.get("kind") == "Pod":
        # A Job's or Deployment's own status follows its pods, except for a container that cannot
        # start (an image that cannot be pulled): only that is watched on pods themselves.
        stuck = tuple(
            sorted(
                (cs.get("name"), (cs.get("state") or {}).get("waiting", {}).get("reason"))
                for cs in [*(st.get("initContainerStatuses") or []), *(st.get("containerStatuses") or [])]
                if (cs.get("state") or {}).get("waiting", {}).get("reason") in jobs_.STUCK_REASONS
            )
        )
        return stuck
    conds = tuple(sorted((c.get("type"), c.get("status")) for c in st.get("conditions") or []))
    counts = tuple(
        st.get(k)
        for k in ("active", "ready", "succeeded", "failed", "readyReplicas", "availableReplicas", "updatedReplicas")
    )
    return (st.get("observedGeneration"), conds, counts)


async def on_child_event(
    *, event: kopf.RawEvent, body: kopf.Body, namespace: str | None, memo: Any, **kwargs: Any
) -> None:
    """A Job, Deployment or pod of ours changed state: reconcile the recplane resource behind it."""
    memo.cache.bind(kwargs)
    seen: dict[str, Any] = memo.seen
    meta = body.get("metadata", {})
    uid = meta.get("uid")
    if event.get("type") == "DELETED":
        before = seen.pop(uid, None)
        digest: Any = "deleted"
    else:
        digest = _child_digest(body)
        before = seen.get(uid)
        seen[uid] = digest
        if before == digest or (before is None and event.get("type") is None):
            return
    owner = _owner_from_refs(body) or names.parse_owner_key(
        (meta.get("annotations") or {}).get(names.OWNER_ANNOTATION, "")
    )
    if owner is None or owner[0] not in KINDS:
        return
    key: Key = (owner[0], namespace or "default", owner[1])
    _runner(memo).poke(key)


# ---------------------------------------------------------------------------------------- registration
def register(registry: kopf.OperatorRegistry, config: OperatorConfig) -> None:
    """Register every handler (intervals come from `config`)."""
    managed = {names.MANAGED_BY: names.MANAGER}
    # The same credentials as the reconcilers' client: in-cluster, else KUBECONFIG.
    kopf.on.login(id="login", registry=registry)(kopf.login_via_client)
    kopf.on.startup(id="configure", registry=registry)(configure)
    kopf.on.probe(id="queue_depth", registry=registry)(probe_queue)
    kopf.on.cleanup(id="shutdown", registry=registry)(shutdown)
    for kind in KINDS.values():
        res = (GROUP, VERSION, kind.plural)
        k = kind.kind
        for decorator in (kopf.on.resume, kopf.on.create, kopf.on.update):
            decorator(*res, id="reconcile", param=k, registry=registry)(on_change)
        kopf.timer(
            *res,
            id="poll",
            param=k,
            interval=config.poll_seconds,
            initial_delay=config.poll_seconds,
            sharp=False,
            when=needs_polling,
            registry=registry,
        )(on_poll)
        kopf.index(*res, id=_index_id(k), param=k, registry=registry)(index_upstream)
        kopf.index(*res, id=object_index_id(k), registry=registry)(index_object)
        kopf.on.event(*res, id="dependents", param=k, registry=registry)(on_own_event)
        if "deletionPolicy" in kind.spec.model_json_schema(by_alias=True).get("properties", {}):
            kopf.on.delete(
                *res,
                id="delete-stored-versions",
                param=k,
                when=lambda spec, **_: spec.get("deletionPolicy") == "Delete",
                registry=registry,
            )(delete_stored_versions)
    kopf.index("v1", "pods", id=POD_INDEX, labels=managed, registry=registry)(index_pod)
    for child_kind, group in (("Job", "batch"), ("Deployment", "apps")):
        kopf.index(
            group, "v1", CHILD_KINDS[child_kind], id=child_index_id(child_kind), labels=managed, registry=registry
        )(index_child)
    for group, version, plural in (("batch", "v1", "jobs"), ("apps", "v1", "deployments"), ("", "v1", "pods")):
        kopf.on.event(
            *((group, version, plural) if group else (version, plural)),
            id=f"child-{plural}",
            labels={names.MANAGED_BY: names.MANAGER},
            registry=registry,
        )(on_child_event)


def new_memo(
    config: OperatorConfig,
    metrics_port: int | None = None,
    kubeconfig: str | None = None,
    peering_lifetime: int = 60,
    metrics: Metrics | None = None,
) -> kopf.Memo:
    return kopf.Memo(
        config=config,
        metrics=metrics or default_metrics(),
        metrics_port=metrics_port,
        kubeconfig=kubeconfig,
        peering_lifetime=peering_lifetime,
        seen={},
        cache=Cache(),
    )
