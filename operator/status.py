"""Status as the user reads it: phase, conditions shaped like metav1.Condition,
observedGeneration, and one Kubernetes Event per transition.

Pure functions: a controller decides a `Verdict` from what it observed, these
turn it into conditions (keeping lastTransitionTime when nothing changed, so a
repeated reconcile writes nothing) and tell whether an Event is due.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

Obj = dict[str, Any]

CONDITION_TYPES = ("Ready", "Progressing", "Failed")
MAX_MESSAGE = 2000


@dataclass(frozen=True)
class Notice:
    """An Event that announces a change the status records beyond phase and readiness (a new model
    version, a canary step). Controllers derive notices from the previous status and the new one,
    so each is posted once: after the status write that records the change."""

    type: str
    """Normal or Warning."""
    reason: str
    message: str


@dataclass(frozen=True)
class Verdict:
    """Where a resource stands, in one line a user can act on.

    `reason` is CamelCase (machine-readable), `message` is for people and names
    the field or object to fix. `requeue_after` asks for another reconcile even if
    nothing is observed to change (waiting, back-off); `permanent` marks spec errors
    that only an edit of the resource itself can fix.
    """

    phase: str
    reason: str
    message: str = ""
    ready: bool = False
    progressing: bool = False
    failed: bool = False
    warning: bool = False
    requeue_after: float | None = None
    permanent: bool = False
    notices: tuple[Notice, ...] = ()

    @property
    def waiting(self) -> bool:
        return self.requeue_after is not None


def now_rfc3339(now: datetime | None = None) -> str:
    return (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")


def _clip(message: str) -> str:
    message = message.strip()
    return message if len(message) <= MAX_MESSAGE else message[: MAX_MESSAGE - 3] + "..."


def conditions(
    verdict: Verdict, previous: Sequence[Mapping[str, Any]], generation: int | None, now: str | None = None
) -> list[Obj]:
    """Ready, Progressing and Failed for `verdict`; lastTransitionTime moves only when a status flips."""
    stamp = now or now_rfc3339()
    old = {c.get("type"): c for c in previous}
    wanted = {"Ready": verdict.ready, "Progressing": verdict.progressing, "Failed": verdict.failed}
    out = []
    for ctype in CONDITION_TYPES:
        status = "True" if wanted[ctype] else "False"
        before = old.get(ctype) or {}
        cond: Obj = {
            "type": ctype,
            "status": status,
            "reason": verdict.reason,
            # The message explains the condition that holds; a False condition repeats it
            # only for Ready, which users read first.
            "message": _clip(verdict.message) if wanted[ctype] or ctype == "Ready" else "",
            "lastTransitionTime": before.get("lastTransitionTime")
            if before.get("status") == status and before.get("lastTransitionTime")
            else stamp,
        }
        if generation is not None:
            cond["observedGeneration"] = generation
        out.append(cond)
    return out


def condition(status: Mapping[str, Any] | None, ctype: str) -> Mapping[str, Any] | None:
    for cond in (status or {}).get("conditions") or []:
        if cond.get("type") == ctype:
            return cond  # type: ignore[no-any-return]
    return None


def is_ready(status: Mapping[str, Any] | None) -> bool:
    cond = condition(status, "Ready")
    return bool(cond and cond.get("status") == "True")


def summary(status: Mapping[str, Any] | None) -> tuple[str | None, str | None, str | None]:
    """(phase, Ready status, Ready reason): what an Event marks the change of."""
    ready = condition(status, "Ready") or {}
    return ((status or {}).get("phase"), ready.get("status"), ready.get("reason"))


def build_status(
    verdict: Verdict,
    fields: Mapping[str, Any],
    previous: Mapping[str, Any] | None,
    generation: int | None,
    now: str | None = None,
) -> Obj:
    """The whole status: kind-specific `fields` plus phase, observedGeneration and conditions."""
    prev = previous or {}
    out: Obj = {k: v for k, v in fields.items() if v is not None}
    out["phase"] = verdict.phase
    if generation is not None:
        out["observedGeneration"] = generation
    out["conditions"] = conditions(verdict, prev.get("conditions") or [], generation, now)
    return out


def event_due(previous: Mapping[str, Any] | None, new: Mapping[str, Any]) -> bool:
    """An Event is posted when readiness or the reason changes, never for a repeat. A new phase under
    the same reason (a TrainJob's workers going from Pending to Running while it trains) is progress
    the status shows, not news: one Event fewer per resource for the API server to store."""
    return summary(previous)[1:] != summary(new)[1:]


def event_type(verdict: Verdict) -> str:
    return "Warning" if verdict.failed or verdict.warning else "Normal"
