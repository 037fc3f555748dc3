"""The docs stay true: the CRD reference is generated from the models, the
dashboard plots metrics the code exports, and the commands, chart values and files
the pages name exist."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path
from typing import Any

import pytest
import typer.main
import yaml
from typer.testing import CliRunner

from recplane.api import KINDS, crd, docs
from recplane.cli.main import app

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
REFERENCE = DOCS / "crd-reference.md"
DASHBOARD = DOCS / "grafana" / "recplane-dashboard.json"
PAGES = sorted(DOCS.glob("*.md"))


# ---------------------------------------------------------------------------------- CRD reference
def test_crd_reference_is_up_to_date_with_the_models() -> None:
    assert not docs.stale(REFERENCE), "docs/crd-reference.md is stale: run `recplane crds docs`"


def _fields(node: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for name, prop in (node.get("properties") or {}).items():
        out.append((name, prop))
        out.extend(_fields(prop))
    if isinstance(node.get("items"), dict):
        out.extend(_fields(node["items"]))
    return out


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_reference_documents_every_field_rule_and_default(kind: str) -> None:
    page = docs.render()
    for part in (KINDS[kind].spec, KINDS[kind].status):
        schema = crd.openapi_schema(part)
        for name, prop in _fields(schema):
            assert f"| `{name}` |" in page, f"{kind}: field {name} is missing from the reference"
            if "description" in prop:
                assert " ".join(prop["description"].split()).replace("|", "\\|") in page
        for _, node in [("", schema), *_fields(schema)]:
            for rule in node.get("x-kubernetes-validations", []):
                assert rule["message"] in page and f"`{rule['rule']}`" in page


def test_reference_shows_type_default_and_constraints_of_a_field() -> None:
    page = docs.render()
    row = next(line for line in page.splitlines() if line.startswith("| `workers` |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1:5] == ["integer", "", "`1`", "≥ 1; ≤ 1024"]
    assert cells[5] == "Worker pods."
    group = next(line for line in page.splitlines() if line.startswith("| `group` |"))
    assert "one of `id`, `reader`, `author`, `context`, `environment`, `material`" in group


def test_links_to_nested_objects_point_at_their_sections() -> None:
    page = docs.render()
    anchors = set(re.findall(r'<a id="([^"]+)"></a>', page))
    links = set(re.findall(r"\]\(#([^)]+)\)", page))
    assert links and links <= anchors, f"dangling links: {sorted(links - anchors)}"


def test_crds_docs_command_writes_and_checks_the_page(tmp_path: Path) -> None:
    out = tmp_path / "ref.md"
    runner = CliRunner()
    assert runner.invoke(app, ["crds", "docs", "--check", "--out", str(out)]).exit_code == 1
    assert runner.invoke(app, ["crds", "docs", "--out", str(out)]).exit_code == 0
    assert out.read_text() == docs.render()
    assert runner.invoke(app, ["crds", "docs", "--check", "--out", str(out)]).exit_code == 0
    out.write_text(out.read_text().replace("Worker pods.", "Workers."))
    result = runner.invoke(app, ["crds", "docs", "--check", "--out", str(out)])
    assert result.exit_code == 1 and "recplane crds docs" in result.output


# --------------------------------------------------------------------------------------- dashboard
_METRIC_CLASSES = {"Counter", "Gauge", "Histogram", "Summary", "GaugeMetricFamily", "CounterMetricFamily"}


def _string(node: ast.expr, constants: dict[str, str]) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        parts = []
        for value in node.values:
            if isinstance(value, ast.FormattedValue) and isinstance(value.value, ast.Name):
                parts.append(constants.get(value.value.id))
            else:
                parts.append(_string(value, constants))  # type: ignore[arg-type]
        return None if None in parts else "".join(parts)  # type: ignore[arg-type]
    return None


def exported_metrics() -> dict[str, set[str]]:
    """Metric family -> the series names Prometheus sees, for every metric the code creates."""
    families: dict[str, set[str]] = {}
    for folder in ("operator", "trainer", "serving", "recplane"):
        for path in (ROOT / folder).rglob("*.py"):
            if "recplane/operator" in str(path) or "recplane/trainer" in str(path) or "recplane/serving" in str(path):
                continue
            tree = ast.parse(path.read_text())
            constants = {
                t.id: n.value.value
                for n in tree.body
                if isinstance(n, ast.Assign) and isinstance(n.value, ast.Constant) and isinstance(n.value.value, str)
                for t in n.targets
                if isinstance(t, ast.Name)
            }
            for call in (n for n in ast.walk(tree) if isinstance(n, ast.Call)):
                cls = call.func.id if isinstance(call.func, ast.Name) else getattr(call.func, "attr", "")
                if cls not in _METRIC_CLASSES or not call.args:
                    continue
                name = _string(call.args[0], constants)
                if not name or not name.startswith("recplane_"):
                    continue
                if cls.startswith("Counter"):
                    base = name.removesuffix("_total")
                    families[base] = {f"{base}_total"}
                elif cls in ("Histogram", "Summary"):
                    families[name] = {f"{name}_{s}" for s in ("bucket", "sum", "count")}
                else:
                    families[name] = {name}
    return families


def _dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text())  # type: ignore[no-any-return]


def _exprs() -> list[str]:
    return [t["expr"] for p in _dashboard()["panels"] for t in p.get("targets", [])]


def test_dashboard_queries_only_metrics_the_code_exports() -> None:
    series = set().union(*exported_metrics().values())
    used = {m for e in _exprs() for m in re.findall(r"\brecplane_[a-z0-9_]+", e)}
    assert used, "the dashboard queries no recplane metric"
    assert used <= series, f"the dashboard queries metrics nothing exports: {sorted(used - series)}"


def test_dashboard_plots_every_recplane_metric() -> None:
    text = "\n".join(_exprs())
    missing = [family for family, names in exported_metrics().items() if not any(n in text for n in names)]
    assert not missing, f"add panels for {missing} to {DASHBOARD.relative_to(ROOT)}"
    for component in ("operator", "train", "serving"):
        assert f"recplane_{component}_" in text


def test_dashboard_is_importable() -> None:
    dash = _dashboard()
    assert dash["uid"] and dash["title"]
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in dash["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
            assert panel["targets"] and panel["description"], panel["title"]


# -------------------------------------------------------------------------- pages: commands, values
def _code_blocks(page: Path) -> list[str]:
    return re.findall(r"```(?:bash|yaml)?\n(.*?)```", page.read_text(), flags=re.S)


def _command_lines(page: Path, program: str) -> list[str]:
    lines = []
    for block in _code_blocks(page):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("#")[0].strip()
            if line.startswith(f"{program} "):
                lines.append(line)
    return lines


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_recplane_commands_in_the_docs_exist(page: Path) -> None:
    for line in _command_lines(page, "recplane"):
        command = typer.main.get_command(app)
        for word in line.split()[1:]:
            subcommands = getattr(command, "commands", None)
            if word.startswith("-") or subcommands is None:
                break
            assert word in subcommands, f"{page.name}: `{line}` names no command {word!r}"
            command = subcommands[word]
        assert getattr(command, "commands", None) is None, f"{page.name}: `{line}` stops at a command group"


def _has_key(values: dict[str, Any], dotted: str) -> bool:
    node: Any = values
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def test_helm_values_set_in_the_docs_exist_in_the_chart() -> None:
    values = yaml.safe_load((ROOT / "helm" / "recplane" / "values.yaml").read_text())
    sets = [
        s.strip("'\"").split("=")[0]
        for page in PAGES
        for line in _command_lines(page, "helm")
        for s in re.findall(r"--set\s+(\S+)", line)
    ]
    assert sets
    for key in sets:
        assert _has_key(values, key), f"`--set {key}` in the docs is not a value of the chart"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_files_the_docs_link_or_name_exist(page: Path) -> None:
    text = page.read_text()
    prose = re.sub(r"`[^`\n]*`", "", text)  # code spans hold patterns, not links
    for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", prose):
        assert (page.parent / target).exists(), f"{page.name} links to missing {target}"
    for named in re.findall(r"`((?:bench|images|helm|examples|hack)/[\w./-]+)`", text):
        assert (ROOT / named).exists(), f"{page.name} names missing {named}"
