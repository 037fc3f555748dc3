"""`recplane compare TRAINJOB...`: model versions side by side, best validation AUC first.

Reads the artifact store (RECPLANE_STORE or --store), so it works for local runs
and clusters alike. `-o json|yaml` prints exactly the rows as objects.
"""

from __future__ import annotations

import json
import sys
from enum import Enum
from typing import Annotated, Any

import typer
import yaml

from recplane.store import Manifest, Store, StoreError, open_store

from .options import CliError, ExitCode, human_age, print_table, reports_errors

app = typer.Typer(help="Compare model versions.")
KIND = "trainjob"


class CompareFormat(str, Enum):
    table = "table"
    json = "json"
    yaml = "yaml"


def _metrics(store: Store, manifest: Manifest) -> dict[str, Any]:
    """The version's metrics.json (all metrics), else the summary in its manifest status."""
    try:
        return dict(json.loads(store.fetch(manifest, "metrics.json").read_text()))
    except (StoreError, OSError, ValueError):
        return dict(manifest.status.get("metrics") or {})


def compare_rows(
    store: Store, trainjobs: list[str], namespace: str, all_versions: bool = False
) -> list[dict[str, Any]]:
    """One row per model version of the named TrainJobs (latest only unless `all_versions`), best AUC first."""
    rows = []
    for name in trainjobs:
        versions = store.versions(namespace, KIND, name)
        if not versions:
            raise CliError(
                f"TrainJob {namespace}/{name} has no model version in the store {store.uri}", ExitCode.NOT_FOUND
            )
        if not all_versions:
            latest = store.latest(namespace, KIND, name)
            versions = [latest] if latest else versions[-1:]
        for m in versions:
            rows.append(
                {
                    "trainJob": name,
                    "version": m.version,
                    "model": (m.spec.get("model") or {}).get("type"),
                    "createdAt": m.created_at.isoformat(),
                    "metrics": _metrics(store, m),
                }
            )
    return sorted(rows, key=lambda r: (r["metrics"].get("auc") is None, -(r["metrics"].get("auc") or 0.0)))


def _num(value: Any, digits: int = 4) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _table(rows: list[dict[str, Any]]) -> None:
    recall = any(r["metrics"].get("recallAtK") is not None for r in rows)
    bayes = next((r["metrics"]["bayesAuc"] for r in rows if r["metrics"].get("bayesAuc") is not None), None)
    headers = ["TRAINJOB", "VERSION", "MODEL", "AUC", "LOGLOSS", "AUC INT8", "SAMPLES/S"]
    if recall:
        k = next(r["metrics"].get("k") for r in rows if r["metrics"].get("recallAtK") is not None)
        headers += [f"RECALL@{k}", f"NDCG@{k}"]
    headers.append("AGE")
    body = []
    for r in rows:
        m = r["metrics"]
        cells = [r["trainJob"], r["version"], str(r["model"]), _num(m.get("auc")), _num(m.get("logloss"))]
        cells += [_num(m.get("aucInt8")), _num(m.get("samplesPerSecond"))]
        if recall:
            cells += [_num(m.get("recallAtK")), _num(m.get("ndcgAtK"))]
        body.append([*cells, human_age(r["createdAt"])])
    print_table(headers, body)
    if bayes is not None:
        print(f"\nBayes-optimal validation AUC of the data: {bayes:.4f}")


@app.command("compare")
@reports_errors
def compare(
    trainjobs: Annotated[list[str], typer.Argument(help="TrainJob names whose model versions to compare.")],
    store: Annotated[
        str | None, typer.Option("--store", help="Artifact store URI.", show_default="$RECPLANE_STORE")
    ] = None,
    namespace: Annotated[str, typer.Option("--namespace", "-n", help="Namespace of the TrainJobs.")] = "default",
    output: Annotated[
        CompareFormat, typer.Option("--output", "-o", case_sensitive=False, help="table, json or yaml.")
    ] = CompareFormat.table,
    all_versions: Annotated[
        bool, typer.Option("--all-versions", help="Every stored version, not just the latest.")
    ] = False,
) -> None:
    """Print the model versions of TRAINJOBs and their validation metrics, best AUC first."""
    try:
        rows = compare_rows(open_store(store), trainjobs, namespace, all_versions)
    except StoreError as e:
        raise CliError(str(e), ExitCode.FAILED) from None
    if output is CompareFormat.json:
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
    elif output is CompareFormat.yaml:
        sys.stdout.write(yaml.safe_dump(rows, sort_keys=False))
    else:
        _table(rows)
