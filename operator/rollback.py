"""`recplane rollback`: serve the previous model version again, declaratively.

The rollback is a change of the ModelDeployment's spec (the version is pinned),
so it survives operator restarts and shows up in GitOps diffs; the annotation
only labels the resulting history entry as a rollback.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from recplane.operator.names import ROLLBACK_ANNOTATION

Obj = dict[str, Any]


class RollbackError(ValueError):
    """The rollback cannot be done; the message says why and what to do."""


def previous_version(md: Mapping[str, Any]) -> str:
    """The most recent version in status.history that differs from the one served now."""
    status = md.get("status") or {}
    current = status.get("currentVersion")
    for entry in reversed(status.get("history") or []):
        if entry.get("version") and entry["version"] != current:
            return str(entry["version"])
    name = (md.get("metadata") or {}).get("name")
    raise RollbackError(
        f"ModelDeployment {name!r} has served no other version than {current!r} (status.history): "
        "nothing to roll back to; name a version with --to"
    )


def rollback_patch(md: Mapping[str, Any], to: str | None = None) -> Obj:
    """A merge patch that pins `to` (default: the previous version) as the served model version."""
    target = to or previous_version(md)
    model = (md.get("spec") or {}).get("model") or {}
    patch: Obj = {"metadata": {"annotations": {ROLLBACK_ANNOTATION: target}}}
    if model.get("trainJobRef"):
        ref = dict(model["trainJobRef"])
        ref["version"] = target
        patch["spec"] = {"model": {"trainJobRef": ref, "follow": "pinned"}}
    elif model.get("uri"):
        base = str(model["uri"]).rstrip("/").rsplit("/", 1)[0]
        patch["spec"] = {"model": {"uri": f"{base}/{target}/"}}
    else:
        raise RollbackError("spec.model names neither trainJobRef nor uri")
    canary = (md.get("spec") or {}).get("canary") or {}
    if canary.get("version") == target:
        # Serving the canary's version as stable: the canary is retired.
        patch["spec"]["canary"] = {"version": None, "weight": 0}
    return patch
