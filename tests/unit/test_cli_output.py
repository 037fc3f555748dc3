"""What the cluster verbs print: kubectl-like tables from the CRDs' printer columns, and
machine output that is exactly the objects."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta

import pytest
import typer
import yaml
from rich.console import Console

from recplane.api import KINDS
from recplane.cli.options import (
    OutputFormat,
    format_cell,
    human_age,
    json_path,
    parse_duration,
    print_objects,
    print_table,
    resource_rows,
)

NOW = datetime(2026, 1, 2, 12, 0, 0, tzinfo=UTC)


def _tj(name: str = "feed-deepfm", **status: object) -> dict[str, object]:
    return {
        "apiVersion": "recplane.io/v1alpha1",
        "kind": "TrainJob",
        "metadata": {
            "name": name,
            "namespace": "default",
            "creationTimestamp": (NOW - timedelta(minutes=5)).isoformat().replace("+00:00", "Z"),
            "managedFields": [{"manager": "recplane", "operation": "Apply"}],
        },
        "spec": {"featureSetRef": {"name": "feed-features"}, "model": {"type": "deepfm"}},
        "status": {
            "phase": "Running",
            "conditions": [
                {"type": "Progressing", "status": "True", "reason": "Training"},
                {"type": "Ready", "status": "False", "reason": "Training"},
            ],
            **status,
        },
    }


def test_printer_column_paths_pick_the_ready_condition_and_leave_missing_cells_empty() -> None:
    obj = _tj(metrics={"auc": 0.7})
    assert json_path(obj, '.status.conditions[?(@.type=="Ready")].status') == "False"
    assert json_path(obj, ".status.metrics.auc") == 0.7
    assert json_path(obj, ".status.conditions[0].reason") == "Training"
    assert json_path(obj, ".status.latestVersion") is None
    assert json_path(obj, '.status.conditions[?(@.type=="Failed")].status') is None


def test_every_kinds_columns_can_be_evaluated() -> None:
    for kind in KINDS.values():
        for column in kind.columns:
            json_path({"metadata": {}, "spec": {}, "status": {}}, column.json_path)


def test_trainjob_rows_follow_the_crd_columns() -> None:
    headers, rows = resource_rows(
        KINDS["TrainJob"], [_tj(latestVersion="a1b2", metrics={"auc": 0.712345}, step=40)], now=NOW
    )
    assert headers == ["NAME", "PHASE", "READY", "MODEL", "VERSION", "AUC", "AGE"]
    assert rows == [["feed-deepfm", "Running", "False", "deepfm", "a1b2", "0.7123", "5m"]]


def test_wide_output_adds_the_priority_columns_and_all_namespaces_adds_namespace() -> None:
    headers, rows = resource_rows(KINDS["TrainJob"], [_tj(step=40)], wide=True, with_namespace=True, now=NOW)
    assert headers[:2] == ["NAMESPACE", "NAME"]
    assert "STEP" in headers and "RESTARTS" in headers
    assert rows[0][headers.index("STEP")] == "40"


def test_names_are_qualified_when_several_kinds_are_listed() -> None:
    _, rows = resource_rows(KINDS["TrainJob"], [_tj()], qualify=True, now=NOW)
    assert rows[0][0] == "trainjob.recplane.io/feed-deepfm"


@pytest.mark.parametrize(
    ("seconds", "age"),
    [
        (0, "0s"),
        (45, "45s"),
        (119, "119s"),
        (200, "3m20s"),
        (300, "5m"),
        (15 * 60 + 30, "15m"),
        (125 * 60, "125m"),
        (3 * 3600 + 5 * 60, "3h5m"),
        (30 * 3600, "30h"),
        (3 * 86400 + 4 * 3600, "3d4h"),
        (40 * 86400, "40d"),
        (3 * 365 * 86400 + 10 * 86400, "3y10d"),
    ],
)
def test_ages_are_rounded_like_kubectl(seconds: int, age: str) -> None:
    assert human_age(NOW - timedelta(seconds=seconds), now=NOW) == age


def test_cells_show_dates_as_ages_and_floats_short() -> None:
    assert format_cell("2026-01-02T11:59:00Z", "date", now=NOW) == "60s"
    assert format_cell(0.1) == "0.1"
    assert format_cell(12345.678) == "12345.678"
    assert format_cell(None) == ""
    assert format_cell(True) == "true"


def test_tables_keep_their_natural_width_on_a_narrow_terminal() -> None:
    buf = io.StringIO()
    narrow = Console(file=buf, width=30, color_system=None)
    long_name = "a-very-long-trainjob-name-that-does-not-fit-in-thirty-columns"
    print_table(["NAME", "PHASE"], [[long_name, "Running"], ["x", ""]], console=narrow)
    lines = buf.getvalue().splitlines()
    assert lines[0].split() == ["NAME", "PHASE"]
    assert lines[1].split() == [long_name, "Running"]
    assert lines[2] == "x"
    assert all(line == line.rstrip() for line in lines)


def test_json_output_of_one_object_is_exactly_that_object(capsys: pytest.CaptureFixture[str]) -> None:
    print_objects([_tj()], OutputFormat.json, single=True)
    printed = json.loads(capsys.readouterr().out)
    assert printed["kind"] == "TrainJob"
    assert "managedFields" not in printed["metadata"]
    assert printed["spec"] == _tj()["spec"]


def test_several_objects_print_as_a_v1_list(capsys: pytest.CaptureFixture[str]) -> None:
    print_objects([_tj("a"), _tj("b")], OutputFormat.yaml)
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["apiVersion"] == "v1" and printed["kind"] == "List"
    assert [i["metadata"]["name"] for i in printed["items"]] == ["a", "b"]


def test_a_listing_prints_a_list_even_with_one_item(capsys: pytest.CaptureFixture[str]) -> None:
    print_objects([_tj("a")], OutputFormat.json, single=False)
    assert json.loads(capsys.readouterr().out)["kind"] == "List"


def test_name_output_prints_kind_group_and_name(capsys: pytest.CaptureFixture[str]) -> None:
    print_objects([_tj("a"), _tj("b")], OutputFormat.name)
    assert capsys.readouterr().out == "trainjob.recplane.io/a\ntrainjob.recplane.io/b\n"


@pytest.mark.parametrize(("text", "seconds"), [("90s", 90), ("5m", 300), ("1h30m", 5400), ("2", 2), ("500ms", 0.5)])
def test_durations_read_like_kubectls(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["abc", "5x", "m5", "5m junk", ""])
def test_a_bad_duration_says_how_to_write_one(text: str) -> None:
    with pytest.raises(typer.BadParameter, match="30s, 5m or 1h30m"):
        parse_duration(text)
