"""Reading batch Jobs and their pods: state, failure reasons, stuck containers."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

Obj = dict[str, Any]

# Waiting reasons that mean a container will not start without a change by the user.
STUCK_REASONS = {
    "ErrImagePull": "ImagePullBackOff",
    "ImagePullBackOff": "ImagePullBackOff",
    "InvalidImageName": "InvalidImageName",
    "CreateContainerConfigError": "CreateContainerConfigError",
    "CreateContainerError": "CreateContainerError",
}
JOB_NAME_LABELS = ("batch.kubernetes.io/job-name", "job-name")


@dataclass(frozen=True)
class JobState:
    finished: bool
    succeeded: bool
    failed: bool
    active: int
    ready: int
    failed_at: str | None
    finished_at: str | None
    """When the Job completed or failed (RFC 3339), None while it runs."""
    message: str


def job_state(job: Mapping[str, Any]) -> JobState:
    status = job.get("status") or {}
    conds = {c.get("type"): c for c in status.get("conditions") or [] if c.get("status") == "True"}
    # FailureTarget/SuccessCriteriaMet are set before the Job's pods have terminated; the outcome is final then.
    failed_cond = conds.get("Failed") or conds.get("FailureTarget")
    ok_cond = conds.get("Complete") or conds.get("SuccessCriteriaMet")
    return JobState(
        finished=bool(failed_cond or ok_cond),
        succeeded=bool(ok_cond) and not failed_cond,
        failed=bool(failed_cond),
        active=int(status.get("active") or 0),
        ready=int(status.get("ready") or 0),
        failed_at=(failed_cond or {}).get("lastTransitionTime"),
        finished_at=(failed_cond or {}).get("lastTransitionTime")
        or status.get("completionTime")
        or (ok_cond or {}).get("lastTransitionTime"),
        message=" ".join(p for p in ((failed_cond or {}).get("reason"), (failed_cond or {}).get("message")) if p),
    )


def pods_of_job(pods: Iterable[Obj], job_name: str) -> list[Obj]:
    out = []
    for pod in pods:
        labels = (pod.get("metadata") or {}).get("labels") or {}
        if any(labels.get(key) == job_name for key in JOB_NAME_LABELS):
            out.append(pod)
    return out


def failure_message(pods: Sequence[Mapping[str, Any]], fallback: str) -> str:
    """Why the failed pods stopped: exit code and termination message (the last log lines)."""
    parts = []
    for pod in sorted(pods, key=lambda p: (p.get("metadata") or {}).get("name", "")):
        status = pod.get("status") or {}
        if status.get("phase") != "Failed":
            continue
        name = (pod.get("metadata") or {}).get("name")
        for cs in status.get("containerStatuses") or []:
            term = (cs.get("state") or {}).get("terminated") or {}
            if term and term.get("exitCode", 0) != 0:
                text = (term.get("message") or "").strip()
                head = f"pod {name} exited with code {term.get('exitCode')} ({term.get('reason') or 'Error'})"
                parts.append(f"{head}: {text}" if text else head)
        if not parts and status.get("message"):
            parts.append(f"pod {name}: {status.get('reason') or 'Failed'}: {status['message']}")
        if parts:
            break  # the first failed pod says why; the others usually failed because of it
    return parts[0] if parts else (fallback or "the Job failed without a termination message")


def stuck_containers(pods: Iterable[Mapping[str, Any]]) -> tuple[str, str] | None:
    """(reason, message) for the first container that cannot start, e.g. an image that cannot be pulled."""
    for pod in pods:
        status = pod.get("status") or {}
        name = (pod.get("metadata") or {}).get("name")
        for cs in [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]:
            waiting = (cs.get("state") or {}).get("waiting") or {}
            reason = STUCK_REASONS.get(waiting.get("reason") or "")
            if reason is None:
                continue
            image = cs.get("image") or "?"
            detail = (waiting.get("message") or waiting.get("reason") or "").strip()
            if reason in ("ImagePullBackOff", "InvalidImageName"):
                hint = "check spec.image (name and tag) and that the namespace can pull from its registry"
                return reason, f"pod {name} cannot pull image {image!r}: {detail}; {hint}"
            if reason == "CreateContainerConfigError":
                hint = "check that the store Secret and its keys exist in this namespace"
                return reason, f"pod {name} cannot start container {cs.get('name')!r}: {detail}; {hint}"
            return reason, f"pod {name} cannot start container {cs.get('name')!r}: {detail}"
    return None


def newest_first(jobs: Iterable[Obj]) -> list[Obj]:
    return sorted(jobs, key=lambda j: (j.get("metadata") or {}).get("creationTimestamp") or "", reverse=True)
