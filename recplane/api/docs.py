"""Generate the CRD reference (docs/crd-reference.md) from the models in `KINDS`.

The tables are rendered from the same structural schemas that go into the CRDs
(`crd.openapi_schema`), so the page shows exactly what the API server enforces:
every field with its wire name, type, default, constraints and description, and
every CEL rule with the message a user sees when it is broken.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import API_VERSION, KINDS, Kind, crd

HEADER = (
    "<!-- Generated from recplane/api by `recplane crds docs`; do not edit. "
    "A unit test fails when this page is stale. -->\n"
)


@dataclass(frozen=True)
class Section:
    """One object in a schema: its dotted wire path and its schema node."""

    kind: str
    path: str
    node: dict[str, Any]

    @property
    def anchor(self) -> str:
        slug = self.path.replace("[]", "-items").replace(".", "-")
        return f"{self.kind.lower()}-{slug}"


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return " ".join(text.split()).replace("|", "\\|")


def _code(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, separators=(", ", ": "))
    # A backtick inside a code span would end it; none of our values have one, but stay safe.
    fence = "``" if "`" in text else "`"
    return f"{fence}{_cell(text)}{fence}"


def _has_fields(node: dict[str, Any]) -> bool:
    return node.get("type") == "object" and bool(node.get("properties"))


def _sections(kind: str, path: str, node: dict[str, Any]) -> Iterator[Section]:
    """Every object with named fields under `node`, depth first, parents before children."""
    if _has_fields(node):
        yield Section(kind, path, node)
        for name, prop in node["properties"].items():
            yield from _sections(kind, f"{path}.{name}", prop)
    elif node.get("type") == "array" and isinstance(node.get("items"), dict):
        yield from _sections(kind, f"{path}[]", node["items"])
    elif isinstance(node.get("additionalProperties"), dict):
        yield from _sections(kind, f"{path}{{}}", node["additionalProperties"])


def _type(kind: str, path: str, node: dict[str, Any]) -> str:
    """The field's type in Go-like notation, with a link to the section of an object type."""
    if _has_fields(node):
        return f"[object](#{Section(kind, path, node).anchor})"
    if node.get("type") == "array" and isinstance(node.get("items"), dict):
        return "[]" + _type(kind, f"{path}[]", node["items"])
    if node.get("type") == "object":
        value = node.get("additionalProperties")
        if isinstance(value, dict):
            return "map[string]" + _type(kind, f"{path}{{}}", value)
        return "object (any fields)"
    name = str(node.get("type", "any"))
    return f"{name} ({node['format']})" if "format" in node else name


def _bound(node: dict[str, Any], key: str, exclusive: str, strict: str, inclusive: str) -> list[str]:
    if key not in node:
        return []
    return [f"{strict if node.get(exclusive) else inclusive} {node[key]}"]


def _constraints(node: dict[str, Any]) -> str:
    parts: list[str] = []
    if "enum" in node:
        parts.append("one of " + ", ".join(_code(v) for v in node["enum"]))
    parts += _bound(node, "minimum", "exclusiveMinimum", ">", "≥")
    parts += _bound(node, "maximum", "exclusiveMaximum", "<", "≤")
    for key, label in (
        ("minLength", "length ≥"),
        ("maxLength", "length ≤"),
        ("minItems", "items ≥"),
        ("maxItems", "items ≤"),
    ):
        if key in node:
            parts.append(f"{label} {node[key]}")
    if "pattern" in node:
        parts.append(f"matches {_code(node['pattern'])}")
    if node.get("x-kubernetes-list-type") == "map":
        keys = ", ".join(_code(k) for k in node.get("x-kubernetes-list-map-keys", []))
        parts.append(f"unique by {keys}")
    return "; ".join(parts)


def _table(section: Section) -> list[str]:
    required = set(section.node.get("required", []))
    lines = [
        "| Field | Type | Required | Default | Constraints | Description |",
        "|---|---|---|---|---|---|",
    ]
    for name, prop in section.node["properties"].items():
        default = _code(prop["default"]) if "default" in prop else ""
        lines.append(
            f"| `{name}` | {_type(section.kind, f'{section.path}.{name}', prop)} | "
            f"{'yes' if name in required else ''} | {default} | {_constraints(prop)} | "
            f"{_cell(prop.get('description', ''))} |"
        )
    return lines


def _rules(node: dict[str, Any]) -> list[str]:
    rules = node.get("x-kubernetes-validations") or []
    if not rules:
        return []
    lines = ["", "Rules (CEL; the API server refuses an object that breaks one, and so does `recplane`):", ""]
    for r in rules:
        where = f" (field `{r['fieldPath'].lstrip('.')}`)" if r.get("fieldPath") else ""
        lines.append(f"- {r['message']}{where}: `{r['rule']}`")
    return lines


def _columns(kind: Kind) -> list[str]:
    lines = [
        "| Column | JSON path | Type | Shown | Description |",
        "|---|---|---|---|---|",
    ]
    for c in kind.columns:
        shown = "always" if c.priority == 0 else "`-o wide`"
        lines.append(f"| {c.name} | `{_cell(c.json_path)}` | {c.type} | {shown} | {_cell(c.description)} |")
    return lines


def _kind_page(kind: Kind) -> list[str]:
    lines = [
        f'## <a id="{kind.kind.lower()}"></a>{kind.kind}',
        "",
        kind.description,
        "",
        f"`apiVersion: {API_VERSION}` · plural `{kind.plural}` · short name `{kind.short}` · "
        f"category `recplane` · namespaced · status subresource",
        "",
        f"`kubectl get {kind.short}` columns:",
        "",
        *_columns(kind),
    ]
    for part, model in (("spec", kind.spec), ("status", kind.status)):
        schema = crd.openapi_schema(model)
        for section in _sections(kind.kind, part, schema):
            title = f"{kind.kind} `{section.path}`"
            lines += ["", f'### <a id="{section.anchor}"></a>{title}', ""]
            if section.node.get("description"):
                lines += [_cell(section.node["description"]), ""]
            if section.path == "status":
                lines += ["Written by the operator; read-only for users.", ""]
            lines += _table(section)
            lines += _rules(section.node)
    return lines


def render() -> str:
    """The whole CRD reference page as Markdown."""
    lines = [
        HEADER,
        "# CRD reference",
        "",
        f"Every recplane resource has `apiVersion: {API_VERSION}`. Field names are the wire names "
        "(camelCase) used in YAML. A default is filled in by the API server when the field is omitted; "
        "an object field whose default is `{}` gets each of its own fields' defaults.",
        "",
        "| Kind | Short | What it declares |",
        "|---|---|---|",
    ]
    lines += [f"| [{k.kind}](#{k.kind.lower()}) | `{k.short}` | {_cell(k.description)} |" for k in KINDS.values()]
    for kind in KINDS.values():
        lines += ["", *_kind_page(kind)]
    return "\n".join(lines).rstrip() + "\n"


def write(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render())
    return path


def stale(path: Path) -> bool:
    """True when `path` is missing or differs from what the models generate."""
    return not path.exists() or path.read_text() != render()
