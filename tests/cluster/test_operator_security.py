"""What the operator may do (RBAC, checked with `kubectl auth can-i`) and leader election."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from minio import Minio

from recplane.operator import rbac
from recplane.operator.testing import OPERATOR_NAMESPACE, Kubectl, OperatorEnvironment, OperatorProcess, wait_for

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]
BUCKET = "recplane-security"
SA = f"system:serviceaccount:{OPERATOR_NAMESPACE}:{rbac.OPERATOR_NAME}"


@pytest.fixture(scope="module")
def env(cluster: Any, tmp_path_factory: pytest.TempPathFactory) -> OperatorEnvironment:
    minio = Minio(cluster.minio_endpoint, cluster.minio_access_key, cluster.minio_secret_key, secure=False)
    if not minio.bucket_exists(BUCKET):
        minio.make_bucket(BUCKET)
    settings = {
        "RECPLANE_STORE": f"s3://{BUCKET}",
        "RECPLANE_S3_ENDPOINT": cluster.minio_endpoint,
        "RECPLANE_S3_ACCESS_KEY": cluster.minio_access_key,
        "RECPLANE_S3_SECRET_KEY": cluster.minio_secret_key,
        "RECPLANE_S3_SECURE": "false",
    }
    environment = OperatorEnvironment(
        Kubectl(cluster.kubectl, cluster.kubeconfig, cluster.env()), settings, tmp_path_factory.mktemp("security")
    )
    environment.install(ROOT / "crds")
    environment.namespace("op-security")
    return environment


def can(env: OperatorEnvironment, verb: str, resource: str, *args: str) -> bool:
    out = env.kubectl("auth", "can-i", verb, resource, f"--as={SA}", *args, check=False).stdout.strip()
    return out == "yes"


@pytest.mark.parametrize(
    ("verb", "resource", "args"),
    [
        ("watch", "samplesets.recplane.io", ["-A"]),
        ("patch", "trainjobs.recplane.io", ["--subresource=status", "-n", "op-security"]),
        ("create", "jobs.batch", ["-n", "op-security"]),
        ("delete", "jobs.batch", ["-n", "op-security"]),
        ("patch", "deployments.apps", ["-n", "op-security"]),
        ("create", "horizontalpodautoscalers.autoscaling", ["-n", "op-security"]),
        ("create", "configmaps", ["-n", "op-security"]),
        ("list", "pods", ["-n", "op-security"]),
        ("create", "events", ["-n", "op-security"]),
        ("get", "secrets/recplane-store", ["-n", "op-security"]),
        ("patch", "clusterkopfpeerings.kopf.dev/recplane", []),
    ],
)
def test_the_operator_may_do_what_it_needs(env: OperatorEnvironment, verb: str, resource: str, args: list[str]) -> None:
    assert can(env, verb, resource, *args)


@pytest.mark.parametrize(
    ("verb", "resource", "args"),
    [
        ("get", "secrets/other-credentials", ["-n", "op-security"]),
        ("list", "secrets", ["-n", "op-security"]),
        ("create", "secrets", ["-n", "op-security"]),
        ("create", "pods", ["-n", "op-security"]),
        ("create", "pods/exec", ["-n", "op-security"]),
        ("delete", "pods", ["-n", "op-security"]),
        ("delete", "configmaps", ["-n", "op-security"]),
        ("get", "configmaps", ["-n", "op-security"]),
        ("delete", "samplesets.recplane.io", ["-n", "op-security"]),
        ("create", "modeldeployments.recplane.io", ["-n", "op-security"]),
        ("update", "customresourcedefinitions.apiextensions.k8s.io", []),
        ("create", "clusterrolebindings.rbac.authorization.k8s.io", []),
        ("escalate", "clusterroles.rbac.authorization.k8s.io", []),
        ("impersonate", "serviceaccounts", ["-n", "op-security"]),
        ("patch", "nodes", []),
        ("create", "namespaces", []),
        ("patch", "clusterkopfpeerings.kopf.dev/someone-else", []),
        ("get", "leases.coordination.k8s.io", ["-n", "kube-system"]),
    ],
)
def test_the_operator_may_not_do_what_it_does_not_need(
    env: OperatorEnvironment, verb: str, resource: str, args: list[str]
) -> None:
    assert not can(env, verb, resource, *args)


@pytest.fixture
def replicas(env: OperatorEnvironment) -> Iterator[tuple[OperatorProcess, OperatorProcess]]:
    leader = env.operator("--priority=200", "--peering-lifetime=10", log_name="leader.log").start()
    standby = env.operator("--priority=100", "--peering-lifetime=10", log_name="standby.log").start()
    try:
        leader.wait_healthy()
        standby.wait_healthy()
        yield leader, standby
    finally:
        leader.stop()
        standby.stop()


def reconciles(op: OperatorProcess) -> float:
    return sum(v for k, v in op.metrics().items() if k.startswith("recplane_operator_reconciles_total"))


def test_two_replicas_never_act_at_once_and_the_standby_takes_over(env, replicas) -> None:
    leader, standby = replicas
    ss = {
        "apiVersion": "recplane.io/v1alpha1",
        "kind": "SampleSet",
        "metadata": {"name": "first", "namespace": "op-security"},
    }
    ss["spec"] = {"source": {"format": "synthetic"}}
    env.kubectl.apply(ss)
    wait_for("the leader to reconcile", lambda: reconciles(leader) > 0, 30)
    wait_for("a status", lambda: env.kubectl.json("get", "ss", "first", "-n", "op-security").get("status"), 30)
    assert reconciles(standby) == 0  # paused in favour of the higher priority

    leader.stop()  # a rolling update: the leader leaves the peering on its way out
    second = {**ss, "metadata": {"name": "second", "namespace": "op-security"}}
    env.kubectl.apply(second)
    wait_for("the standby to take over", lambda: reconciles(standby) > 0, 60)
    wait_for(
        "the second SampleSet reconciled",
        lambda: env.kubectl.json("get", "ss", "second", "-n", "op-security").get("status"),
        30,
    )
