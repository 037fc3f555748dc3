"""SampleSet and FeatureSet: run the step Job for the current input, then show its output.

The resource is Ready once a step has stored a version; a later run (new spec or
new upstream version) keeps the last version in status until it is replaced, so
downstream resources keep working from it meanwhile.

A SampleSet that follows its source runs its step in rounds: `source.followInterval` after
one round's Job has finished, the next round's Job looks for new files (a new version when
there are some, nothing otherwise). Rounds are counted from the Jobs that exist (label
`recplane.io/round`), so a repeated reconcile or a restarted operator never starts one
twice. Between rounds and while one runs the status stays as it is: Ready with the last
version, reason `Following`; it changes only when a round stores a version or fails.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from recplane.operator import artifacts as art
from recplane.operator import names, refs
from recplane.operator.builders import build_step
from recplane.operator.builders.common import owned_by
from recplane.operator.builders.steps import follow_interval, follows, step_key
from recplane.operator.controllers import jobs as jobs_
from recplane.operator.controllers.base import Context, carried, create_job, meta, resolve_upstream, waiting
from recplane.operator.controllers.rollout import duration_seconds, parse_time
from recplane.operator.status import Notice, Verdict, now_rfc3339

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

    if follows(obj):
        return _reconcile_rounds(ctx, obj, upstream_version, fields, full)

    run = build_step(obj, ctx.config, upstream_version)
    existing = ctx.children("Job", obj)
    current = next((j for j in existing if j["metadata"]["name"] == run.name), None)
    cleanup_superseded(ctx, [j for j in existing if j is not current], namespace)

    if current is None:
        create_job(ctx, run.job, run.configmap)
        return _created(run.name, ref, upstream_version), fields

    state = jobs_.job_state(current)
    if not state.finished:
        if full:  # a crash between creating the Job and its ConfigMap heals here (on resume)
            ctx.kube.apply(owned_by(run.configmap, current))
        return _running(ctx, obj, run.name, state), fields

    if state.failed:
        why = jobs_.failure_message(ctx.pods(obj, job=run.name), state.message)
        return Verdict(
            phase="Failed",
            reason="StepFailed",
            message=f"Job {run.name} failed: {why}. Fix the spec (a new spec starts a new run) or the input data",
            failed=True,
            warning=True,
        ), fields

    manifest = ctx.artifacts.latest(namespace, kind, name)
    if manifest is None:
        return _output_missing(ctx, obj, run.name), fields
    fields = _version_fields(ctx, obj, manifest)
    if kind == "FeatureSet" and upstream_version:
        fields.setdefault("sampleSetVersion", upstream_version)
    return Verdict(
        phase="Ready", reason="Succeeded", message=f"version {manifest.version} at {manifest.uri}", ready=True
    ), fields


def _created(job_name: str, ref: refs.Ref | None, upstream_version: str | None) -> Verdict:
    what = f" over {ref.kind} version {upstream_version}" if ref and upstream_version else ""
    return Verdict(phase="Pending", reason="JobCreated", message=f"started Job {job_name}{what}", progressing=True)


def _running(ctx: Context, obj: Obj, job_name: str, state: jobs_.JobState) -> Verdict:
    if state.ready < max(state.active, 1):
        stuck = jobs_.stuck_containers(ctx.pods(obj, job=job_name))
        if stuck:
            return Verdict(phase="Pending", reason=stuck[0], message=stuck[1], warning=True)
    phase = "Running" if state.active else "Pending"
    return Verdict(phase=phase, reason="Running", message=f"Job {job_name} is running", progressing=True)


def _output_missing(ctx: Context, obj: Obj, job_name: str) -> Verdict:
    kind, namespace, name = meta(obj)
    return Verdict(
        phase="Failed",
        reason="OutputMissing",
        message=f"Job {job_name} succeeded but the store {ctx.artifacts.uri} has no version of "
        f"{kind.lower()}/{namespace}/{name}; check the step's logs and that it writes to this store",
        failed=True,
        warning=True,
    )


def _version_fields(ctx: Context, obj: Obj, manifest: Any) -> Obj:
    kind, namespace, name = meta(obj)
    fields = art.status_fields(kind, manifest)
    fields["versions"] = art.version_ids(ctx.artifacts.versions(namespace, kind, name))
    return fields


# ------------------------------------------------------------------------------ a followed source
MIN_FOLLOW_SECONDS = 1.0


def round_of(job: Obj) -> int:
    """The round a followed SampleSet's Job runs (its `recplane.io/round` label), -1 when unlabelled."""
    try:
        return int(((job.get("metadata") or {}).get("labels") or {})[names.ROUND_LABEL])
    except (KeyError, ValueError):
        return -1


def round_delay(interval: float, failures: int, max_backoff: float) -> float:
    """How long after a round finished the next one starts: `interval`, doubled for each failed
    round in a row beyond the first (a bad file stays bad until someone removes it), capped at
    `max_backoff` (or `interval`, when that is longer)."""
    interval = max(interval, MIN_FOLLOW_SECONDS)
    if failures <= 1:
        return interval
    return max(interval, min(interval * 2 ** (failures - 1), max_backoff))


