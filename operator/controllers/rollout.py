"""Which model versions a ModelDeployment serves next, and the history it keeps: pure functions.

**Canary first.** A deployment that follows its TrainJob (`model.follow: latest|promoted`)
and sets `canary.weight` without `canary.version` does not replace its stable version at
once when a new one is chosen: the new version is rolled out as the canary at that weight,
and once it has served, rolled out and ready, for `canary.analysis` without a break, it
becomes the stable version and the canary goes. The very first version has nothing to be
compared with and becomes the stable version directly.

While the canary serves it keeps its turn: a version chosen meanwhile waits, and the newest
one waiting is the next canary (with a new version every minute, the stable version still
moves on every analysis period). A canary that is not serving (still rolling out, or no
longer ready) gives its place to a newer chosen version at once.

The rollout's state is the status itself (`currentVersion`/`currentUri`: the stable version;
`canaryVersion`/`canaryUri`/`canaryStartedAt`: the canary and since when it serves), so it
survives operator restarts, and a repeated reconcile decides the same.

**History.** `status.history` lists, oldest first, each version the deployment served and
when it became the stable one (`startedAt`), canaries (`canaryStartedAt`), and, following
promoted versions, the ones the TrainJob rejected (`promoted: false`, never served), each
with the reason. It keeps MAX_HISTORY entries, dropping first the oldest of those that never
became the stable version.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from recplane.operator.builders.serving import ModelRef
from recplane.operator.status import Notice, now_rfc3339

Obj = dict[str, Any]

MAX_HISTORY = 20
DEFAULT_ANALYSIS = "10m"
FOLLOWING = ("latest", "promoted")
_DURATION_PART = re.compile(r"([0-9]+)([smh])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600}


def duration_seconds(text: str) -> float:
    """`90s`, `10m`, `1h30m` (the CRDs' duration pattern) in seconds."""
    parts = _DURATION_PART.findall(text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise ValueError(f"{text!r} is not a duration like 90s, 10m or 1h30m")
    return float(sum(int(n) * _UNIT_SECONDS[u] for n, u in parts))


def parse_time(stamp: Any) -> datetime | None:
    if not stamp:
        return None
    try:
        return datetime.fromisoformat(str(stamp).replace("Z", "+00:00"))
    except ValueError:
        return None


@dataclass(frozen=True)
class CanaryPolicy:
    """Canary first: each newly chosen version serves `weight` percent as canary for `analysis`."""

    weight: int
    analysis: str
    seconds: float


def canary_policy(spec: Mapping[str, Any], why: str) -> CanaryPolicy | None:
    """The canary-first policy of a deployment whose version was chosen for reason `why` (None: none).

    Only a deployment that follows its TrainJob has one; a pinned one (refused by the schema,
    ignored here) and one with a fixed `canary.version` do not.
    """
    canary = spec.get("canary") or {}
    weight = int(canary.get("weight") or 0)
    if why not in FOLLOWING or weight <= 0 or canary.get("version"):
        return None
    analysis = str(canary.get("analysis") or DEFAULT_ANALYSIS)
    try:
        seconds = duration_seconds(analysis)
    except ValueError:  # the schema refuses it; an old object may still carry it
        analysis, seconds = DEFAULT_ANALYSIS, duration_seconds(DEFAULT_ANALYSIS)
    return CanaryPolicy(weight, analysis, seconds)


@dataclass(frozen=True)
class Rollout:
    stable: ModelRef
    canary: ModelRef | None = None
    canary_started_at: datetime | None = None
    """Since when the canary has served, rolled out and ready: its analysis runs from then."""

    def analysis_due(self, policy: CanaryPolicy) -> datetime | None:
        """When the canary becomes the stable version (if it still serves then)."""
        if self.canary is None or self.canary_started_at is None:
            return None
        return self.canary_started_at + timedelta(seconds=policy.seconds)


def plan_rollout(
    chosen: ModelRef,
    previous: Mapping[str, Any],
    policy: CanaryPolicy | None,
    canary_serving: bool,
    now: datetime,
) -> Rollout:
    """Stable and canary versions for a deployment whose spec now chooses `chosen`.

    `previous` is the status so far; `canary_serving` tells that the live canary Deployment
    runs the previous status' canaryVersion, rolled out and ready. Without a policy, or with
    nothing served yet, `chosen` is the stable version at once.
    """
    current, uri = previous.get("currentVersion"), previous.get("currentUri")
    if policy is None or not current or not uri or current == chosen.version:
        return Rollout(chosen)
    stable = ModelRef(str(current), str(uri))
    before, before_uri = previous.get("canaryVersion"), previous.get("canaryUri")
    started = parse_time(previous.get("canaryStartedAt")) if before else None
    # The canary keeps its turn while it serves: the chosen one, or one already under analysis.
    if not (canary_serving and before_uri and (before == chosen.version or started is not None)):
        return Rollout(stable, chosen)
    canary = ModelRef(str(before), str(before_uri))
    started = started or now
    if (now - started).total_seconds() >= policy.seconds:
        return Rollout(canary)  # the analysis passed: the canary becomes the stable version
    return Rollout(stable, canary, started)


# ------------------------------------------------------------------------------------------- history
def choice_reason(why: str, entry: Mapping[str, Any] | None) -> str:
    """Why the spec chose a version: pinned, uri, latest, or promoted with the TrainJob's reason."""
    entry = entry or {}
    reason = entry.get("reason")
    if why == "promoted":
        auc = (entry.get("metrics") or {}).get("auc")
        return "promoted: " + (reason or (f"AUC {auc} passes promoteIf" if auc is not None else "passes promoteIf"))
    if why == "latest" and entry.get("promoted") is False:
        return f"latest (not promoted: {reason or 'it did not pass promoteIf'})"
    return why


def rejected_since(
    history: Sequence[Mapping[str, Any]], versions: Sequence[Mapping[str, Any]], chosen: str
) -> tuple[list[Obj], list[Obj]]:
    """History entries for the TrainJob versions (`versions`, oldest first) it rejected since the
    newest version the history already names: (those older than `chosen`, those newer).

    With nothing named yet (a new deployment), only rejections after `chosen` count: they are
    why a newer version is not served.
    """
    ids = [str(v.get("version")) for v in versions]
    named = {e.get("version") for e in history}
    at = ids.index(chosen) if chosen in ids else len(ids)
    seen = [i for i, v in enumerate(ids) if v in named]
    start = max(seen) + 1 if seen else min(at + 1, len(ids))
    before: list[Obj] = []
    after: list[Obj] = []
    for i in range(start, len(ids)):
        v = versions[i]
        if v.get("promoted") is False:
            why = v.get("reason") or "it did not pass promoteIf"
            (before if i < at else after).append({"version": ids[i], "promoted": False, "reason": f"rejected: {why}"})
    return before, after


def _pending(history: Sequence[Obj], version: str | None) -> Obj | None:
    """The entry of a canary `version` that has not become the stable version (yet)."""
    for entry in reversed(history):
        if entry.get("version") == version and not entry.get("startedAt") and entry.get("promoted") is not False:
            return entry
    return None


def next_history(
    previous: Mapping[str, Any],
    rollout: Rollout,
    reason: str,
    promoted: bool | None,
    rejected: tuple[list[Obj], list[Obj]],
    policy: CanaryPolicy | None,
    now: datetime,
) -> list[Obj]:
    """`previous`'s history with what this rollout changes.

    `reason` (see `choice_reason`) and `promoted` describe the version the spec chooses now,
    which is the one a new entry is for; `rejected` comes from `rejected_since`.
    """
    history = [dict(e) for e in previous.get("history") or []]
    served = next((e for e in reversed(history) if e.get("startedAt")), None)
    before_canary = previous.get("canaryVersion")
    canary = rollout.canary.version if rollout.canary is not None else None
    stable = rollout.stable.version

    def add(version: str, **fields: Any) -> Obj:
        entry: Obj = {"version": version, **fields}
        if promoted is not None:
            entry["promoted"] = promoted
        history.append(entry)
        return entry

    history += rejected[0]
    if before_canary and before_canary not in (canary, stable):
        replaced = _pending(history, before_canary)
        if replaced is not None:
            replaced["reason"] = f"{replaced.get('reason')}; replaced by {canary or stable} before it became stable"
    pending = None
    if canary is not None and policy is not None:
        pending = _pending(history, canary) if before_canary == canary else None
        if pending is None:
            pending = add(canary, reason=f"{reason}; canary at {policy.weight}% for {policy.analysis} first")
        if rollout.canary_started_at is not None and not pending.get("canaryStartedAt"):
            pending["canaryStartedAt"] = now_rfc3339(rollout.canary_started_at)
    if served is None or served.get("version") != stable:
        served = _pending(history, stable) if before_canary == stable else None
        if served is not None:  # the canary's entry: it now is the stable version
            served["startedAt"] = now_rfc3339(now)
        else:
            served = add(stable, startedAt=now_rfc3339(now), reason=reason)
    history += rejected[1]
    return _bounded(history, keep=[served, pending])


def rollout_status(
    previous: Mapping[str, Any],
    rollout: Rollout,
    chosen: ModelRef,
    why: str,
    versions: Sequence[Mapping[str, Any]],
    policy: CanaryPolicy | None,
    now: datetime,
) -> Obj:
    """The status fields of `rollout` (stable and canary versions, since when the canary serves,
    the history) for a spec that chooses `chosen` for reason `why` among the TrainJob's `versions`."""
    entry = next((v for v in versions if v.get("version") == chosen.version), None)
    following_promoted = why == "promoted"
    history = next_history(
        previous,
        rollout,
        choice_reason(why, entry),
        bool(entry.get("promoted")) if following_promoted and entry is not None else None,
        rejected_since(previous.get("history") or [], versions, chosen.version) if following_promoted else ([], []),
        policy,
        now,
    )
    canary, started = rollout.canary, rollout.canary_started_at
    return {
        "currentVersion": rollout.stable.version,
        "currentUri": rollout.stable.uri,
        "canaryVersion": canary.version if canary else None,
        "canaryUri": canary.uri if canary else None,
        "canaryStartedAt": now_rfc3339(started) if canary and started else None,
        "history": history,
    }


def _bounded(history: list[Obj], keep: Sequence[Obj | None]) -> list[Obj]:
    """At most MAX_HISTORY entries: the oldest that never became the stable version go first, then
    the oldest others; the entries in `keep` (the stable and the canary version) stay."""
    excess = len(history) - MAX_HISTORY
    if excess <= 0:
        return history
    kept = {id(e) for e in keep if e is not None}
    candidates = [e for e in history if id(e) not in kept]
    order = [e for e in candidates if not e.get("startedAt")] + [e for e in candidates if e.get("startedAt")]
    dropped = {id(e) for e in order[:excess]}
    return [e for e in history if id(e) not in dropped]


# -------------------------------------------------------------------------------------------- events
def serving_notices(
    previous: Mapping[str, Any], new: Mapping[str, Any], weight: int, policy: CanaryPolicy | None
) -> tuple[Notice, ...]:
    """CanaryStarted when a canary version appears in the status, CanaryPromoted when the canary
    becomes the stable version: from the status replaced and the new status fields."""
    out = []
    before_stable, before_canary = previous.get("currentVersion"), previous.get("canaryVersion")
    stable, canary = new.get("currentVersion"), new.get("canaryVersion")
    if canary and canary != before_canary:
        message = f"rolling out model version {canary} as canary at {weight}% next to {stable}"
        if policy is not None:
            message += f"; it becomes the stable version once it has served, ready, for {policy.analysis}"
        out.append(Notice("Normal", "CanaryStarted", message))
    if before_canary and stable == before_canary and before_stable != stable:
        since = previous.get("canaryStartedAt")
        message = f"model version {stable} replaces {before_stable} as the stable version"
        message += f" (canary since {since}); the canary is removed" if since else "; the canary is removed"
        out.append(Notice("Normal", "CanaryPromoted", message))
    return tuple(out)


__all__ = [
    "MAX_HISTORY",
    "CanaryPolicy",
    "Rollout",
    "canary_policy",
    "choice_reason",
    "duration_seconds",
    "next_history",
    "plan_rollout",
    "rejected_since",
    "rollout_status",
    "serving_notices",
]
