"""A recplane resource as users write it: apiVersion, kind, metadata, spec."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from . import API_VERSION, kind_of


class ResourceError(ValueError):
    """A resource document that cannot be used; the message names the file, object and field."""


@dataclass
class Resource:
    kind: str
    name: str
    namespace: str
    spec: BaseModel
    labels: dict[str, str] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict)

    @property
    def ref(self) -> str:
        return f"{self.kind}/{self.namespace}/{self.name}"

    def to_wire(self) -> dict[str, Any]:
        meta: dict[str, Any] = {"name": self.name, "namespace": self.namespace}
        if self.labels:
            meta["labels"] = self.labels
        return {
            "apiVersion": API_VERSION,
            "kind": self.kind,
            "metadata": meta,
            "spec": self.spec.model_dump(by_alias=True, exclude_none=True, mode="json"),
        }


def _format_errors(err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        msg = e["msg"].removeprefix("Value error, ")
        parts.append(f"spec.{loc}: {msg}" if loc else f"spec: {msg}")
    return "; ".join(parts)


def parse_resource(doc: dict[str, Any], default_namespace: str = "default", origin: str = "") -> Resource:
    where = f"{origin}: " if origin else ""
    if not isinstance(doc, dict):
        raise ResourceError(f"{where}expected a mapping with apiVersion, kind, metadata and spec")
    if doc.get("apiVersion") != API_VERSION:
        raise ResourceError(f"{where}apiVersion must be {API_VERSION}, got {doc.get('apiVersion')!r}")
    try:
        kind = kind_of(str(doc.get("kind", "")))
    except KeyError as e:
        raise ResourceError(f"{where}kind: {e.args[0]}") from None
    meta = doc.get("metadata") or {}
    name = meta.get("name")
    if not name:
        raise ResourceError(f"{where}{kind.kind}: metadata.name is required")
    try:
        spec = kind.spec.model_validate(doc.get("spec") or {})
    except ValidationError as e:
        raise ResourceError(f"{where}{kind.kind}/{name}: {_format_errors(e)}") from None
    return Resource(
        kind=kind.kind,
        name=name,
        namespace=meta.get("namespace") or default_namespace,
        spec=spec,
        labels=dict(meta.get("labels") or {}),
        raw=doc,
    )


def load_resources(paths: Iterable[Path], default_namespace: str = "default") -> list[Resource]:
    """Every recplane resource in the given YAML files or directories (multi-document YAML)."""
    files: list[Path] = []
    for p in paths:
        files.extend(sorted(p.glob("*.y*ml")) if p.is_dir() else [p])
    out: list[Resource] = []
    for f in files:
        try:
            docs = list(yaml.safe_load_all(f.read_text()))
        except (OSError, yaml.YAMLError) as e:
            raise ResourceError(f"{f}: cannot read YAML: {e}") from None
        out.extend(parse_resource(d, default_namespace, str(f)) for d in docs if d)
    return out


def load_resource(path: Path, kind: str | None = None) -> Resource:
    """The single resource in `path` (what a pod's mounted spec file holds)."""
    resources = load_resources([path])
    if len(resources) != 1:
        raise ResourceError(f"{path}: expected exactly one resource, found {len(resources)}")
    res = resources[0]
    if kind and res.kind != kind_of(kind).kind:
        raise ResourceError(f"{path}: expected a {kind_of(kind).kind}, found a {res.kind}")
    return res
