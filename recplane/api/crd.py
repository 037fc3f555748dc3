"""Generate CustomResourceDefinitions from the pydantic models.

pydantic emits JSON Schema 2020-12; the API server wants a *structural*
OpenAPI v3 schema. The differences handled here: `$ref`s are inlined,
`Optional[X]` becomes an optional `X` (Kubernetes has no null type),
`exclusiveMinimum` is the OpenAPI v3.0 boolean form, `additionalProperties:
false` is dropped (the API server prunes and strict field validation refuses
unknown fields), and free-form objects preserve unknown fields.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, get_args

import yaml
from pydantic import BaseModel

from . import GROUP, KINDS, VERSION, Kind

_DROP = {"title", "additionalProperties_false", "discriminator"}


def _inline(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, dict):
        if "$ref" in node:
            target = copy.deepcopy(defs[node["$ref"].split("/")[-1]])
            extra = {k: v for k, v in node.items() if k != "$ref"}
            target.update(extra)
            return _inline(target, defs)
        return {k: _inline(v, defs) for k, v in node.items()}
    if isinstance(node, list):
        return [_inline(v, defs) for v in node]
    return node


def _structural(node: dict[str, Any]) -> dict[str, Any]:
    node = dict(node)
    any_of = node.pop("anyOf", None)
    if any_of is not None:
        options = [o for o in any_of if o.get("type") != "null"]
        if len(options) != 1:
            raise ValueError(f"unions other than Optional[X] have no structural schema: {any_of}")
        merged = dict(options[0])
        merged.update(node)
        node = merged
    for key in ("title", "discriminator"):
        node.pop(key, None)
    if node.get("default", 0) is None:
        node.pop("default")
    if "exclusiveMinimum" in node and not isinstance(node["exclusiveMinimum"], bool):
        node["minimum"] = node.pop("exclusiveMinimum")
        node["exclusiveMinimum"] = True
    if "exclusiveMaximum" in node and not isinstance(node["exclusiveMaximum"], bool):
        node["maximum"] = node.pop("exclusiveMaximum")
        node["exclusiveMaximum"] = True
    if "const" in node:
        node["enum"] = [node.pop("const")]
    if node.get("type") == "object":
        props = node.get("properties")
        additional = node.get("additionalProperties")
        if props is not None:
            node["properties"] = {k: _structural(v) for k, v in props.items()}
            node.pop("additionalProperties", None)
        elif isinstance(additional, dict) and additional:
            node["additionalProperties"] = _structural(additional)
        else:
            node.pop("additionalProperties", None)
            node["x-kubernetes-preserve-unknown-fields"] = True
    if "items" in node:
        node["items"] = _structural(node["items"])
    if "type" not in node and "enum" in node:
        node["type"] = "string"
    return node


def _model_classes(root: type[BaseModel]) -> dict[str, type[BaseModel]]:
    """Every model reachable from `root`, by the name pydantic gives its `$defs` entry."""
    found: dict[str, type[BaseModel]] = {}
    todo = [root]
    while todo:
        cls = todo.pop()
        if cls.__name__ in found:
            continue
        found[cls.__name__] = cls
        for f in cls.model_fields.values():
            for arg in [f.annotation, *get_args(f.annotation)]:
                for inner in [arg, *get_args(arg)]:
                    if isinstance(inner, type) and issubclass(inner, BaseModel):
                        todo.append(inner)
    return found


def _fill_object_defaults(node: Any, classes: dict[str, type[BaseModel]]) -> None:
    """Give sub-objects built by pydantic's default_factory the same default in the CRD.

    The default is the whole defaulted object (not `{}`), so the API server
    stores the same values the models fill in, and the CEL rules, which the
    server checks against the default itself, hold for it.
    """
    if isinstance(node, dict):
        required = set(node.get("required", []))
        for key, prop in node.get("properties", {}).items():
            ref = prop.get("$ref") if isinstance(prop, dict) else None
            if ref and key not in required and "default" not in prop:
                cls = classes.get(ref.split("/")[-1])
                if cls is not None:
                    prop["default"] = cls().model_dump(by_alias=True, exclude_none=True, mode="json")
        for value in node.values():
            _fill_object_defaults(value, classes)
    elif isinstance(node, list):
        for value in node:
            _fill_object_defaults(value, classes)


def openapi_schema(model: type[BaseModel]) -> dict[str, Any]:
    """A structural OpenAPI v3 schema for a pydantic model."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    _fill_object_defaults(raw, _model_classes(model))
    defs = raw.pop("$defs", {})
    return _structural(_inline(raw, defs))


def crd(kind: Kind) -> dict[str, Any]:
    spec_schema = openapi_schema(kind.spec)
    status_schema = openapi_schema(kind.status)
    status_schema["x-kubernetes-preserve-unknown-fields"] = True
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": kind.crd_name,
            "labels": {"app.kubernetes.io/part-of": "recplane"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": kind.kind,
                "listKind": f"{kind.kind}List",
                "plural": kind.plural,
                "singular": kind.singular,
                "shortNames": [kind.short],
                "categories": ["recplane"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        {
                            "name": c.name,
                            "type": c.type,
                            "jsonPath": c.json_path,
                            **({"priority": c.priority} if c.priority else {}),
                            **({"description": c.description} if c.description else {}),
                        }
                        for c in kind.columns
                    ],
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": kind.description,
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec_schema,
                                "status": status_schema,
                            },
                        }
                    },
                }
            ],
        },
    }


def render(kind: Kind) -> str:
    header = "# Generated from recplane/api by `recplane crds generate`; do not edit.\n"
    return header + yaml.safe_dump(crd(kind), sort_keys=False, width=120)


def generated_files() -> dict[str, str]:
    """File name -> content of every CRD, as `crds/` should hold them."""
    return {f"{GROUP}_{k.plural}.yaml": render(k) for k in KINDS.values()}


def write(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, content in generated_files().items():
        path = directory / name
        path.write_text(content)
        written.append(path)
    return written


def stale(directory: Path) -> list[str]:
    """Names of CRD files in `directory` that differ from the models (or are missing or extra)."""
    expected = generated_files()
    present = {p.name for p in directory.glob("*.yaml")} if directory.exists() else set()
    differing = [n for n, c in expected.items() if not (directory / n).exists() or (directory / n).read_text() != c]
    return sorted(differing + sorted(present - expected.keys()))