@dataclass(frozen=True)
class FollowPlan:
    """Where the rounds over one input of a followed SampleSet stand, and whether the next is due."""

    current: Obj | None
    """The newest round's Job (None: no round yet)."""
    last: Obj | None
    """The newest finished round's Job: the current one once it finished, else the one before."""
    next_round: int
    """The round a new Job would run."""
    start: bool
    """Start round `next_round` now."""
    due_at: datetime | None
    """When round `next_round` is due, once the current round has finished (None otherwise)."""
    failures: int
    """Failed rounds in a row, counted back from the newest finished one."""

    def wait(self, now: datetime) -> float | None:
        """Seconds until the next round is due; None when none is waited for (one runs or starts now)."""
        if self.start or self.due_at is None:
            return None
        return max(0.0, (self.due_at - now).total_seconds())


def follow_plan(rounds: Sequence[Obj], interval: float, now: datetime, max_backoff: float) -> FollowPlan:
    """Decide from the Jobs of the current run key (what the cluster shows, nothing remembered)
    whether the next round starts now.

    A round starts `round_delay` after the newest one finished; never while one runs. The
    round number is one more than the newest Job's, so the same decision made twice (a
    repeated reconcile, a restarted operator) names the same Job.
    """
    ordered = sorted(rounds, key=round_of)
    if not ordered:
        return FollowPlan(None, None, 0, True, None, 0)
    current = ordered[-1]
    finished = [j for j in ordered if jobs_.job_state(j).finished]
    last = finished[-1] if finished else None
    failures = 0
    for job in reversed(finished):
        if not jobs_.job_state(job).failed:
            break
        failures += 1
    next_round = max(round_of(current), 0) + 1
    state = jobs_.job_state(current)
    if not state.finished:
        return FollowPlan(current, last, next_round, False, None, failures)
    ended = parse_time(state.finished_at)
    due = (ended or now) + timedelta(seconds=round_delay(interval, failures, max_backoff))
    return FollowPlan(current, last, next_round, now >= due, due, failures)


def _reconcile_rounds(
    ctx: Context, obj: Obj, upstream_version: str | None, fields: Obj, full: bool
) -> tuple[Verdict, Obj]:
    """A followed SampleSet: the rounds over the current input, one Job each."""
    _kind, namespace, name = meta(obj)
    every = follow_interval(obj)
    key = step_key(obj, upstream_version)
    existing = ctx.children("Job", obj)
    rounds = [j for j in existing if (j["metadata"].get("labels") or {}).get(names.RUN_LABEL) == key]
    now = ctx.clock()
    plan = follow_plan(rounds, duration_seconds(every), now, ctx.config.max_backoff_seconds)
    # The round that runs and the last finished one (what status shows) stay, with a few older ones.
    cleanup_superseded(ctx, [j for j in existing if j is not plan.current and j is not plan.last], namespace)

    running: tuple[str, jobs_.JobState] | None = None
    if plan.start:
        run = build_step(obj, ctx.config, upstream_version, plan.next_round)
        create_job(ctx, run.job, run.configmap)
        running = (run.name, jobs_.job_state(run.job))
    elif plan.current is not None and plan.current is not plan.last:
        job_name = plan.current["metadata"]["name"]
        running = (job_name, jobs_.job_state(plan.current))
        if full and round_of(plan.current) >= 0:  # a crash between creating the Job and its ConfigMap heals here
            configmap = build_step(obj, ctx.config, upstream_version, round_of(plan.current)).configmap
            ctx.kube.apply(owned_by(configmap, plan.current))

    if plan.last is None:  # no round over this input has finished yet
        assert running is not None
        if plan.start:
            return _created(running[0], None, None), fields
        return _running(ctx, obj, running[0], running[1]), fields

    last_name = plan.last["metadata"]["name"]
    last = jobs_.job_state(plan.last)
    wait = plan.wait(now)
    requeue = None if wait is None else max(1.0, wait)
    has_version = bool(fields.get("version"))
    then = f"trying again with Job {running[0]}" if running else f"the next round starts at {now_rfc3339(plan.due_at)}"
    if last.failed:
        why = jobs_.failure_message(ctx.pods(obj, job=last_name), last.message)
        return Verdict(
            phase="Failed",
            reason="StepFailed",
            message=f"Job {last_name} failed: {why}; {then}. Fix or remove the files it could not read, or the spec",
            ready=has_version,
            failed=True,
            warning=True,
            requeue_after=requeue,
        ), fields
    manifest = ctx.artifacts.latest(namespace, "SampleSet", name)
    if manifest is None:
        missing = _output_missing(ctx, obj, last_name)
        return Verdict(
            phase="Failed",
            reason=missing.reason,
            message=f"{missing.message}; {then}",
            failed=True,
            warning=True,
            requeue_after=requeue,
        ), fields
    before = fields.get("version")
    fields = _version_fields(ctx, obj, manifest)
    uri = ((obj.get("spec") or {}).get("source") or {}).get("uri")
    where = f" under {uri}" if uri else ""
    # Derived from the status it replaces: posted once, after the write that shows the version.
    notices = (
        (Notice("Normal", "VersionStored", f"version {manifest.version} stored from new files{where}"),)
        if before and before != manifest.version
        else ()
    )
    if running is not None and not plan.start:
        stuck = jobs_.stuck_containers(ctx.pods(obj, job=running[0])) if running[1].ready < 1 else None
        if stuck:
            message = f"{stuck[1]} (the last version {manifest.version} stays)"
            return Verdict(
                phase="Ready", reason=stuck[0], message=message, ready=True, warning=True, notices=notices
            ), fields
    return Verdict(
        phase="Ready",
        reason="Following",
        # The same words between rounds and while one runs: an idle round writes no status, posts no Event.
        message=f"version {manifest.version} at {manifest.uri}; looking for new files{where} every {every}",
        ready=True,
        requeue_after=requeue,
        notices=notices,
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
