"""What the steps left in the artifact store, as status fields.

Manifests are immutable (a version is never overwritten), so each one is read
from the store once and then served from memory; only the `latest` pointer and
the list of versions are read again on each reconcile.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from recplane.api import KINDS
from recplane.store import Manifest, NotFoundError, Store, StoreError, open_store
from recplane.store.base import LATEST_FILE, PROMOTIONS_FILE

Obj = dict[str, Any]

# Status fields the operator owns; a manifest never overrides them.
OPERATOR_FIELDS = frozenset({"phase", "conditions", "observedGeneration", "workersReady", "restarts", "kopf"})
MAX_VERSIONS_IN_STATUS = 20


@dataclass(frozen=True)
class StoreRef:
    """A store URI that points inside this store: <namespace>/<kind>/<name>[/<version>]."""

    namespace: str
    kind: str
    name: str
    version: str | None = None


class Artifacts:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._manifests: dict[tuple[str, str, str, str], Manifest] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_env(cls, uri: str | None = None) -> Artifacts:
        return cls(open_store(uri))

    @property
    def uri(self) -> str:
        return self.store.uri

    def manifest(self, namespace: str, kind: str, name: str, version: str) -> Manifest | None:
        key = (namespace, kind.lower(), name, version)
        with self._lock:
            hit = self._manifests.get(key)
        if hit is not None:
            return hit
        found = self.store.manifest(namespace, kind.lower(), name, version)
        if found is not None:
            with self._lock:
                self._manifests[key] = found
        return found

    def versions(self, namespace: str, kind: str, name: str) -> list[Manifest]:
        """Complete versions, oldest first."""
        out = []
        for version in self.store.list_children(self.store.prefix(namespace, kind, name)):
            if version.startswith("."):
                continue
            m = self.manifest(namespace, kind, name, version)
            if m is not None:
                out.append(m)
        return sorted(out, key=lambda m: (m.created_at, m.version))

    def latest(self, namespace: str, kind: str, name: str) -> Manifest | None:
        """The version `latest` points at, else the newest complete one, else None."""
        try:
            raw = self.store.get_bytes(self.store.prefix(namespace, kind, name) + LATEST_FILE)
            pointed = json.loads(raw)["version"]
        except (NotFoundError, ValueError, KeyError, TypeError):
            pointed = None
        if pointed:
            m = self.manifest(namespace, kind, name, pointed)
            if m is not None:
                return m
        found = self.versions(namespace, kind, name)
        return found[-1] if found else None

    def verdicts(self, namespace: str, name: str) -> dict[str, Obj]:
        """A continuous TrainJob's promotion verdicts by version (what its workers decided and recorded)."""
        try:
            doc = json.loads(self.store.get_bytes(self.store.prefix(namespace, "trainjob", name) + PROMOTIONS_FILE))
        except (NotFoundError, ValueError):
            return {}
        if not isinstance(doc, list):
            return {}
        return {str(v["version"]): v for v in doc if isinstance(v, dict) and v.get("version")}

    def delete_all(self, namespace: str, kind: str, name: str) -> int:
        deleted = self.store.delete_all(namespace, kind.lower(), name)
        with self._lock:
            for key in [k for k in self._manifests if k[:3] == (namespace, kind.lower(), name)]:
                del self._manifests[key]
        return deleted

    def parse_uri(self, uri: str) -> StoreRef | None:
        """The resource a URI inside this store points at (None for URIs elsewhere)."""
        root = self.store.uri.rstrip("/") + "/"
        if not uri.startswith(root):
            return None
        parts = [p for p in uri[len(root) :].split("/") if p]
        if len(parts) < 3:
            return None
        kind = {k.singular: k.kind for k in KINDS.values()}.get(parts[1])
        if kind is None:
            return None
        return StoreRef(parts[0], kind, parts[2], parts[3] if len(parts) > 3 else None)


