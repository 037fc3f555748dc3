"""The operator's RBAC: least privilege, generated from one place."""

from __future__ import annotations

import json

import yaml
from typer.testing import CliRunner

from recplane.cli.operator_cmd import app
from recplane.operator import peering, rbac


def test_no_wildcards_anywhere() -> None:
    for rule in rbac.RULES:
        for field in ("apiGroups", "resources", "verbs", "resourceNames"):
            assert "*" not in rule.get(field, []), rule


def test_secrets_only_by_name_and_only_read() -> None:
    secret_rules = [r for r in rbac.rules(store_secret="minio-creds") if "secrets" in r["resources"]]
    assert secret_rules == [
        {"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["minio-creds"], "verbs": ["get"]}
    ]


def test_pods_are_only_read_and_nothing_escalates() -> None:
    verbs = {(g, r): set(rule["verbs"]) for rule in rbac.RULES for g in rule["apiGroups"] for r in rule["resources"]}
    assert verbs[("", "pods")] == {"list", "watch"}
    forbidden = {"escalate", "bind", "impersonate", "deletecollection"}
    assert all(not (v & forbidden) for v in verbs.values())
    assert not any(g.startswith("rbac.") for g, _ in verbs)
    assert ("recplane.io", "samplesets") in verbs and "delete" not in verbs[("recplane.io", "samplesets")]


def test_namespaced_role_uses_namespaced_peering() -> None:
    role = rbac.role("team-a")
    assert role["kind"] == "Role" and role["metadata"]["namespace"] == "team-a"
    resources = {r for rule in role["rules"] for r in rule["resources"]}
    assert "kopfpeerings" in resources and "clusterkopfpeerings" not in resources
    assert rbac.cluster_role()["rules"] == rbac.RULES


def test_manifests_bind_the_role_to_the_service_account() -> None:
    sa, role, binding = rbac.manifests("recplane-system")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": "recplane-system"}
    ]


def test_peering_crds_keep_status_writable_by_plain_patches() -> None:
    for crd in peering.crds():
        version = crd["spec"]["versions"][0]
        assert "subresources" not in version  # kopf patches .status through the main resource
    assert peering.peering_object()["kind"] == "ClusterKopfPeering"
    assert peering.peering_object(namespace="team-a")["kind"] == "KopfPeering"


def test_the_cli_prints_the_same_rules_for_the_chart() -> None:
    result = CliRunner().invoke(app, ["manifests", "--namespace", "ops", "-o", "json"])
    assert result.exit_code == 0, result.output
    items = json.loads(result.output)["items"]
    role = next(i for i in items if i["kind"] == "ClusterRole")
    assert role["rules"] == rbac.RULES
    kinds = [i["kind"] for i in items]
    assert kinds.count("CustomResourceDefinition") == 2 and "ClusterKopfPeering" in kinds
    yaml_out = CliRunner().invoke(app, ["manifests", "--watch-namespace", "team-a"]).output
    assert any(d["kind"] == "Role" for d in yaml.safe_load_all(yaml_out))
