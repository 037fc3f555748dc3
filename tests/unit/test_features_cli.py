"""`recplane features list|describe` and `recplane step featureset`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from recplane.api.featureset import FeatureSetSpec
from recplane.api.sampleset import SampleSetSpec
from recplane.cli.features import app
from recplane.data.catalogs import feed_features
from recplane.data.steps import materialize_featureset, materialize_sampleset
from recplane.store import LocalStore

runner = CliRunner()


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cli") / "store"
    store = LocalStore(root)
    spec = SampleSetSpec.model_validate(
        {"source": {"format": "synthetic", "synthetic": {"events": 10_000, "users": 500, "items": 2000}}}
    )
    materialize_sampleset(spec, store, "team-a", "feed")
    catalog = feed_features()
    catalog[2] = catalog[2].model_copy(update={"sensitive": True, "allowed_namespaces": ["team-a"]})
    materialize_featureset(FeatureSetSpec(sample_set_ref={"name": "feed"}, features=catalog), store, "team-a", "ff")
    return root


def test_list_shows_each_featureset_with_its_version(store_dir: Path) -> None:
    result = runner.invoke(app, ["list", "--store", str(store_dir), "-n", "team-a"])
    assert result.exit_code == 0, result.output
    header, row = result.stdout.strip().splitlines()
    assert header.split() == ["NAME", "VERSION", "SAMPLESET", "SAMPLESET-VERSION", "FEATURES", "CREATED"]
    assert row.split()[0] == "ff" and row.split()[2] == "feed" and row.split()[4] == "15"


def test_list_as_json_prints_only_the_data(store_dir: Path) -> None:
    result = runner.invoke(app, ["list", "--store", str(store_dir), "-n", "team-a", "-o", "json"])
    assert result.exit_code == 0
    [entry] = json.loads(result.stdout)
    store = LocalStore(store_dir)
    assert entry["version"] == store.latest("team-a", "featureset", "ff").version  # type: ignore[union-attr]
    assert entry["features"] == 15


def test_describe_prints_the_catalog_with_statistics(store_dir: Path) -> None:
    result = runner.invoke(app, ["describe", "ff", "--store", str(store_dir), "-n", "team-a"])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].startswith("FeatureSet team-a/ff")
    rows = {line.split()[0]: line for line in lines[2:]}
    assert set(rows) == {f.name for f in feed_features()}
    assert "vocabulary" in rows["user_id"] and "%" in rows["network"]
    assert "yes: team-a" in rows["author_id"]


def test_describe_as_yaml_has_ids_and_stats_per_feature(store_dir: Path) -> None:
    result = runner.invoke(app, ["describe", "ff", "--store", str(store_dir), "-n", "team-a", "-o", "yaml"])
    doc = yaml.safe_load(result.stdout)
    features = {f["name"]: f for f in doc["features"]}
    assert features["topic"]["numEmbeddings"] == 34
    assert features["network"]["stats"]["nullRate"] > 0
    assert features["item_age_bucket"]["boundaries"] == sorted(features["item_age_bucket"]["boundaries"])


def test_describe_of_an_unknown_featureset_says_where_it_looked(store_dir: Path) -> None:
    result = runner.invoke(app, ["describe", "nope", "--store", str(store_dir), "-n", "team-a"])
    assert result.exit_code == 3
    assert "no FeatureSet team-a/nope" in result.stderr and str(store_dir) in result.stderr


def _featureset_step(
    tmp_path: Path, store_dir: Path, name: str, namespace: str, features: list[dict]
) -> subprocess.CompletedProcess:
    doc = {
        "apiVersion": "recplane.io/v1alpha1",
        "kind": "FeatureSet",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"sampleSetRef": {"name": "feed"}, "features": features},
    }
    spec_file = tmp_path / "fs.yaml"
    spec_file.write_text(yaml.safe_dump(doc))
    return subprocess.run(
        [sys.executable, "-m", "recplane.cli.main", "step", "featureset", "--spec", str(spec_file)],
        capture_output=True,
        text=True,
        env={**os.environ, "RECPLANE_STORE": str(store_dir)},
        timeout=120,
    )


def test_the_featureset_step_prints_the_manifest(tmp_path: Path, store_dir: Path) -> None:
    features = [f.to_wire() for f in feed_features()[:4]]
    proc = _featureset_step(tmp_path, store_dir, "step-ff", "team-a", features)
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads(proc.stdout.strip().splitlines()[-1])
    assert manifest["kind"] == "featureset" and len(manifest["status"]["features"]) == 4
    assert manifest["status"]["specUri"].endswith("/feature_spec.json")


def test_the_featureset_step_refuses_a_sensitive_feature_from_another_namespace(
    tmp_path: Path, store_dir: Path
) -> None:
    secret = {**feed_features()[0].to_wire(), "sensitive": True, "allowedNamespaces": ["finance"]}
    proc = _featureset_step(tmp_path, store_dir, "secret-ff", "team-a", [secret])
    assert proc.returncode == 1
    assert "user_id" in proc.stderr and "not allowed in namespace 'team-a'" in proc.stderr
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert LocalStore(store_dir).versions("team-a", "featureset", "secret-ff") == []


def test_the_sensitivity_check_needs_no_torch(tmp_path: Path) -> None:
    code = (
        "import sys; from recplane.data.steps import check_sensitive; import recplane.data.features\n"
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert proc.returncode == 0, proc.stderr
