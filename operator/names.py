"""Names, labels and annotations of the objects the operator creates.

Child names are deterministic (resource name + a content key), so a reconcile
that is repeated, or resumed after a crash, finds or re-creates the same object
instead of a duplicate. Names and label values are cut to Kubernetes' 63
characters with a hash suffix, so long resource names stay unique.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from typing import Any

from recplane.api import GROUP

MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGER = "recplane"
PART_OF = "app.kubernetes.io/part-of"
COMPONENT = "app.kubernetes.io/component"
RUN_LABEL = f"{GROUP}/run"
ATTEMPT_LABEL = f"{GROUP}/attempt"
ROUND_LABEL = f"{GROUP}/round"
TRACK_LABEL = f"{GROUP}/track"
ROLE_LABEL = f"{GROUP}/role"
MODEL_VERSION_LABEL = f"{GROUP}/model-version"
# Kind/name of the recplane resource an object (or a pod, two levels down) belongs to.
OWNER_ANNOTATION = f"{GROUP}/owner"
SPEC_FILE = "spec.yaml"
SPEC_DIR = "/etc/recplane"

DNS_LABEL_MAX = 63
# Indexed Job pods are named `<job>-<index>` in DNS; leave room for a 4-digit index.
JOB_NAME_MAX = 52


def short_hash(*parts: Any, length: int = 8) -> str:
    """A stable hex digest of JSON-able parts (dict keys sorted)."""
    blob = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:length]


def dns_name(*parts: str, max_len: int = DNS_LABEL_MAX) -> str:
    """`parts` joined by '-', cut to `max_len` with a hash of the full name so cut names stay unique."""
    full = "-".join(p for p in parts if p)
    if len(full) <= max_len:
        return full
    digest = short_hash(full, length=6)
    head = full[: max_len - len(digest) - 1].rstrip("-.")
    return f"{head}-{digest}"


def label_value(value: str) -> str:
    """A valid label value (<= 63 chars, alphanumeric at both ends) standing for `value`."""
    value = re.sub(r"[^A-Za-z0-9_.-]", "-", value)
    out = dns_name(value) if len(value) > DNS_LABEL_MAX else value
    return out.strip("-_.") or "x"


def kind_label(kind: str) -> str:
    """The label key naming a resource of `kind`, e.g. `recplane.io/trainjob`."""
    return f"{GROUP}/{kind.lower()}"


def owner_key(kind: str, name: str) -> str:
    return f"{kind}/{name}"


def parse_owner_key(value: str) -> tuple[str, str] | None:
    kind, sep, name = value.partition("/")
    return (kind, name) if sep and kind and name else None


def selector_labels(kind: str, name: str) -> dict[str, str]:
    """The labels that select every child of one resource (Service selectors, list calls)."""
    return {MANAGED_BY: MANAGER, kind_label(kind): label_value(name)}


def labels(kind: str, name: str, component: str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    out = {PART_OF: "recplane", COMPONENT: component, **selector_labels(kind, name)}
    if extra:
        out.update(extra)
    return out


def label_selector(match: Mapping[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(match.items()))