def status_fields(kind: str, manifest: Manifest) -> Obj:
    """The manifest's `status` restricted to the kind's status fields (camelCase), plus version and URI."""
    model = KINDS[kind].status
    allowed = {f.alias or name for name, f in model.model_fields.items()} - OPERATOR_FIELDS
    out = {k: v for k, v in (manifest.status or {}).items() if k in allowed}
    out["version"] = manifest.version
    if kind == "SampleSet":
        out.setdefault("artifactUri", manifest.uri)
        if manifest.schema_ and "schema" not in out:
            out["schema"] = manifest.schema_
    if kind == "FeatureSet":
        out.setdefault("specUri", manifest.uri)
    return out


def version_ids(manifests: Sequence[Manifest]) -> list[str]:
    return [m.version for m in manifests][-MAX_VERSIONS_IN_STATUS:]


def model_versions(
    manifests: Sequence[Manifest], rule: Mapping[str, Any] | None, verdicts: Mapping[str, Obj] | None = None
) -> list[Obj]:
    """TrainJob status.versions: each stored model version with its metrics and promotion verdict.

    A continuous TrainJob's workers judge each version against the promoted one on the same
    fresh hold-out and record the verdict (`verdicts`): that verdict stands. A version the
    trainer marked `promoted` keeps that verdict too; otherwise the TrainJob's promoteIf rule
    decides (minAuc, maxAucDrop against the last promoted version).
    """
    verdicts = verdicts or {}
    rule = rule or {}
    out: list[Obj] = []
    last_promoted_auc: float | None = None
    for m in manifests:
        st = m.status or {}
        metrics = dict(st.get("metrics") or {k: st[k] for k in ("auc", "logloss", "samplesPerSecond") if k in st})
        entry: Obj = {"version": m.version, "uri": m.uri, "createdAt": m.created_at.isoformat(), "metrics": metrics}
        if m.version in verdicts:
            promoted, why = bool(verdicts[m.version].get("promoted")), verdicts[m.version].get("reason")
        elif "promoted" in st:
            promoted, why = bool(st["promoted"]), st.get("reason")
        else:
            promoted, why = promotion(metrics.get("auc"), last_promoted_auc, rule)
        entry["promoted"] = promoted
        if why:
            entry["reason"] = why
        if promoted and metrics.get("auc") is not None:
            last_promoted_auc = float(metrics["auc"])
        out.append(entry)
    return out[-MAX_VERSIONS_IN_STATUS:]


def promotion(auc: float | None, current_auc: float | None, rule: Mapping[str, Any]) -> tuple[bool, str | None]:
    min_auc, max_drop = rule.get("minAuc"), rule.get("maxAucDrop")
    if min_auc is not None and (auc is None or auc < min_auc):
        return False, f"AUC {auc} is below promoteIf.minAuc {min_auc}"
    if max_drop is not None and current_auc is not None and (auc is None or auc < current_auc - max_drop):
        return False, f"AUC {auc} drops more than promoteIf.maxAucDrop {max_drop} below the promoted {current_auc}"
    return True, None


def trainjob_fields(
    manifests: Sequence[Manifest], rule: Mapping[str, Any] | None, verdicts: Mapping[str, Obj] | None = None
) -> Obj:
    if verdicts is not None:
        # The newest versions of a continuous TrainJob whose verdict is not recorded yet (their
        # workers are scoring the hold-out) are left out until it is, so that nothing announces or
        # serves them on the rule's guess first.
        manifests = list(manifests)
        while manifests and manifests[-1].version not in verdicts:
            manifests.pop()
    versions = model_versions(manifests, rule, verdicts)
    if not versions:
        return {}
    latest = manifests[-1]
    promoted = [v for v in versions if v.get("promoted")]
    out: Obj = {
        "versions": versions,
        "latestVersion": versions[-1]["version"],
        "metrics": versions[-1]["metrics"] or None,
        "promotedVersion": promoted[-1]["version"] if promoted else None,
    }
    st = latest.status or {}
    if "step" in st:
        out["step"] = st["step"]
    if "featureSetVersion" in st:
        out["featureSetVersion"] = st["featureSetVersion"]
    return out


__all__ = [
    "Artifacts",
    "StoreError",
    "StoreRef",
    "model_versions",
    "promotion",
    "status_fields",
    "trainjob_fields",
    "version_ids",
]
