"""Resources as the API server hands them to the operator: wire format, defaults applied, uid set."""

from __future__ import annotations

import copy
import uuid
from collections.abc import Callable
from typing import Any

import pytest

from recplane.api import API_VERSION, kind_of

Obj = dict[str, Any]
MakeResource = Callable[..., Obj]


def resource(kind: str, name: str, spec: Obj | None = None, namespace: str = "team-a", **meta: Any) -> Obj:
    """`spec` defaults to a small valid spec of the kind (see SPECS)."""
    k = kind_of(kind)
    spec = copy.deepcopy(SPECS[k.kind]) if spec is None else spec
    return {
        "apiVersion": API_VERSION,
        "kind": k.kind,
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": str(uuid.uuid4()),
            "generation": 1,
            "resourceVersion": "1",
            **meta,
        },
        # Defaults applied, as the CRD schema makes the API server do.
        "spec": k.spec.model_validate(spec).to_wire(),  # type: ignore[attr-defined]
    }


SAMPLESET = {"source": {"format": "synthetic", "synthetic": {"events": 5000, "seed": 3}}}
FEATURESET = {
    "sampleSetRef": {"name": "events"},
    "features": [
        {
            "name": "user_id",
            "group": "id",
            "type": "sparse",
            "columns": ["user_id"],
            "transform": {"type": "hash", "buckets": 1000},
        },
    ],
}
TRAINJOB = {
    "featureSetRef": {"name": "features"},
    "model": {"type": "deepfm"},
    "distributed": {"workers": 3, "procsPerWorker": 2},
}
MODELDEPLOYMENT = {"model": {"trainJobRef": {"name": "ranker"}, "follow": "latest"}}
SPECS = {"SampleSet": SAMPLESET, "FeatureSet": FEATURESET, "TrainJob": TRAINJOB, "ModelDeployment": MODELDEPLOYMENT}

# What the "restricted" Pod Security Standard demands of a pod spec
# (kubernetes.io/docs/concepts/security/pod-security-standards).
RESTRICTED_VOLUME_TYPES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}


def restricted_violations(pod: dict[str, Any]) -> list[str]:
    """Every way `pod` (a PodSpec) breaks the restricted profile; empty when it passes."""
    out = []
    psc = pod.get("securityContext") or {}
    for field in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(field):
            out.append(f"{field} is set")
    for vol in pod.get("volumes") or []:
        kinds = set(vol) - {"name"}
        if not kinds <= RESTRICTED_VOLUME_TYPES:
            out.append(f"volume {vol['name']} uses {kinds - RESTRICTED_VOLUME_TYPES}")
    for c in [*(pod.get("initContainers") or []), *(pod.get("containers") or [])]:
        sc = c.get("securityContext") or {}
        name = c["name"]
        if sc.get("privileged"):
            out.append(f"{name}: privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            out.append(f"{name}: allowPrivilegeEscalation must be false")
        if not (sc.get("runAsNonRoot") or psc.get("runAsNonRoot")):
            out.append(f"{name}: runAsNonRoot must be true")
        if sc.get("runAsUser", psc.get("runAsUser")) == 0:
            out.append(f"{name}: runs as uid 0")
        seccomp = (sc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            out.append(f"{name}: seccompProfile must be RuntimeDefault or Localhost")
        caps = sc.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            out.append(f"{name}: capabilities must drop ALL")
        if set(caps.get("add") or []) - {"NET_BIND_SERVICE"}:
            out.append(f"{name}: adds capabilities {caps['add']}")
        for port in c.get("ports") or []:
            if port.get("hostPort"):
                out.append(f"{name}: hostPort")
    return out


@pytest.fixture
def make() -> MakeResource:
    return resource


@pytest.fixture
def restricted() -> Callable[[Obj], list[str]]:
    return restricted_violations
