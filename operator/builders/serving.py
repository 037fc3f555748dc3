"""ModelDeployment: a BentoML Deployment per track (stable, optional canary), one
Service over both, and a HorizontalPodAutoscaler for the stable track.

Traffic to the canary follows its share of the serving pods: with stable at its
minimum of S replicas and a canary weight of w percent, the canary gets
round(S * w / (100 - w)) replicas (at least one), so the Service's even spread
over pods gives the canary about w percent of requests.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from recplane.operator import names
from recplane.operator.builders import common
from recplane.operator.config import OperatorConfig

Obj = dict[str, Any]


@dataclass(frozen=True)
class ModelRef:
    """One servable model version."""

    version: str
    uri: str


@dataclass(frozen=True)
class ServingPlan:
    apply: list[Obj]
    """Desired objects, in the order to apply them."""
    delete: list[tuple[str, str, str]] = field(default_factory=list)
    """(apiVersion, kind, name) of children that must not exist (a removed canary)."""
    min_replicas: int = 1
    """Replicas the stable Deployment starts with, before the autoscaler takes over."""


def stable_name(name: str) -> str:
    return names.dns_name(name)


def canary_name(name: str) -> str:
    return names.dns_name(name, "canary")


def canary_replicas(stable_min: int, weight: int) -> int:
    if weight >= 100:
        return max(1, stable_min)
    return max(1, round(max(1, stable_min) * weight / (100 - weight)))


def endpoint(name: str, namespace: str, config: OperatorConfig) -> str:
    return f"http://{stable_name(name)}.{namespace}.svc:{config.serving_port}"


def events_prefix(name: str, namespace: str) -> str:
    """Where a ModelDeployment's pods write impression and feedback events, relative to the store."""
    return f"{namespace}/events/{name}"


def _events_env(name: str, namespace: str, spec: Mapping[str, Any]) -> list[Obj]:
    events = spec.get("events") or {}
    if not events.get("enabled"):
        return []
    return [
        {"name": "RECPLANE_EVENTS_URI", "value": events_prefix(name, namespace)},
        {"name": "RECPLANE_EVENTS_FLUSH_SECONDS", "value": str(events.get("flushSeconds", 60))},
        {"name": "RECPLANE_EVENTS_LABEL_WINDOW_SECONDS", "value": str(events.get("labelWindowSeconds", 1800))},
        {"name": "RECPLANE_EVENTS_TOP_K", "value": str(events.get("topK", 0))},
    ]


def _deployment(
    resource: Mapping[str, Any], config: OperatorConfig, model: ModelRef, track: str, replicas: int | None
) -> Obj:
    meta = resource["metadata"]
    name, namespace = meta["name"], meta.get("namespace") or "default"
    spec = resource.get("spec") or {}
    batching = spec.get("batching") or {}
    selector = {**names.selector_labels("ModelDeployment", name), names.TRACK_LABEL: track}
    labels = names.labels(
        "ModelDeployment",
        name,
        "serving",
        {names.TRACK_LABEL: track, names.MODEL_VERSION_LABEL: names.label_value(model.version), **config.extra_labels},
    )
    owner = names.owner_key("ModelDeployment", name)
    port = config.serving_port
    serving = common.container(
        "serving",
        spec.get("image") or config.serving_image,
        ["recplane"],
        ["serve", "--model", model.uri, "--port", str(port)],
        env=[
            {"name": "RECPLANE_MODEL_VERSION", "value": model.version},
            {"name": "RECPLANE_SERVE_MAX_BATCH_SIZE", "value": str(batching.get("maxBatchSize", 64))},
            {"name": "RECPLANE_SERVE_MAX_LATENCY_MS", "value": str(batching.get("maxLatencyMs", 10))},
            {"name": "RECPLANE_SERVE_MAX_CANDIDATES", "value": str(spec.get("maxCandidates", 1000))},
            {"name": "BENTOML_HOME", "value": "/tmp/bentoml"},
            *_events_env(name, namespace, spec),
        ],
        mounts=[],
        config=config,
        spec=spec,
        ports=[{"name": "http", "containerPort": port}],
        # BentoML's own health endpoints; loading a large model may take minutes.
        startupProbe={"httpGet": {"path": "/livez", "port": "http"}, "periodSeconds": 5, "failureThreshold": 120},
        livenessProbe={"httpGet": {"path": "/livez", "port": "http"}, "periodSeconds": 10},
        readinessProbe={"httpGet": {"path": "/readyz", "port": "http"}, "periodSeconds": 5},
    )
    dep_spec: Obj = {
        "selector": {"matchLabels": selector},
        "revisionHistoryLimit": 5,
        # A new version only replaces pods that are serving: no capacity is lost during a rollout.
        "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": 0}},
        "template": {
            "metadata": {"labels": labels, "annotations": {names.OWNER_ANNOTATION: owner}},
            "spec": common.pod_spec([serving], [], "Always", **common.scheduling(spec)),
        },
    }
    if replicas is not None:
        dep_spec["replicas"] = replicas
    dep: Obj = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": common.metadata(
            stable_name(name) if track == "stable" else canary_name(name), namespace, labels, owner
        ),
        "spec": dep_spec,
    }
    return dep


def build_serving(
    resource: Mapping[str, Any],
    config: OperatorConfig,
    stable: ModelRef,
    canary: ModelRef | None = None,
    canary_weight: int = 0,
) -> ServingPlan:
    """Desired children of a ModelDeployment serving `stable` (and `canary` at `canary_weight` percent)."""
    meta = resource["metadata"]
    name, namespace = meta["name"], meta.get("namespace") or "default"
    spec = resource.get("spec") or {}
    auto = spec.get("autoscaling") or {}
    min_replicas = max(1, int(auto.get("minReplicas", 1)))
    max_replicas = max(min_replicas, int(auto.get("maxReplicas", 4)))
    labels = names.labels("ModelDeployment", name, "serving", config.extra_labels)

    # No `replicas` on the stable Deployment: the autoscaler owns it (and raises it to minReplicas).
    objs = [_deployment(resource, config, stable, "stable", None)]
    service: Obj = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": common.metadata(stable_name(name), namespace, labels),
        "spec": {
            "type": "ClusterIP",
            "selector": names.selector_labels("ModelDeployment", name),
            "ports": [{"name": "http", "port": config.serving_port, "targetPort": "http"}],
        },
    }
    hpa: Obj = {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": common.metadata(stable_name(name), namespace, labels),
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": stable_name(name)},
            "minReplicas": min_replicas,
            "maxReplicas": max_replicas,
            "metrics": [
                {
                    "type": "Resource",
                    "resource": {
                        "name": "cpu",
                        "target": {
                            "type": "Utilization",
                            "averageUtilization": int(auto.get("targetCpuUtilization", 70)),
                        },
                    },
                }
            ],
        },
    }
    objs += [service, hpa]
    delete: list[tuple[str, str, str]] = []
    if canary is not None and canary_weight > 0:
        objs.append(_deployment(resource, config, canary, "canary", canary_replicas(min_replicas, canary_weight)))
    else:
        delete.append(("apps/v1", "Deployment", canary_name(name)))
    common.adopt(objs, resource)
    return ServingPlan(apply=objs, delete=delete, min_replicas=min_replicas)


def canary_share(stable_replicas: int, canary_replicas_: int) -> float:
    """Fraction of pods (hence of requests) that serve the canary."""
    total = stable_replicas + canary_replicas_
    return 0.0 if total == 0 else canary_replicas_ / total


__all__ = ["ModelRef", "ServingPlan", "build_serving", "canary_name", "canary_share", "endpoint", "stable_name"]
