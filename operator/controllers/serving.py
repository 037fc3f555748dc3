"""ModelDeployment: pick the model version(s), converge the serving objects, report the rollout.

Which version is served follows `spec.model`: a pinned `trainJobRef.version`, the
TrainJob's latest or promoted version, or a stored model URI; with `canary.weight` and no
`canary.version`, a newly chosen version is first the canary (see `rollout`). Every
change of the served version is recorded in `status.history`, with the versions the
TrainJob rejected; `recplane rollback` pins an earlier entry again (a spec change like
any other).
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from recplane.operator import names, refs
from recplane.operator.builders import ModelRef, build_serving
from recplane.operator.builders.serving import canary_name, endpoint, events_prefix, stable_name
from recplane.operator.controllers import jobs as jobs_
from recplane.operator.controllers.base import Context, apply_if_changed, meta, resolve_upstream, waiting
from recplane.operator.controllers.rollout import (
    CanaryPolicy,
    Rollout,
    canary_policy,
    plan_rollout,
    rollout_status,
    serving_notices,
)
from recplane.operator.status import Verdict, now_rfc3339

Obj = dict[str, Any]
CREATE_MANAGER = "recplane-operator-create"
CARRIED = ("currentVersion", "currentUri", "canaryVersion", "canaryUri", "canaryStartedAt", "history", "endpoint")
"""Status fields kept while the spec cannot be resolved (the children are left as they are then)."""


def _versions(tj_status: Mapping[str, Any]) -> dict[str, str]:
    return {v["version"]: v.get("uri", "") for v in tj_status.get("versions") or [] if isinstance(v, dict)}


def _lookup(ctx: Context, namespace: str, tj: str, tj_status: Mapping[str, Any], version: str) -> ModelRef | None:
    uri = _versions(tj_status).get(version)
    if uri:
        return ModelRef(version, uri)
    # The store is the authority: the TrainJob's status may lag behind a version rank 0 just wrote.
    manifest = ctx.artifacts.manifest(namespace, "TrainJob", tj, version)
    return ModelRef(version, manifest.uri) if manifest is not None else None


def _not_found(field: str, version: str, tj: str, tj_status: Mapping[str, Any], delay: float) -> Verdict:
    known = list(_versions(tj_status))
    listing = f"its versions: {', '.join(known[-5:])}" if known else "it has no model version yet"
    return waiting(
        "VersionNotFound",
        f"{field} {version!r} is not a model version of TrainJob {tj!r} ({listing}): name an existing version",
        delay,
        warning=True,
    )


@dataclass(frozen=True)
class Resolved:
    """What `spec.model` (and `spec.canary.version`) resolve to."""

    chosen: ModelRef | None
    """The version the spec asks for: pinned, the TrainJob's latest or promoted one, or the URI."""
    canary: ModelRef | None = None
    """The fixed `canary.version`, when set and found."""
    why: str = ""
    """pinned, latest, promoted or uri."""
    problem: Verdict | None = None
    """Why nothing (or no canary) can be served yet."""
    versions: list[Obj] = field(default_factory=list)
    """The TrainJob's status.versions (oldest first)."""


