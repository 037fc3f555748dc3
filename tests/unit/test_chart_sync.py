"""The chart's generated files (CRDs, RBAC rules) match their single sources.

`hack/sync-chart.py` writes them; `--check` fails when the pydantic models,
kopf's peering CRDs or the operator's RBAC rules changed without a re-sync.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from recplane.api import crd
from recplane.operator import rbac

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "recplane"
SCRIPT = ROOT / "hack" / "sync-chart.py"


def sync(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=120)


def test_chart_generated_files_are_up_to_date() -> None:
    proc = sync("--check")
    assert proc.returncode == 0, proc.stderr


def test_chart_crds_are_exactly_the_generated_crds() -> None:
    for name, content in crd.generated_files().items():
        assert (CHART / "crds" / name).read_text() == content, f"helm/recplane/crds/{name} differs from the models"


def test_chart_installs_the_peering_crds_leader_election_needs() -> None:
    kinds = {yaml.safe_load(p.read_text())["spec"]["names"]["kind"] for p in (CHART / "crds").glob("kopf.dev_*")}
    assert kinds == {"ClusterKopfPeering", "KopfPeering"}


def test_rbac_rules_file_holds_the_operators_rules() -> None:
    data = yaml.safe_load((CHART / "files" / "rbac-rules.yaml").read_text())
    assert data["clusterwide"] == rbac.rules("__STORE_SECRET__", "__PEERING__", clusterwide=True)
    assert data["namespaced"] == rbac.rules("__STORE_SECRET__", "__PEERING__", clusterwide=False)


def test_a_stale_or_extra_file_fails_the_check_and_a_sync_repairs_it(tmp_path: Path) -> None:
    chart = tmp_path / "recplane"
    shutil.copytree(CHART, chart)
    crd_file = chart / "crds" / "recplane.io_trainjobs.yaml"
    crd_file.write_text(crd_file.read_text().replace("maxRestarts", "maxRetries"))
    rules = chart / "files" / "rbac-rules.yaml"
    rules.write_text(rules.read_text().replace("- watch\n", "- '*'\n", 1))
    (chart / "crds" / "old.yaml").write_text("{}\n")

    proc = sync("--check", "--chart", str(chart))
    assert proc.returncode == 1
    for name in ("crds/recplane.io_trainjobs.yaml", "files/rbac-rules.yaml", "crds/old.yaml"):
        assert name in proc.stderr
    assert "run hack/sync-chart.py" in proc.stderr

    assert sync("--chart", str(chart)).returncode == 0
    assert sync("--check", "--chart", str(chart)).returncode == 0
    assert not (chart / "crds" / "old.yaml").exists()
