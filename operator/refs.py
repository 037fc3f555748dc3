"""References between recplane resources: who consumes whom, cycles, sensitive features.

A FeatureSet names its SampleSet, a TrainJob its FeatureSet, a ModelDeployment
its TrainJob. A SampleSet may also read another resource's stored output
(`source.uri` inside the artifact store) and a ModelDeployment may name a stored
model by URI; those count as references too, which is how cycles can arise.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from recplane.operator.artifacts import StoreRef

Obj = Mapping[str, Any]
UriParser = Callable[[str], StoreRef | None]
Lookup = Callable[[str, str], Obj | None]
"""(kind, name) -> the resource in the same namespace, or None."""

MAX_CHAIN = 32


@dataclass(frozen=True)
class Ref:
    kind: str
    name: str
    version: str | None
    field: str
    """Where the reference is written, for messages: `spec.sampleSetRef`."""


def upstream_ref(resource: Obj, parse_uri: UriParser | None = None) -> Ref | None:
    """The one resource `resource` consumes, if any."""
    kind = resource.get("kind")
    spec = resource.get("spec") or {}
    namespace = (resource.get("metadata") or {}).get("namespace") or "default"
    if kind == "FeatureSet":
        ref = spec.get("sampleSetRef") or {}
        return Ref("SampleSet", ref["name"], ref.get("version"), "spec.sampleSetRef") if ref.get("name") else None
    if kind == "TrainJob":
        ref = spec.get("featureSetRef") or {}
        return Ref("FeatureSet", ref["name"], ref.get("version"), "spec.featureSetRef") if ref.get("name") else None
    if kind == "ModelDeployment":
        model = spec.get("model") or {}
        ref = model.get("trainJobRef") or {}
        if ref.get("name"):
            return Ref("TrainJob", ref["name"], ref.get("version"), "spec.model.trainJobRef")
        return _store_ref(model.get("uri"), namespace, "spec.model.uri", parse_uri)
    if kind == "SampleSet":
        return _store_ref((spec.get("source") or {}).get("uri"), namespace, "spec.source.uri", parse_uri)
    return None


def _store_ref(uri: str | None, namespace: str, field: str, parse_uri: UriParser | None) -> Ref | None:
    if not uri or parse_uri is None:
        return None
    target = parse_uri(uri)
    # Output of another namespace is plain input data here: the other namespace owns its lifecycle.
    if target is None or target.namespace != namespace:
        return None
    return Ref(target.kind, target.name, target.version, field)


def find_cycle(resource: Obj, lookup: Lookup, parse_uri: UriParser | None = None) -> list[tuple[str, str]] | None:
    """The reference chain from `resource` back to itself, e.g. [(SampleSet, a), (SampleSet, b), (SampleSet, a)]."""
    start = (str(resource.get("kind")), str((resource.get("metadata") or {}).get("name")))
    path = [start]
    current: Obj | None = resource
    for _ in range(MAX_CHAIN):
        ref = upstream_ref(current, parse_uri) if current is not None else None
        if ref is None:
            return None
        node = (ref.kind, ref.name)
        path.append(node)
        if node == start:
            return path
        if node in path[:-1]:
            return None  # a cycle further up that does not include `resource`: reported there
        current = lookup(ref.kind, ref.name)
    return None


def describe_chain(path: list[tuple[str, str]]) -> str:
    return " -> ".join(f"{kind} {name!r}" for kind, name in path)


def forbidden_features(spec: Mapping[str, Any], namespace: str) -> list[tuple[str, list[str]]]:
    """Sensitive features this namespace may not use: (feature name, namespaces allowed)."""
    out = []
    for feature in spec.get("features") or []:
        if feature.get("sensitive"):
            allowed = list(feature.get("allowedNamespaces") or [])
            if namespace not in allowed:
                out.append((str(feature.get("name")), allowed))
    return out
