"""Parts every pod shares: the restricted security profile, store credentials,
writable scratch space, resources and scheduling, ownership."""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import Any

import kopf
import yaml

from recplane.operator import names
from recplane.operator.config import REQUIRED_STORE_KEYS, STORE_ENV_KEYS, OperatorConfig

Obj = dict[str, Any]

# Images run as this user (images/*.Dockerfile: USER 65532:65532); stating it lets the
# kubelet prove runAsNonRoot even for images whose USER is a name.
RUN_AS = 65532

POD_SECURITY_CONTEXT: Obj = {
    "runAsNonRoot": True,
    "runAsUser": RUN_AS,
    "runAsGroup": RUN_AS,
    "fsGroup": RUN_AS,
    "seccompProfile": {"type": "RuntimeDefault"},
}

CONTAINER_SECURITY_CONTEXT: Obj = {
    "runAsNonRoot": True,
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "privileged": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


def store_env(config: OperatorConfig) -> list[Obj]:
    """The store settings, every one from the store Secret: no credential is ever written into a pod spec."""
    return [
        {
            "name": key,
            "valueFrom": {
                "secretKeyRef": {
                    "name": config.store_secret,
                    "key": key,
                    **({} if key in REQUIRED_STORE_KEYS else {"optional": True}),
                }
            },
        }
        for key in STORE_ENV_KEYS
    ]


def base_env() -> list[Obj]:
    # The root filesystem is read-only: everything that writes goes to /tmp (an emptyDir).
    return [
        {"name": "HOME", "value": "/tmp"},
        {"name": "TMPDIR", "value": "/tmp"},
        {"name": "RECPLANE_CACHE", "value": "/tmp/recplane-cache"},
        {"name": "PYTHONUNBUFFERED", "value": "1"},
    ]


def scratch_volume(name: str = "tmp", size: str | None = None, memory: bool = False) -> Obj:
    empty: Obj = {}
    if memory:
        empty["medium"] = "Memory"
    if size:
        empty["sizeLimit"] = size
    return {"name": name, "emptyDir": empty}


def spec_volume(configmap: str) -> Obj:
    return {
        "name": "spec",
        "configMap": {"name": configmap, "items": [{"key": names.SPEC_FILE, "path": names.SPEC_FILE}]},
    }


def resources(spec: Mapping[str, Any]) -> Obj:
    """Requests = limits (Guaranteed QoS for CPU and memory; GPUs must be equal anyway)."""
    res = spec.get("resources") or {}
    amounts: Obj = {"cpu": str(res.get("cpu", "1")), "memory": str(res.get("memory", "2Gi"))}
    if int(res.get("gpu", 0) or 0) > 0:
        amounts["nvidia.com/gpu"] = str(int(res["gpu"]))
    return {"requests": dict(amounts), "limits": dict(amounts)}


def scheduling(spec: Mapping[str, Any]) -> Obj:
    """nodeSelector, tolerations and priorityClassName, passed through unchanged."""
    sched = spec.get("scheduling") or {}
    out: Obj = {}
    if sched.get("nodeSelector"):
        out["nodeSelector"] = dict(sched["nodeSelector"])
    if sched.get("tolerations"):
        out["tolerations"] = [dict(t) for t in sched["tolerations"]]
    if sched.get("priorityClassName"):
        out["priorityClassName"] = sched["priorityClassName"]
    return out


def container(
    name: str,
    image: str,
    command: Sequence[str],
    args: Sequence[str],
    env: Sequence[Obj],
    mounts: Sequence[Obj],
    config: OperatorConfig,
    spec: Mapping[str, Any],
    **extra: Any,
) -> Obj:
    return {
        "name": name,
        "image": image,
        "imagePullPolicy": config.image_pull_policy,
        "command": list(command),
        "args": list(args),
        "env": [*base_env(), *env, *store_env(config)],
        "resources": resources(spec),
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}, *mounts],
        "securityContext": copy.deepcopy(CONTAINER_SECURITY_CONTEXT),
        # A failed step's last log lines become the termination message the operator shows in status.
        "terminationMessagePolicy": "FallbackToLogsOnError",
        **extra,
    }


def pod_spec(containers: Sequence[Obj], volumes: Sequence[Obj], restart_policy: str, **extra: Any) -> Obj:
    return {
        "restartPolicy": restart_policy,
        # Workloads never call the Kubernetes API.
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": copy.deepcopy(POD_SECURITY_CONTEXT),
        "containers": list(containers),
        "volumes": [scratch_volume(), *volumes],
        **extra,
    }


def metadata(name: str, namespace: str, labels: Mapping[str, str], owner: str | None = None) -> Obj:
    meta: Obj = {"name": name, "namespace": namespace, "labels": dict(labels)}
    if owner:
        meta["annotations"] = {names.OWNER_ANNOTATION: owner}
    return meta


def adopt(objs: Sequence[Obj], owner: Mapping[str, Any]) -> None:
    """Owner reference (controller, blocks owner deletion) to the recplane resource."""
    kopf.append_owner_reference(list(objs), owner=owner)  # type: ignore[arg-type]


def owned_by(obj: Obj, owner: Mapping[str, Any], controller: bool = True) -> Obj:
    """`obj` with an owner reference to another child (e.g. a spec ConfigMap owned by its Job)."""
    kopf.append_owner_reference(obj, owner=owner, controller=controller)  # type: ignore[arg-type]
    return obj


def spec_document(resource: Mapping[str, Any], spec: Mapping[str, Any]) -> str:
    """The resource as the step reads it (`recplane.api.resource.load_resource`): apiVersion, kind, metadata, spec."""
    meta = resource.get("metadata") or {}
    doc = {
        "apiVersion": resource["apiVersion"],
        "kind": resource["kind"],
        "metadata": {
            "name": meta["name"],
            "namespace": meta.get("namespace") or "default",
            **({"labels": dict(meta["labels"])} if meta.get("labels") else {}),
        },
        "spec": dict(spec),
    }
    return yaml.safe_dump(doc, sort_keys=False)


def spec_configmap(name: str, namespace: str, labels: Mapping[str, str], document: str) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": metadata(name, namespace, labels),
        "data": {names.SPEC_FILE: document},
        # A run's spec never changes; a new spec is a new run with its own ConfigMap.
        "immutable": True,
    }
