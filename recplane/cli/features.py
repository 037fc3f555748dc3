"""`recplane features list|describe`: the feature catalogs stored in the artifact store, with statistics."""

from __future__ import annotations

import json
import sys
from enum import Enum
from typing import Annotated, Any

import typer
import yaml

from recplane.cli.options import CliError, ExitCode, print_table, reports_errors
from recplane.store import Manifest, Store, StoreError, open_store

app = typer.Typer(no_args_is_help=True, help="Feature catalogs (FeatureSets) in the artifact store.")

KIND = "featureset"
SPEC_FILE = "feature_spec.json"


class Format(str, Enum):
    table = "table"
    json = "json"
    yaml = "yaml"


StoreOption = Annotated[
    str | None,
    typer.Option(
        "--store", help="Artifact store: a directory or s3://bucket (default: $RECPLANE_STORE, else .recplane/store)."
    ),
]
NamespaceOption = Annotated[str, typer.Option("--namespace", "-n", help="Namespace of the FeatureSets.")]
OutputOption = Annotated[
    Format, typer.Option("--output", "-o", case_sensitive=False, help="table, or json/yaml (the data, nothing else).")
]


def _open(uri: str | None) -> Store:
    try:
        return open_store(uri)
    except StoreError as e:
        raise CliError(str(e), ExitCode.FAILED) from None


def _emit(doc: Any, fmt: Format) -> None:
    if fmt is Format.json:
        sys.stdout.write(json.dumps(doc, indent=2) + "\n")
    else:
        sys.stdout.write(yaml.safe_dump(doc, sort_keys=False))


def _summary(m: Manifest) -> dict[str, Any]:
    sample_set = m.inputs.get("sampleSet", {})
    return {
        "name": m.name,
        "namespace": m.namespace,
        "version": m.version,
        "sampleSet": sample_set.get("name"),
        "sampleSetVersion": sample_set.get("version"),
        "features": len(m.status.get("features", [])),
        "createdAt": m.created_at.isoformat(),
    }


@app.command("list")
@reports_errors
def list_(
    store: StoreOption = None, namespace: NamespaceOption = "default", output: OutputOption = Format.table
) -> None:
    """The FeatureSets of a namespace: latest version, SampleSet and feature count."""
    s = _open(store)
    try:
        latest = [m for name in s.names(namespace, KIND) if (m := s.latest(namespace, KIND, name)) is not None]
    except StoreError as e:
        raise CliError(str(e), ExitCode.FAILED) from None
    rows = [_summary(m) for m in latest]
    if output is not Format.table:
        _emit(rows, output)
        return
    if not rows:
        typer.echo(f"No FeatureSets in namespace {namespace} of store {s.uri}.", err=True)
        return
    print_table(
        ["NAME", "VERSION", "SAMPLESET", "SAMPLESET-VERSION", "FEATURES", "CREATED"],
        [
            [
                r["name"],
                r["version"],
                r["sampleSet"] or "",
                r["sampleSetVersion"] or "",
                str(r["features"]),
                r["createdAt"][:19],
            ]
            for r in rows
        ],
    )


def _describe_doc(s: Store, m: Manifest) -> dict[str, Any]:
    spec = json.loads(s.fetch(m, SPEC_FILE).read_text())
    features = []
    for entry in spec["features"]:
        params = {k: v for k, v in entry.get("params", {}).items() if k != "vocabulary"}
        features.append({**entry["feature"], **params, "stats": entry.get("stats", {})})
    return {**_summary(m), "features": features}


def _number(value: Any, percent: bool = False) -> str:
    if value is None:
        return ""
    if percent:
        return f"{100 * value:.2f}%"
    if isinstance(value, float):
        return f"{value:.4g}"
    return f"{value:,}"


@app.command("describe")
@reports_errors
def describe(
    name: Annotated[str, typer.Argument(help="FeatureSet name.")],
    version: Annotated[str | None, typer.Option("--version", help="A stored version (default: the latest).")] = None,
    store: StoreOption = None,
    namespace: NamespaceOption = "default",
    output: OutputOption = Format.table,
) -> None:
    """One FeatureSet's catalog: every feature with its transform, embedding ids and statistics."""
    s = _open(store)
    try:
        m = s.manifest(namespace, KIND, name, version) if version else s.latest(namespace, KIND, name)
        if m is None:
            which = f"version {version} of " if version else ""
            raise CliError(f"no {which}FeatureSet {namespace}/{name} in store {s.uri}", ExitCode.NOT_FOUND)
        doc = _describe_doc(s, m)
    except StoreError as e:
        raise CliError(str(e), ExitCode.FAILED) from None
    if output is not Format.table:
        _emit(doc, output)
        return
    typer.echo(
        f"FeatureSet {namespace}/{name}  version {doc['version']}  "
        f"over SampleSet {doc['sampleSet']} {doc['sampleSetVersion']}  ({doc['createdAt'][:19]})"
    )
    rows = []
    for f in doc["features"]:
        st = f["stats"]
        transform = f["transform"]["type"]
        rows.append(
            [
                f["name"],
                f["group"],
                f["type"],
                ",".join(f["columns"]),
                transform,
                _number(f.get("numEmbeddings")),
                str(f.get("embeddingDim") or ""),
                _number(st.get("cardinality")),
                _number(st.get("nullRate"), percent=True),
                _number(st.get("oovRate"), percent=True),
                _number(st.get("mean")),
                _number(st.get("std")),
                ("yes: " + ",".join(f.get("allowedNamespaces", []))) if f.get("sensitive") else "",
            ]
        )
    print_table(
        [
            "FEATURE",
            "GROUP",
            "TYPE",
            "COLUMNS",
            "TRANSFORM",
            "IDS",
            "DIM",
            "CARDINALITY",
            "NULL",
            "OOV",
            "MEAN",
            "STD",
            "SENSITIVE",
        ],
        rows,
    )
