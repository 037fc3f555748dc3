"""The Helm chart renders what an operator of a cluster relies on.

Rendered with the real `helm` binary (built with the dev-cluster binaries):
`helm lint`, golden files of `helm template` for the two store set-ups
(RECPLANE_UPDATE_GOLDEN=1 rewrites them), values refused with the key named,
restricted pods, RBAC from the operator's own rules, and an operator command
line that the `recplane` CLI accepts.
"""

from __future__ import annotations

import os
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
import typer.main
import yaml

from recplane.cli.main import app
from recplane.devcluster import DevClusterError, ensure_binaries
from recplane.devcluster.binaries import find_binaries
from recplane.operator import rbac

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "recplane"
GOLDEN = ROOT / "tests" / "golden" / "helm"
KUBE_VERSION = "1.35.0"
SCENARIOS = {
    "bundled-minio": CHART / "ci" / "bundled-minio-values.yaml",
    "external-store": CHART / "ci" / "external-store-values.yaml",
}
Objects = list[dict[str, Any]]


@pytest.fixture(scope="module")
def helm() -> Path:
    try:
        return find_binaries()["helm"]
    except DevClusterError:
        pass
    try:
        return ensure_binaries()["helm"]
    except DevClusterError as exc:
        pytest.fail(str(exc), pytrace=False)


