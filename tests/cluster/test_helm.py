"""The chart on a real API server: install, upgrade, and an operator that works with
exactly the permissions the chart grants.

Pods do not execute under kwok, so after `helm install` the operator runs on this
machine with a token of the chart's ServiceAccount and the command line of the
chart's Deployment: the examples applied to the watched namespace are reconciled
(their Jobs appear and their status is written) without one request refused.
"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from recplane.devcluster import DevCluster

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "recplane"
RELEASE = "rp-e2e"
FULLNAME = f"{RELEASE}-recplane"
RELEASE_NS = "rp-e2e-system"
WATCHED = "helm-e2e"
Kubectl = Callable[..., subprocess.CompletedProcess]
# How the API server's refusals show in the operator's log ("... is forbidden: User ...", "(403)").
REFUSED = re.compile(r"\bforbidden\b|\b403\b", re.IGNORECASE)


def _wait_for(what: str, probe: Callable[[], Any], timeout: float = 90.0) -> Any:
    """Poll `probe` until it returns something truthy; fail naming `what` after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(1.0)


def _json(kubectl: Kubectl, *args: str) -> Any:
    return json.loads(kubectl(*args, "-o", "json").stdout)


@pytest.fixture(scope="module")
def helm(cluster: DevCluster) -> Callable[..., subprocess.CompletedProcess[str]]:
    env = cluster.env()

    def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([str(cluster.helm), *args], capture_output=True, text=True, env=env, timeout=300)
        if check and proc.returncode != 0:
            raise AssertionError(f"helm {' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
        return proc

    return run


@pytest.fixture(scope="module")
def release(helm: Callable[..., Any], kubectl: Kubectl) -> Iterator[str]:
    kubectl("create", "namespace", WATCHED, check=False)
    helm(
        "install",
        RELEASE,
        str(CHART),
        "--namespace",
        RELEASE_NS,
        "--create-namespace",
        "--set",
        "store.minio.bundled=true",
        "--set",
        f"watchNamespaces={{{WATCHED}}}",
    )
    try:
        yield RELEASE
    finally:
        kubectl(
            "delete", "-n", WATCHED, "-f", str(ROOT / "examples"), "--ignore-not-found", "--wait=false", check=False
        )
        helm("uninstall", RELEASE, "--namespace", RELEASE_NS, check=False)
        kubectl("delete", "namespace", RELEASE_NS, WATCHED, "--wait=false", check=False)


def _operator_deployment(kubectl: Kubectl) -> dict[str, Any]:
    return _json(kubectl, "get", "deployment", f"{FULLNAME}-operator", "-n", RELEASE_NS)  # type: ignore[no-any-return]


def test_install_creates_crds_operator_rbac_peering_and_store_secrets(release: str, kubectl: Kubectl) -> None:
    crds = {c["metadata"]["name"] for c in _json(kubectl, "get", "crd")["items"]}
    for name in ("samplesets", "featuresets", "trainjobs", "modeldeployments"):
        assert f"{name}.recplane.io" in crds
    assert {"kopfpeerings.kopf.dev", "clusterkopfpeerings.kopf.dev"} <= crds

    deploy = _operator_deployment(kubectl)
    assert deploy["spec"]["replicas"] == 2
    assert deploy["spec"]["template"]["spec"]["serviceAccountName"] == FULLNAME
    # kwok plays the kubelet: the pods are scheduled and reported running.
    _wait_for(
        "2 operator pods to run",
        lambda: (
            len(
                [
                    p
                    for p in _json(
                        kubectl, "get", "pods", "-n", RELEASE_NS, "-l", "app.kubernetes.io/component=operator"
                    )["items"]
                    if p["status"].get("phase") == "Running"
                ]
            )
            == 2
        ),
    )

    kubectl("get", "role", f"{FULLNAME}-operator", "-n", WATCHED)
    kubectl("get", "rolebinding", f"{FULLNAME}-operator", "-n", WATCHED)
    assert kubectl("get", "clusterrole", f"{FULLNAME}-operator", check=False).returncode != 0
    kubectl("get", "kopfpeering", FULLNAME, "-n", WATCHED)
    workload = _json(kubectl, "get", "secret", "recplane-store", "-n", WATCHED)
    assert base64.b64decode(workload["data"]["RECPLANE_STORE"]).decode() == "s3://recplane"


def test_notes_tell_the_next_steps_for_this_release(release: str, helm: Callable[..., Any]) -> None:
    notes = helm("get", "notes", RELEASE, "-n", RELEASE_NS).stdout
    assert f"rollout status deployment/{FULLNAME}-operator" in notes
    assert f"kubectl apply -n {WATCHED} -f examples/" in notes
    assert f"recplane get -n {WATCHED}" in notes
    assert f"Watching:  {WATCHED}" in notes


@pytest.mark.parametrize(
    ("verb", "resource", "namespace", "allowed"),
    [
        ("create", "jobs.batch", WATCHED, True),
        ("patch", "trainjobs.recplane.io/status", WATCHED, True),
        ("create", "horizontalpodautoscalers.autoscaling", WATCHED, True),
        ("get", "secrets/recplane-store", WATCHED, True),
        ("get", "secrets/someone-elses", WATCHED, False),
        ("list", "secrets", WATCHED, False),
        ("create", "jobs.batch", "default", False),
        ("delete", "pods", WATCHED, False),
        ("create", "clusterrolebindings.rbac.authorization.k8s.io", "", False),
    ],
)
def test_the_service_account_gets_exactly_the_operators_permissions(
    release: str, kubectl: Kubectl, verb: str, resource: str, namespace: str, allowed: bool
) -> None:
    args = ["auth", "can-i", verb, resource, f"--as=system:serviceaccount:{RELEASE_NS}:{FULLNAME}"]
    args += ["-n", namespace] if namespace else []
    answer = kubectl(*args, check=False).stdout.strip()
    assert answer == ("yes" if allowed else "no"), f"{verb} {resource} in {namespace or 'the cluster'}: {answer}"


def test_upgrade_changes_a_value_and_keeps_the_store_credentials(
    release: str, helm: Callable[..., Any], kubectl: Kubectl
) -> None:
    before = _json(kubectl, "get", "secret", f"{FULLNAME}-store", "-n", RELEASE_NS)["data"]
    helm("upgrade", RELEASE, str(CHART), "-n", RELEASE_NS, "--reuse-values", "--set", "operator.replicas=3")
    assert _operator_deployment(kubectl)["spec"]["replicas"] == 3
    after = _json(kubectl, "get", "secret", f"{FULLNAME}-store", "-n", RELEASE_NS)["data"]
    assert after == before, "an upgrade must not rotate the bundled MinIO's credentials"
    workload = _json(kubectl, "get", "secret", "recplane-store", "-n", WATCHED)["data"]
    assert workload["RECPLANE_S3_SECRET_KEY"] == before["secretKey"]
    history = json.loads(helm("history", RELEASE, "-n", RELEASE_NS, "-o", "json").stdout)
    assert [h["revision"] for h in history] == [1, 2] and history[-1]["status"] == "deployed"


@pytest.fixture
def operator_as_service_account(
    release: str, cluster: DevCluster, kubectl: Kubectl, tmp_path: Path
) -> Iterator[subprocess.Popen[str]]:
    """`recplane operator run` on this machine, with the Deployment's arguments and a
    kubeconfig holding only a token of the chart's ServiceAccount."""
    token = kubectl("create", "token", FULLNAME, "-n", RELEASE_NS, "--duration=1h").stdout.strip()
    admin = yaml.safe_load(cluster.kubeconfig.read_text())
    kubeconfig = tmp_path / "operator-kubeconfig"
    kubeconfig.write_text(
        json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": admin["clusters"],
                "users": [{"name": "operator", "user": {"token": token}}],
                "contexts": [
                    {"name": "operator", "context": {"cluster": admin["clusters"][0]["name"], "user": "operator"}}
                ],
                "current-context": "operator",
            }
        )
    )
    args = _operator_deployment(kubectl)["spec"]["template"]["spec"]["containers"][0]["args"]
    # Same flags as in the pod, but no listening ports on the shared machine.
    args = [a for a in args if not a.startswith(("--metrics-port", "--health-port"))]
    env = {
        **os.environ,
        "KUBECONFIG": str(kubeconfig),
        # The operator reads step results from the store; an empty local one will do.
        "RECPLANE_STORE": str(tmp_path / "store"),
    }
    log = (tmp_path / "operator.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "recplane.cli.main", *args, "--metrics-port=0", "--health-port=0"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()


def test_operator_with_the_charts_permissions_reconciles_the_examples(
    operator_as_service_account: subprocess.Popen[str], kubectl: Kubectl, tmp_path: Path
) -> None:
    kubectl("apply", "-n", WATCHED, "-f", str(ROOT / "examples"))
    log = tmp_path / "operator.log"

    def sampleset_jobs() -> list[dict[str, Any]]:
        assert operator_as_service_account.poll() is None, f"the operator exited:\n{log.read_text()[-4000:]}"
        selector = "app.kubernetes.io/managed-by=recplane,recplane.io/sampleset=feed-events"
        return _json(kubectl, "get", "jobs", "-n", WATCHED, "-l", selector)["items"]  # type: ignore[no-any-return]

    (job, *_) = _wait_for("the SampleSet's Job", sampleset_jobs, timeout=120)
    assert job["metadata"]["ownerReferences"][0]["kind"] == "SampleSet"

    def featureset_conditions() -> list[dict[str, Any]]:
        fs = _json(kubectl, "get", "featureset", "feed-features", "-n", WATCHED)
        return fs.get("status", {}).get("conditions", [])  # type: ignore[no-any-return]

    conditions = _wait_for("the FeatureSet's status", featureset_conditions, timeout=60)
    ready = next(c for c in conditions if c["type"] == "Ready")
    assert ready["status"] != "True", "the FeatureSet cannot be Ready before its SampleSet"

    forbidden = [line for line in log.read_text().splitlines() if REFUSED.search(line)]
    assert not forbidden, "the chart's RBAC refused the operator:\n" + "\n".join(forbidden[:10])
