"""Quality-gated promotion of model versions: which version may serve, and why.

`decide` is the rule (a pure function). The verdicts are kept in the store next to the
TrainJob's versions, because a version's manifest is immutable and is written before its
verdict is known:

* `<ns>/trainjob/<name>/promoted.json` — the pointer serving, the operator and the local
  runner follow: `{"version", "updatedAt"}`; written only when a version is promoted.
* `<ns>/trainjob/<name>/promotions.json` — every verdict, oldest first: version, promoted,
  reason, the AUCs compared and the hold-out they were measured on.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from recplane.api.trainjob import PromotionRule
from recplane.store import NotFoundError, Store
from recplane.store.base import PROMOTED_FILE, PROMOTIONS_FILE

KIND = "trainjob"
POINTER_FILE = PROMOTED_FILE
HISTORY_FILE = PROMOTIONS_FILE


@dataclass(frozen=True)
class Decision:
    promoted: bool
    reason: str


def decide(auc: float | None, incumbent_auc: float | None, rule: PromotionRule) -> Decision:
    """Promote when the new version passes every threshold `rule` sets.

    `auc`: the new version's AUC on the fresh hold-out; `incumbent_auc`: the promoted (serving)
    version's AUC on the same hold-out, None when nothing is promoted yet.
    """
    if auc is None:
        return Decision(False, "no AUC on the hold-out (empty validation split or a single class); nothing to judge")
    if rule.min_auc is not None and auc < rule.min_auc:
        return Decision(False, f"AUC {auc:.4f} is below promoteIf.minAuc {rule.min_auc}")
    if rule.max_auc_drop is not None and incumbent_auc is not None and auc < incumbent_auc - rule.max_auc_drop:
        return Decision(
            False,
            f"AUC {auc:.4f} is more than promoteIf.maxAucDrop {rule.max_auc_drop} below the promoted "
            f"version's {incumbent_auc:.4f} on the same hold-out",
        )
    if incumbent_auc is None:
        return Decision(True, f"AUC {auc:.4f} passes promoteIf; first promoted version")
    return Decision(
        True, f"AUC {auc:.4f} passes promoteIf (promoted version: {incumbent_auc:.4f} on the same hold-out)"
    )


@dataclass(frozen=True)
class Verdict:
    """One entry of the promotion history."""

    version: str
    promoted: bool
    reason: str
    auc: float | None
    incumbent: str | None
    incumbent_auc: float | None
    sample_set_version: str | None
    decided_at: str

    def to_wire(self) -> dict[str, Any]:
        d = asdict(self)
        return {
            "version": d["version"],
            "promoted": d["promoted"],
            "reason": d["reason"],
            "auc": d["auc"],
            "incumbent": d["incumbent"],
            "incumbentAuc": d["incumbent_auc"],
            "sampleSetVersion": d["sample_set_version"],
            "decidedAt": d["decided_at"],
        }

    @classmethod
    def from_wire(cls, d: dict[str, Any]) -> Verdict:
        return cls(
            version=d["version"],
            promoted=bool(d["promoted"]),
            reason=d.get("reason", ""),
            auc=d.get("auc"),
            incumbent=d.get("incumbent"),
            incumbent_auc=d.get("incumbentAuc"),
            sample_set_version=d.get("sampleSetVersion"),
            decided_at=d.get("decidedAt", ""),
        )


def _key(namespace: str, name: str, file: str) -> str:
    return Store.prefix(namespace, KIND, name) + file


def _read_json(store: Store, key: str) -> Any:
    try:
        return json.loads(store.get_bytes(key))
    except NotFoundError:
        return None


def promoted_version(store: Store, namespace: str, name: str) -> str | None:
    """The version the TrainJob's promotion pointer names, or None when none was promoted."""
    doc = _read_json(store, _key(namespace, name, POINTER_FILE))
    return str(doc["version"]) if isinstance(doc, dict) and doc.get("version") else None


def history(store: Store, namespace: str, name: str) -> list[Verdict]:
    """Every verdict of the TrainJob, oldest first."""
    doc = _read_json(store, _key(namespace, name, HISTORY_FILE))
    return [Verdict.from_wire(d) for d in doc] if isinstance(doc, list) else []


def record(store: Store, namespace: str, name: str, verdict: Verdict) -> None:
    """Append `verdict` to the history and, when promoted, move the pointer (history first, so a
    crash in between leaves a verdict without a move, never a move without a verdict)."""
    entries = [v for v in history(store, namespace, name) if v.version != verdict.version] + [verdict]
    store.put_bytes(_key(namespace, name, HISTORY_FILE), json.dumps([v.to_wire() for v in entries], indent=1).encode())
    if verdict.promoted:
        doc = {"version": verdict.version, "updatedAt": verdict.decided_at}
        store.put_bytes(_key(namespace, name, POINTER_FILE), json.dumps(doc).encode())


def now() -> str:
    return datetime.now(UTC).isoformat()