def resolve_models(ctx: Context, obj: Obj, retry: int) -> Resolved:
    _kind, namespace, _name = meta(obj)
    spec = obj.get("spec") or {}
    model = spec.get("model") or {}
    canary_spec = spec.get("canary") or {}
    want_canary = canary_spec.get("version") if int(canary_spec.get("weight") or 0) > 0 else None
    delay = ctx.config.backoff(retry, base=15.0)

    if model.get("uri"):
        uri = str(model["uri"])
        target = ctx.artifacts.parse_uri(uri)
        version = target.version if target and target.version else uri.rstrip("/").rsplit("/", 1)[-1]
        if (
            target is not None
            and target.version
            and ctx.artifacts.manifest(target.namespace, target.kind, target.name, target.version) is None
        ):
            return Resolved(
                None,
                problem=waiting(
                    "VersionNotFound",
                    f"spec.model.uri {uri!r} names no stored model version: check the URI "
                    f"(versions live under {ctx.artifacts.uri}/<namespace>/trainjob/<name>/<version>/)",
                    delay,
                    warning=True,
                ),
            )
        canary = None
        if want_canary:
            canary = ModelRef(want_canary, uri.rstrip("/").rsplit("/", 1)[0] + f"/{want_canary}/")
        return Resolved(ModelRef(version, uri), canary, "uri")

    ref = refs.upstream_ref(obj)
    assert ref is not None  # the schema requires trainJobRef or uri
    follow = model.get("follow", "promoted")
    if follow == "pinned" and not ref.version:
        return Resolved(
            None,
            problem=waiting(
                "InvalidSpec",
                "spec.model.follow is pinned but spec.model.trainJobRef.version is not set: set the version to serve, "
                "or follow latest or promoted",
                0,
                warning=True,
                permanent=True,
            ),
        )
    # A pinned version is checked below against the TrainJob; resolve only the TrainJob itself here.
    up = resolve_upstream(ctx, obj, refs.Ref(ref.kind, ref.name, None, ref.field), retry)
    if up.obj is None and up.verdict is not None:
        return Resolved(None, problem=up.verdict)
    tj_status = (up.obj or {}).get("status") or {}
    versions = [v for v in tj_status.get("versions") or [] if isinstance(v, dict)]

    chosen: str | None
    if ref.version:
        chosen, why = ref.version, "pinned"
    elif follow == "latest":
        chosen, why = tj_status.get("latestVersion"), "latest"
    else:
        chosen, why = tj_status.get("promotedVersion"), "promoted"
    if not chosen:
        if up.verdict is not None:
            return Resolved(None, problem=up.verdict)
        latest = tj_status.get("latestVersion")
        hint = f" (latest {latest} did not pass spec.promoteIf)" if latest else ""
        return Resolved(
            None,
            problem=waiting(
                "Waiting", f"waiting for TrainJob {ref.name!r} to produce a {why} model version{hint}", delay
            ),
            versions=versions,
        )
    found = _lookup(ctx, namespace, ref.name, tj_status, chosen)
    if found is None:
        return Resolved(None, problem=_not_found("spec.model.trainJobRef.version", chosen, ref.name, tj_status, delay))
    canary = None
    if want_canary:
        canary = _lookup(ctx, namespace, ref.name, tj_status, want_canary)
        if canary is None:
            problem = _not_found("spec.canary.version", want_canary, ref.name, tj_status, delay)
            return Resolved(found, None, why, problem, versions)
    return Resolved(found, canary, why, None, versions)


def reconcile_serving(ctx: Context, obj: Obj, retry: int, full: bool = True) -> tuple[Verdict, Obj]:
    _kind, namespace, name = meta(obj)
    spec = obj.get("spec") or {}
    previous = obj.get("status") or {}
    fields: Obj = {k: previous[k] for k in CARRIED if k in previous}

    found = resolve_models(ctx, obj, retry)
    if found.chosen is None:
        assert found.problem is not None
        return found.problem, fields
    secret = ctx.store_secret_problem(namespace)
    if secret:
        return waiting("StoreSecretMissing", secret, ctx.config.backoff(retry, 10.0), warning=True), fields

    now = ctx.clock().replace(microsecond=0)
    existing = {d["metadata"]["name"]: d for d in ctx.children("Deployment", obj)}
    policy = canary_policy(spec, found.why)
    if policy is not None:
        serving_canary = _serves(existing.get(canary_name(name)), previous.get("canaryVersion"))
        rollout = plan_rollout(found.chosen, previous, policy, serving_canary, now)
        weight = policy.weight
    else:
        rollout = Rollout(found.chosen, found.canary)
        weight = int((spec.get("canary") or {}).get("weight") or 0)
    stable, canary = rollout.stable, rollout.canary

    plan = build_serving(obj, ctx.config, stable, canary, weight)
    stable_dep = stable_name(name)
    first = stable_dep not in existing

    def deployment(desired: Obj) -> Obj:
        live = existing.get(desired["metadata"]["name"])
        if live is None and desired["metadata"]["name"] == stable_dep:
            live = _create_stable(ctx, desired, plan.min_replicas)
        return apply_if_changed(ctx, desired, live)

    writes: dict[str, Callable[[], Obj]] = {}
    for desired in plan.apply:
        key = desired["metadata"]["name"] + "/" + desired["kind"]
        if desired["kind"] == "Deployment":
            writes[key] = functools.partial(deployment, desired)
        elif full or first:  # Service and autoscaler follow the spec alone: applied when it changes
            writes[key] = functools.partial(ctx.kube.apply, desired)
    applied = ctx.concurrently(writes)
    for api_version, del_kind, del_name in plan.delete:
        if del_name in existing:
            ctx.kube.delete(api_version, del_kind, namespace, del_name, uid=existing[del_name]["metadata"]["uid"])

    fields.update(
        rollout_status(previous, rollout, found.chosen, found.why, found.versions, policy, now),
        endpoint=endpoint(name, namespace, ctx.config),
        eventsUri=(
            ctx.artifacts.uri.rstrip("/") + "/" + events_prefix(name, namespace) + "/"
            if (spec.get("events") or {}).get("enabled")
            else None
        ),
    )
    verdict, fields = _verdict(ctx, obj, rollout, policy, weight, found.problem, applied, fields, now)
    notices = serving_notices(previous, fields, weight, policy)
    return (replace(verdict, notices=notices) if notices else verdict), fields


