"""SampleSet and FeatureSet: run the step Job for the current input, then show its output.

The resource is Ready once a step has stored a version; a later run (new spec or
new upstream version) keeps the last version in status until it is replaced, so
downstream resources keep working from it meanwhile.
"""

from __future__ import annotations

from typing import Any

from recplane.operator import artifacts as art
from recplane.operator import refs
from recplane.operator.builders import build_step
from recplane.operator.builders.common import owned_by
from recplane.operator.controllers import jobs as jobs_
from recplane.operator.controllers.base import Context, carried, create_job, meta, resolve_upstream, waiting
from recplane.operator.status import Verdict

Obj = dict[str, Any]

# Status fields that describe the last stored version (see recplane.api SampleSetStatus/FeatureSetStatus).
VERSION_FIELDS = {
    "SampleSet": (
        "version",
        "artifactUri",
        "rows",
        "trainRows",
        "validationRows",
        "positiveRate",
        "bayesAuc",
        "schema",
        "versions",
    ),
    "FeatureSet": ("version", "sampleSetVersion", "specUri", "features", "versions"),
}


def reconcile_step(ctx: Context, obj: Obj, retry: int, full: bool = True) -> tuple[Verdict, Obj]:
    kind, namespace, name = meta(obj)
    spec = obj.get("spec") or {}
    previous = obj.get("status") or {}
    fields = carried(previous, VERSION_FIELDS[kind])

    if kind == "FeatureSet":
        forbidden = refs.forbidden_features(spec, namespace)
        if forbidden:
            detail = "; ".join(
                f"feature {f!r} is sensitive and allowed only in namespaces {allowed or 'none'}"
                for f, allowed in forbidden
            )
            return waiting(
                "SensitiveFeatureForbidden",
                f"{detail}: namespace {namespace!r} may not use it. Remove the feature from spec.features, "
                f"or have its owner add {namespace!r} to its allowedNamespaces",
                0,
                warning=True,
                permanent=True,
            ), fields

    upstream_version = None
    ref = refs.upstream_ref(obj, ctx.artifacts.parse_uri)
    if ref is not None:
        up = resolve_upstream(ctx, obj, ref, retry)
        if up.verdict is not None:
            return up.verdict, fields
        upstream_version = up.version

    problem = ctx.store_secret_problem(namespace)
    if problem:
        return waiting("StoreSecretMissing", problem, ctx.config.backoff(retry, 10.0), warning=True), fields

    run = build_step(obj, ctx.config, upstream_version)
    existing = ctx.children("Job", obj)
    current = next((j for j in existing if j["metadata"]["name"] == run.name), None)
    cleanup_superseded(ctx, [j for j in existing if j is not current], namespace)

    if current is None:
        create_job(ctx, run.job, run.configmap)
        what = f" over {ref.kind} version {upstream_version}" if ref and upstream_version else ""
        return Verdict(
            phase="Pending", reason="JobCreated", message=f"started Job {run.name}{what}", progressing=True
        ), fields

    state = jobs_.job_state(current)
    if not state.finished:
        if full:  # a crash between creating the Job and its ConfigMap heals here (on resume)
            ctx.kube.apply(owned_by(run.configmap, current))
        if state.ready < max(state.active, 1):
            pods = ctx.pods(obj, job=run.name)
            stuck = jobs_.stuck_containers(pods)
            if stuck:
                return Verdict(phase="Pending", reason=stuck[0], message=stuck[1], warning=True), fields
        phase = "Running" if state.active else "Pending"
        return Verdict(phase=phase, reason="Running", message=f"Job {run.name} is running", progressing=True), fields

    if state.failed:
        pods = ctx.pods(obj, job=run.name)
        why = jobs_.failure_message(pods, state.message)
        return Verdict(
            phase="Failed",
            reason="StepFailed",
            message=f"Job {run.name} failed: {why}. Fix the spec (a new spec starts a new run) or the input data",
            failed=True,
            warning=True,
        ), fields

    manifest = ctx.artifacts.latest(namespace, kind, name)
    if manifest is None:
        return Verdict(
            phase="Failed",
            reason="OutputMissing",
            message=f"Job {run.name} succeeded but the store {ctx.artifacts.uri} has no version of "
            f"{kind.lower()}/{namespace}/{name}; check the step's logs and that it writes to this store",
            failed=True,
            warning=True,
        ), fields
    fields = art.status_fields(kind, manifest)
    if kind == "FeatureSet" and upstream_version:
        fields.setdefault("sampleSetVersion", upstream_version)
    fields["versions"] = art.version_ids(ctx.artifacts.versions(namespace, kind, name))
    return Verdict(
        phase="Ready", reason="Succeeded", message=f"version {manifest.version} at {manifest.uri}", ready=True
    ), fields


def cleanup_superseded(ctx: Context, others: list[Obj], namespace: str) -> None:
    """Stop runs of an older spec or input; keep the newest finished ones (for their logs)."""
    finished = 0
    for job in jobs_.newest_first(others):
        state = jobs_.job_state(job)
        keep = state.finished and finished < ctx.config.job_history
        if state.finished:
            finished += 1
        if not keep:
            ctx.kube.delete("batch/v1", "Job", namespace, job["metadata"]["name"], uid=job["metadata"]["uid"])
