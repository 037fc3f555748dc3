"""TrainJob: the workers' Service (several workers), one Indexed Job per attempt, group restarts with back-off.

Restarts are counted from the cluster, not from memory: attempt k of a run is the
Job labelled `recplane.io/attempt=k`, so after an operator restart the count is
still right and a repeated reconcile never starts a second group.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from recplane.operator import artifacts as art
from recplane.operator import names, refs
from recplane.operator.builders import build_training, build_workers_service, worker_count
from recplane.operator.builders.common import owned_by
from recplane.operator.builders.training import training_key
from recplane.operator.controllers import jobs as jobs_
from recplane.operator.controllers.base import Context, carried, create_job, meta, resolve_upstream, waiting
from recplane.operator.controllers.steps import cleanup_superseded
from recplane.operator.status import Notice, Verdict

Obj = dict[str, Any]

VERSION_FIELDS = ("versions", "latestVersion", "promotedVersion", "metrics", "step", "featureSetVersion")


def _attempt(job: Obj) -> int:
    try:
        return int(job["metadata"]["labels"][names.ATTEMPT_LABEL])
    except (KeyError, ValueError):
        return -1


def _seconds_since(stamp: str | None, now: datetime) -> float:
    if not stamp:
        return float("inf")
    then = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    return (now - then).total_seconds()


def reconcile_training(ctx: Context, obj: Obj, retry: int, full: bool = True) -> tuple[Verdict, Obj]:
    verdict, fields = _reconcile(ctx, obj, retry, full)
    spec = obj.get("spec") or {}
    if not (spec.get("continuous") or spec.get("promoteIf")):
        return verdict, fields  # every version is promoted: the Succeeded Event names it already
    before = (obj.get("status") or {}).get("versions") or []
    notices = version_notices(before, fields.get("versions") or [])
    return (replace(verdict, notices=verdict.notices + notices) if notices else verdict), fields


def version_notices(before: Sequence[Mapping[str, Any]], after: Sequence[Mapping[str, Any]]) -> tuple[Notice, ...]:
    """One Event per model version that `after` (the new status.versions) lists and `before` (the
    status it replaces) did not: VersionPromoted or VersionRejected, with its AUC and the reason.

    Level-triggered: a repeated reconcile, or a restarted operator, compares statuses that both
    list the version, so each version is announced once.
    """
    known = {v.get("version") for v in before}
    out = []
    for v in after:
        if v.get("version") in known:
            continue
        auc = (v.get("metrics") or {}).get("auc")
        what = f"model version {v.get('version')}" + (f" (AUC {auc})" if auc is not None else "")
        reason = v.get("reason")
        if v.get("promoted") is False:
            why = reason or "it did not pass promoteIf"
            out.append(Notice("Warning", "VersionRejected", f"{what} rejected: {why}"))
        else:
            out.append(Notice("Normal", "VersionPromoted", f"{what} promoted" + (f": {reason}" if reason else "")))
    return tuple(out)


def _reconcile(ctx: Context, obj: Obj, retry: int, full: bool) -> tuple[Verdict, Obj]:
    kind, namespace, name = meta(obj)
    spec = obj.get("spec") or {}
    previous = obj.get("status") or {}
    fields = carried(previous, VERSION_FIELDS)

    ref = refs.upstream_ref(obj)
    assert ref is not None  # featureSetRef is required by the schema
    up = resolve_upstream(ctx, obj, ref, retry)
    if up.verdict is not None:
        return up.verdict, fields
    problem = ctx.store_secret_problem(namespace)
    if problem:
        return waiting("StoreSecretMissing", problem, ctx.config.backoff(retry, 10.0), warning=True), fields

    key = training_key(obj, up.version)
    existing = ctx.children("Job", obj)
    attempts = sorted((j for j in existing if j["metadata"]["labels"].get(names.RUN_LABEL) == key), key=_attempt)
    cleanup_superseded(ctx, [j for j in existing if j not in attempts], namespace)
    workers = worker_count(obj)
    if full and attempts and workers > 1:  # and with every new attempt (see _start)
        ctx.kube.apply(build_workers_service(obj, ctx.config))

    max_restarts = int(spec.get("maxRestarts", 3))
    fields["featureSetVersion"] = up.version

    if not attempts:
        _start(ctx, obj, up.version, 0)
        fields.update(restarts=0, workersReady=0)
        return Verdict(
            phase="Pending",
            reason="WorkersCreated",
            message=f"started {workers} worker(s) over FeatureSet version {up.version}",
            ready=bool(fields.get("latestVersion")),
            progressing=True,
        ), fields

    current = attempts[-1]
    attempt = _attempt(current)
    state = jobs_.job_state(current)
    fields.update(restarts=attempt, workersReady=state.ready if not state.finished else 0)
    verdicts = ctx.artifacts.verdicts(namespace, name) if spec.get("continuous") else None
    fields.update(art.trainjob_fields(ctx.artifacts.versions(namespace, kind, name), spec.get("promoteIf"), verdicts))
    has_model = bool(fields.get("latestVersion"))

    if not state.finished:
        if full:  # a crash between creating the Job and its ConfigMap heals here (on resume)
            ctx.kube.apply(owned_by(build_training(obj, ctx.config, up.version, attempt).configmap, current))
        if state.ready < workers:
            pods = ctx.pods(obj, job=current["metadata"]["name"])
            stuck = jobs_.stuck_containers(pods)
            if stuck:
                return Verdict(
                    phase="Pending", reason=stuck[0], message=stuck[1], ready=has_model, warning=True
                ), fields
        phase = "Running" if state.active else "Pending"
        return Verdict(
            phase=phase,
            reason="Training",
            message=f"{state.ready}/{workers} workers ready (attempt {attempt + 1}, {attempt} restart(s))",
            ready=has_model,
            progressing=True,
        ), fields

    if state.succeeded:
        if not has_model:
            return Verdict(
                phase="Failed",
                reason="NoModelVersion",
                message=f"the workers finished but stored no model version under trainjob/{namespace}/{name} in "
                f"{ctx.artifacts.uri}; check rank 0's logs",
                failed=True,
                warning=True,
            ), fields
        return Verdict(
            phase="Succeeded",
            reason="Succeeded",
            message=f"model version {fields['latestVersion']} stored",
            ready=True,
        ), fields

    pods = ctx.pods(obj, job=current["metadata"]["name"])
    why = jobs_.failure_message(pods, state.message)
    if attempt >= max_restarts:
        return Verdict(
            phase="Failed",
            reason="RestartLimitReached",
            message=f"the worker group failed {attempt + 1} time(s), spec.maxRestarts is {max_restarts}; last failure: "
            f"{why}",
            ready=has_model,
            failed=True,
            warning=True,
        ), fields
    delay = ctx.config.backoff(attempt)
    remaining = delay - _seconds_since(state.failed_at, ctx.clock())
    if remaining > 0:
        return Verdict(
            phase="Running",
            reason="RestartBackoff",
            message=f"a worker failed: {why}; restarting the group in {remaining:.0f}s "
            f"(restart {attempt + 1} of {max_restarts}, from the last checkpoint)",
            ready=has_model,
            progressing=True,
            warning=True,
            requeue_after=remaining,
        ), fields
    _start(ctx, obj, up.version, attempt + 1)
    fields.update(restarts=attempt + 1, workersReady=0)
    return Verdict(
        phase="Running",
        reason="Restarting",
        message=f"restarted the worker group (restart {attempt + 1} of {max_restarts}) after: {why}",
        ready=has_model,
        progressing=True,
        warning=True,
    ), fields


def _start(ctx: Context, obj: Obj, feature_set_version: str | None, attempt: int) -> None:
    run = build_training(obj, ctx.config, feature_set_version, attempt)
    if worker_count(obj) > 1:
        ctx.kube.apply(build_workers_service(obj, ctx.config))
    create_job(ctx, run.job, run.configmap)