def run_helm(helm: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # Rendering never talks to a cluster: no kubeconfig of the caller's leaks in.
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    return subprocess.run([str(helm), *args], capture_output=True, text=True, env=env, timeout=120)


def template(helm: Path, *args: str, release: str = "recplane", namespace: str = "recplane") -> str:
    proc = run_helm(helm, "template", release, str(CHART), "-n", namespace, "--kube-version", KUBE_VERSION, *args)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def objects(text: str) -> Objects:
    return [d for d in yaml.safe_load_all(text) if d]


def render(helm: Path, scenario: str, *sets: str) -> Objects:
    extra = [a for s in sets for a in ("--set", s)]
    return objects(template(helm, "-f", str(SCENARIOS[scenario]), *extra))


def find(objs: Objects, kind: str, name_part: str = "") -> list[dict[str, Any]]:
    return [o for o in objs if o["kind"] == kind and name_part in o["metadata"]["name"]]


def refused(helm: Path, *sets: str) -> str:
    extra = [a for s in sets for a in ("--set", s)]
    proc = run_helm(helm, "template", "recplane", str(CHART), "--kube-version", KUBE_VERSION, *extra)
    assert proc.returncode != 0, f"helm accepted {sets}"
    return proc.stderr


# ------------------------------------------------------------------------------------ lint, golden
@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_helm_lint_passes(helm: Path, scenario: str) -> None:
    proc = run_helm(
        helm, "lint", "--strict", str(CHART), "-f", str(SCENARIOS[scenario]), "--kube-version", KUBE_VERSION
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _normalise(text: str) -> str:
    """Generated credentials differ on every render; everything else must not."""
    docs = objects(text)
    for doc in docs:
        if doc["kind"] == "Secret":
            doc["data"] = {k: "<generated>" if "KEY" in k.upper() else v for k, v in doc.get("data", {}).items()}
    return yaml.safe_dump_all(docs, sort_keys=False, width=120)


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_rendered_chart_matches_golden_file(helm: Path, scenario: str) -> None:
    rendered = _normalise(template(helm, "--skip-crds", "-f", str(SCENARIOS[scenario])))
    golden = GOLDEN / f"{scenario}.yaml"
    if os.environ.get("RECPLANE_UPDATE_GOLDEN") == "1":
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(rendered)
    assert golden.exists(), f"{golden} is missing: run with RECPLANE_UPDATE_GOLDEN=1 and review the diff"
    assert rendered == golden.read_text(), (
        f"helm template output differs from {golden.relative_to(ROOT)}; if the change is intended, "
        "rerun with RECPLANE_UPDATE_GOLDEN=1 and review the diff"
    )


def test_chart_version_follows_the_package() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert chart["appVersion"] == project["version"]


# ---------------------------------------------------------------------------- values and refusals
def test_a_release_without_a_store_is_refused_with_both_fixes_named(helm: Path) -> None:
    err = refused(helm)
    assert "store.endpoint" in err and "store.existingSecret" in err and "store.minio.bundled=true" in err


def test_an_external_endpoint_needs_a_credentials_secret(helm: Path) -> None:
    err = refused(helm, "store.endpoint=minio.storage.svc:9000")
    assert "store.existingSecret is required" in err and "accessKey and secretKey" in err


def test_bundled_and_external_store_exclude_each_other(helm: Path) -> None:
    err = refused(helm, "store.minio.bundled=true", "store.endpoint=minio:9000", "store.existingSecret=s3")
    assert "exclude each other" in err


@pytest.mark.parametrize(
    ("setting", "named"),
    [
        ("operator.replica=3", "replica"),
        ("operator.replicas=0", "replicas"),
        ("operator.logLevel=chatty", "logLevel"),
        ("store.bucket=Bad_Bucket", "bucket"),
        ("watchNamespaces[0]=Team_A", "watchNamespaces"),
        ("metrics.serviceMonitor.interval=often", "interval"),
    ],
)
def test_values_schema_refuses_bad_values_and_names_the_key(helm: Path, setting: str, named: str) -> None:
    err = refused(helm, "store.minio.bundled=true", setting)
    assert "values don't meet the specifications of the schema" in err
    assert named in err


# ------------------------------------------------------------------------------------------ objects
def test_operator_runs_two_replicas_with_leader_election_and_a_disruption_budget(helm: Path) -> None:
    objs = render(helm, "bundled-minio")
    (deploy,) = find(objs, "Deployment", "operator")
    assert deploy["spec"]["replicas"] == 2
    args = deploy["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--peering=recplane" in args
    (pdb,) = find(objs, "PodDisruptionBudget")
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"] == deploy["spec"]["selector"]["matchLabels"]


def _operator_command() -> Any:
    command = typer.main.get_command(app)
    for word in ("operator", "run"):
        subcommands = getattr(command, "commands", None)
        assert subcommands and word in subcommands, f"`recplane ... {word}` is not a command"
        command = subcommands[word]
    return command


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_operator_arguments_are_options_the_cli_accepts(helm: Path, scenario: str) -> None:
    (deploy,) = find(render(helm, scenario), "Deployment", "operator")
    args = deploy["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[:2] == ["operator", "run"]
    accepted = {opt for param in _operator_command().params for opt in param.opts}
    for arg in args[2:]:
        assert arg.split("=")[0] in accepted, f"`recplane operator run` has no option {arg.split('=')[0]}"


def test_store_settings_come_from_secrets_never_from_literal_credentials(helm: Path) -> None:
    for scenario in SCENARIOS:
        (deploy,) = find(render(helm, scenario), "Deployment", "operator")
        env = {e["name"]: e for e in deploy["spec"]["template"]["spec"]["containers"][0]["env"]}
        for key in ("RECPLANE_S3_ACCESS_KEY", "RECPLANE_S3_SECRET_KEY"):
            assert "value" not in env[key]
            assert env[key]["valueFrom"]["secretKeyRef"]["key"] in ("accessKey", "secretKey")
    (deploy,) = find(render(helm, "external-store"), "Deployment", "operator")
    env = {e["name"]: e for e in deploy["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["RECPLANE_STORE"]["value"] == "s3://feeds"
    assert env["RECPLANE_S3_ENDPOINT"]["value"] == "minio.storage.svc:9000"
    assert env["RECPLANE_S3_ACCESS_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "recplane-s3"


def test_bundled_minio_shares_generated_credentials_with_operator_and_workload_namespaces(helm: Path) -> None:
    objs = render(helm, "bundled-minio", "store.workloadNamespaces={default,team-a}")
    (creds,) = [s for s in find(objs, "Secret") if s["metadata"]["namespace"] == "recplane"]
    assert len(creds["data"]["secretKey"]) >= 40
    workload = [s for s in find(objs, "Secret") if s["metadata"]["namespace"] != "recplane"]
    assert sorted(s["metadata"]["namespace"] for s in workload) == ["default", "team-a"]
    for secret in workload:
        assert secret["metadata"]["name"] == "recplane-store"
        assert secret["data"]["RECPLANE_S3_ACCESS_KEY"] == creds["data"]["accessKey"]
        assert secret["data"]["RECPLANE_S3_SECRET_KEY"] == creds["data"]["secretKey"]
    (minio,) = find(objs, "Deployment", "minio")
    env = {e["name"]: e for e in minio["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["MINIO_ROOT_USER"]["valueFrom"]["secretKeyRef"]["name"] == creds["metadata"]["name"]
    assert find(objs, "PersistentVolumeClaim", "minio")


def test_no_minio_is_rendered_for_an_external_store(helm: Path) -> None:
    objs = render(helm, "external-store")
    assert not find(objs, "Deployment", "minio") and not find(objs, "PersistentVolumeClaim")
    assert not find(objs, "Secret"), "the chart must not write credentials it does not own"


def _pod_specs(objs: Objects) -> list[tuple[str, dict[str, Any]]]:
    return [(o["metadata"]["name"], o["spec"]["template"]["spec"]) for o in objs if o["kind"] == "Deployment"]


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_every_pod_meets_the_restricted_pod_security_standard(helm: Path, scenario: str) -> None:
    pods = _pod_specs(render(helm, scenario))
    assert pods
    for name, pod in pods:
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", name
        assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC"), name
        assert all("hostPath" not in v for v in pod.get("volumes", [])), name
        for c in pod["containers"]:
            ctx = c["securityContext"]
            assert ctx["allowPrivilegeEscalation"] is False, f"{name}/{c['name']}"
            assert ctx["capabilities"]["drop"] == ["ALL"], f"{name}/{c['name']}"
            assert ctx["readOnlyRootFilesystem"] is True, f"{name}/{c['name']}"
            assert not ctx.get("privileged"), f"{name}/{c['name']}"
            assert c["resources"]["limits"] and c["resources"]["requests"], f"{name}/{c['name']} has no resources"


def test_service_monitor_is_opt_in_and_scrapes_the_metrics_service(helm: Path) -> None:
    assert not find(render(helm, "bundled-minio"), "ServiceMonitor")
    objs = render(helm, "external-store")
    (monitor,) = find(objs, "ServiceMonitor")
    (service,) = find(objs, "Service", "metrics")
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    selector = monitor["spec"]["selector"]["matchLabels"]
    assert selector.items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] == service["spec"]["ports"][0]["name"]
    (deploy,) = find(objs, "Deployment", "operator")
    ports = {p["name"] for p in deploy["spec"]["template"]["spec"]["containers"][0]["ports"]}
    assert service["spec"]["ports"][0]["targetPort"] in ports


# ----------------------------------------------------------------------------------------------- RBAC
def _bound_rules(objs: Objects, kind: str) -> dict[str, list[dict[str, Any]]]:
    """Rules of each Role/ClusterRole bound to the operator's ServiceAccount, by namespace ("" = cluster)."""
    (sa,) = find(objs, "ServiceAccount")
    roles = {(o["metadata"].get("namespace", ""), o["metadata"]["name"]): o for o in objs if o["kind"] == kind}
    out: dict[str, list[dict[str, Any]]] = {}
    for binding in (o for o in objs if o["kind"] == f"{kind}Binding"):
        assert {"kind": "ServiceAccount", "name": sa["metadata"]["name"], "namespace": "recplane"} in binding[
            "subjects"
        ]
        namespace = binding["metadata"].get("namespace", "")
        role = roles[(namespace, binding["roleRef"]["name"])]
        out.setdefault(namespace, []).extend(role["rules"])
    return out


def test_all_namespaces_mode_binds_the_operators_own_rules_cluster_wide(helm: Path) -> None:
    objs = render(helm, "bundled-minio", "store.workloadSecretName=feed-store")
    assert not find(objs, "Role")
    assert _bound_rules(objs, "ClusterRole") == {"": rbac.rules("feed-store", "recplane", clusterwide=True)}
    (peering,) = find(objs, "ClusterKopfPeering")
    (deploy,) = find(objs, "Deployment", "operator")
    assert f"--peering={peering['metadata']['name']}" in deploy["spec"]["template"]["spec"]["containers"][0]["args"]


def test_watched_namespaces_get_roles_and_nothing_cluster_wide(helm: Path) -> None:
    objs = render(helm, "external-store")
    assert not find(objs, "ClusterRole") and not find(objs, "ClusterRoleBinding")
    per_namespace = _bound_rules(objs, "Role")
    assert sorted(per_namespace) == ["team-a", "team-b"]
    for rules in per_namespace.values():
        assert rules == rbac.rules("recplane-store", "recplane", clusterwide=False)
    assert sorted(p["metadata"]["namespace"] for p in find(objs, "KopfPeering")) == ["team-a", "team-b"]
    (deploy,) = find(objs, "Deployment", "operator")
    args = deploy["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--namespace=team-a" in args and "--namespace=team-b" in args and "--all-namespaces" not in args


def test_pod_monitor_selects_the_serving_pods_the_operator_builds(helm: Path) -> None:
    from recplane.operator.builders.serving import ModelRef, build_serving
    from recplane.operator.config import OperatorConfig

    objs = render(helm, "external-store")
    (monitor,) = find(objs, "PodMonitor")
    md = {"metadata": {"name": "feed-ranker", "namespace": "team-a"}, "spec": {"model": {"trainJobRef": {"name": "x"}}}}
    plan = build_serving(md, OperatorConfig(), ModelRef(version="v1", uri="s3://feeds/team-a/trainjob/x/v1"))
    (deploy,) = [o for o in plan.apply if o["kind"] == "Deployment"]
    pod = deploy["spec"]["template"]
    selector = monitor["spec"]["selector"]
    assert selector["matchLabels"].items() <= pod["metadata"]["labels"].items()
    for expr in selector["matchExpressions"]:
        assert pod["metadata"]["labels"][expr["key"]] in expr["values"]
    ports = {p["name"] for c in pod["spec"]["containers"] for p in c.get("ports", [])}
    assert ports & {e["port"] for e in monitor["spec"]["podMetricsEndpoints"]}
    assert monitor["spec"]["namespaceSelector"]["matchNames"] == ["team-a", "team-b"]
    assert not find(render(helm, "bundled-minio"), "PodMonitor")