def _create_stable(ctx: Context, desired: Obj, min_replicas: int) -> Obj | None:
    """Create the stable Deployment at the autoscaler's minimum, by a plain create: later applies leave
    `replicas` out, and the field stays with the creator (then the autoscaler) instead of falling back
    to 1. One that exists already (the watch has not shown it to us yet) is read instead."""
    first = copy.deepcopy(desired)
    first["spec"]["replicas"] = min_replicas
    made = ctx.kube.create(first, field_manager=CREATE_MANAGER)
    if made is not None:
        return made
    meta_ = desired["metadata"]
    return ctx.kube.get("apps/v1", "Deployment", meta_["namespace"], meta_["name"])  # type: ignore[no-any-return]


def _verdict(
    ctx: Context,
    obj: Obj,
    rollout: Rollout,
    policy: CanaryPolicy | None,
    weight: int,
    problem: Verdict | None,
    applied: Mapping[str, Obj],
    fields: Obj,
    now: datetime,
) -> tuple[Verdict, Obj]:
    """Where the rollout stands: ready replicas, rolling out, stuck, or a canary under analysis."""
    _kind, _namespace, name = meta(obj)
    stable, canary = rollout.stable, rollout.canary
    deps = [applied[f"{stable_name(name)}/Deployment"]]
    if canary is not None:
        deps.append(applied[f"{canary_name(name)}/Deployment"])
    ready = sum(int((d.get("status") or {}).get("readyReplicas") or 0) for d in deps)
    fields["readyReplicas"] = ready
    rolled_out = all(_rolled_out(d) for d in deps)
    serving = f"{stable.version}" + (f" with canary {canary.version} at {weight}%" if canary else "")

    if problem is not None:  # stable is fine, the canary is not
        return Verdict(
            phase="Ready" if ready else "Pending",
            reason=problem.reason,
            message=f"serving {stable.version}; canary not deployed: {problem.message}",
            ready=ready > 0,
            warning=True,
            requeue_after=problem.requeue_after,
        ), fields
    if rolled_out and ready > 0 and canary is not None and policy is not None:
        due = rollout.analysis_due(policy)
        since = now_rfc3339(rollout.canary_started_at or now)
        until = f" at {now_rfc3339(due)}" if due is not None else f" after {policy.analysis}"
        return Verdict(
            phase="Ready",
            reason="CanaryAnalysis",
            message=f"serving {serving} on {ready} ready replica(s) at {fields['endpoint']}; the canary serves "
            f"since {since} and becomes the stable version{until} if it stays ready",
            ready=True,
            progressing=True,
            # The poll timer comes back too (a polled reason): this only makes the promotion punctual.
            requeue_after=max(1.0, (due - now).total_seconds()) if due is not None else 1.0,
        ), fields
    if rolled_out and ready > 0:
        return Verdict(
            phase="Ready",
            reason="Serving",
            message=f"serving {serving} on {ready} ready replica(s) at {fields['endpoint']}",
            ready=True,
        ), fields
    pods = ctx.pods(obj)
    stuck = jobs_.stuck_containers(pods)
    if stuck:
        return Verdict(
            phase="Ready" if ready else "Pending",
            reason=stuck[0],
            message=stuck[1] + (f" (still serving on {ready} ready replica(s))" if ready else ""),
            ready=ready > 0,
            warning=True,
        ), fields
    return Verdict(
        phase="Running" if ready else "Pending",
        reason="RollingOut",
        message=f"rolling out {serving}: {ready} replica(s) ready",
        ready=ready > 0,
        progressing=True,
    ), fields


def _serves(dep: Mapping[str, Any] | None, version: str | None) -> bool:
    """`dep` runs model `version`, rolled out, with a ready replica."""
    if dep is None or not version:
        return False
    labels = ((dep.get("spec") or {}).get("template") or {}).get("metadata", {}).get("labels") or {}
    ready = int((dep.get("status") or {}).get("readyReplicas") or 0)
    return labels.get(names.MODEL_VERSION_LABEL) == names.label_value(version) and ready > 0 and _rolled_out(dep)


def _rolled_out(dep: Mapping[str, Any]) -> bool:
    """The Deployment controller has seen the latest template and every replica runs it and is available."""
    st = dep.get("status") or {}
    want = (dep.get("spec") or {}).get("replicas", 1)
    return (
        int(st.get("observedGeneration") or 0) >= int((dep.get("metadata") or {}).get("generation") or 0)
        and int(st.get("updatedReplicas") or 0) >= want
        and int(st.get("availableReplicas") or 0) >= want
        and int(st.get("replicas") or 0) == int(st.get("updatedReplicas") or 0)
    )


__all__ = ["Resolved", "reconcile_serving", "resolve_models"]
