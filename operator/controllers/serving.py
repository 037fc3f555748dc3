"""ModelDeployment: pick the model version(s), converge the serving objects, report the rollout.

Which version is served follows `spec.model`: a pinned `trainJobRef.version`, the
TrainJob's latest or promoted version, or a stored model URI. Every change of the
served version is recorded in `status.history`; `recplane rollback` pins an
earlier entry again (a spec change like any other).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from recplane.operator import refs
from recplane.operator.builders import ModelRef, build_serving
from recplane.operator.builders.serving import canary_name, endpoint, stable_name
from recplane.operator.controllers import jobs as jobs_
from recplane.operator.controllers.base import Context, apply_if_changed, meta, resolve_upstream, waiting
from recplane.operator.status import Verdict, now_rfc3339

Obj = dict[str, Any]
MAX_HISTORY = 20
CREATE_MANAGER = "recplane-operator-create"


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


def resolve_models(ctx: Context, obj: Obj, retry: int) -> tuple[ModelRef | None, ModelRef | None, str, Verdict | None]:
    """(stable, canary, why stable was chosen, verdict when there is nothing to serve yet)."""
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
            return (
                None,
                None,
                "",
                waiting(
                    "VersionNotFound",
                    f"spec.model.uri {uri!r} names no stored model version: check the URI "
                    f"(versions live under {ctx.artifacts.uri}/<namespace>/trainjob/<name>/<version>/)",
                    delay,
                    warning=True,
                ),
            )
        stable = ModelRef(version, uri)
        canary = None
        if want_canary:
            canary = ModelRef(want_canary, uri.rstrip("/").rsplit("/", 1)[0] + f"/{want_canary}/")
        return stable, canary, "uri", None

    ref = refs.upstream_ref(obj)
    assert ref is not None  # the schema requires trainJobRef or uri
    follow = model.get("follow", "promoted")
    if follow == "pinned" and not ref.version:
        return (
            None,
            None,
            "",
            waiting(
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
        return None, None, "", up.verdict
    tj_status = (up.obj or {}).get("status") or {}

    chosen: str | None
    if ref.version:
        chosen, why = ref.version, "pinned"
    elif follow == "latest":
        chosen, why = tj_status.get("latestVersion"), "latest"
    else:
        chosen, why = tj_status.get("promotedVersion"), "promoted"
    if not chosen:
        if up.verdict is not None:
            return None, None, "", up.verdict
        latest = tj_status.get("latestVersion")
        hint = f" (latest {latest} did not pass spec.promoteIf)" if latest else ""
        return (
            None,
            None,
            "",
            waiting("Waiting", f"waiting for TrainJob {ref.name!r} to produce a {why} model version{hint}", delay),
        )
    found = _lookup(ctx, namespace, ref.name, tj_status, chosen)
    if found is None:
        return None, None, "", _not_found("spec.model.trainJobRef.version", chosen, ref.name, tj_status, delay)
    stable = found
    canary = None
    if want_canary:
        canary = _lookup(ctx, namespace, ref.name, tj_status, want_canary)
        if canary is None:
            return stable, None, why, _not_found("spec.canary.version", want_canary, ref.name, tj_status, delay)
    return stable, canary, why, None


def reconcile_serving(ctx: Context, obj: Obj, retry: int, full: bool = True) -> tuple[Verdict, Obj]:
    _kind, namespace, name = meta(obj)
    spec = obj.get("spec") or {}
    previous = obj.get("status") or {}
    fields: Obj = {k: previous[k] for k in ("currentVersion", "currentUri", "history", "endpoint") if k in previous}

    stable, canary, why, problem = resolve_models(ctx, obj, retry)
    if stable is None:
        assert problem is not None
        return problem, fields
    secret = ctx.store_secret_problem(namespace)
    if secret:
        return waiting("StoreSecretMissing", secret, ctx.config.backoff(retry, 10.0), warning=True), fields

    weight = int((spec.get("canary") or {}).get("weight") or 0)
    plan = build_serving(obj, ctx.config, stable, canary, weight)
    existing = {d["metadata"]["name"]: d for d in ctx.children("Deployment", obj)}
    stable_dep = stable_name(name)
    created = False
    if stable_dep not in existing:
        # Created at the autoscaler's minimum, by a plain create: later applies leave `replicas` out, and
        # the field stays with the creator (then the autoscaler) instead of falling back to 1.
        first = copy.deepcopy(next(o for o in plan.apply if o["kind"] == "Deployment"))
        first["spec"]["replicas"] = plan.min_replicas
        made = ctx.kube.create(first, field_manager=CREATE_MANAGER)
        created = made is not None
        # Already there: the watch has not shown it to us yet.
        live = made if made is not None else ctx.kube.get("apps/v1", "Deployment", namespace, stable_dep)
        if live is not None:
            existing[stable_dep] = live
    applied: dict[str, Obj] = {}
    for desired in plan.apply:
        key = desired["metadata"]["name"] + "/" + desired["kind"]
        if desired["kind"] == "Deployment":
            applied[key] = apply_if_changed(ctx, desired, existing.get(desired["metadata"]["name"]))
        elif full or created:  # Service and autoscaler follow the spec alone: applied when it changes
            applied[key] = ctx.kube.apply(desired)
    for api_version, del_kind, del_name in plan.delete:
        if del_name in existing:
            ctx.kube.delete(api_version, del_kind, namespace, del_name, uid=existing[del_name]["metadata"]["uid"])

    history = list(previous.get("history") or [])
    if not history or history[-1].get("version") != stable.version:
        history.append({"version": stable.version, "startedAt": now_rfc3339(ctx.clock()), "reason": why})
    fields.update(
        currentVersion=stable.version,
        currentUri=stable.uri,
        canaryVersion=canary.version if canary else None,
        endpoint=endpoint(name, namespace, ctx.config),
        history=history[-MAX_HISTORY:],
    )

    deps = [applied[f"{stable_dep}/Deployment"]]
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


__all__ = ["reconcile_serving", "resolve_models"]
