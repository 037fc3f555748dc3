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
    """A leader, then a second replica joining it (a rolling update, a rescheduled pod).

    kopf peering has no fencing: two replicas started at the very same moment may both act
    until each has seen the other's entry (well under a second); reconciles are idempotent and
    status writes conditional, so that converges without duplicates. What is guaranteed, and
    tested here, is that a replica joining a live leader never acts."""
    leader = env.operator("--priority=200", "--peering-lifetime=10", log_name="leader.log").start()
    standby = env.operator("--priority=100", "--peering-lifetime=10", log_name="standby.log")
    try:
        leader.wait_healthy()
        wait_for("the leader in the peering", lambda: peers(env) >= 1, 30)
        standby.start()
        standby.wait_healthy()
        wait_for("both replicas in the peering", lambda: peers(env) >= 2, 30)
        yield leader, standby
    finally:
        leader.stop()
        standby.stop()


def peers(env: OperatorEnvironment) -> int:
    return len(env.kubectl.json("get", "clusterkopfpeering", "recplane").get("status") or {})


def reconciles(op: OperatorProcess) -> float:
    return sum(v for k, v in op.metrics().items() if k.startswith("recplane_operator_reconciles_total"))


def sampleset(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "recplane.io/v1alpha1",
        "kind": "SampleSet",
        "metadata": {"name": name, "namespace": "op-security"},
        "spec": {"source": {"format": "synthetic"}},
    }


def status_of(env: OperatorEnvironment, name: str) -> Any:
    return env.kubectl.json("get", "ss", name, "-n", "op-security").get("status")


def test_a_standby_replica_never_acts_and_takes_over_when_the_leader_dies(env, replicas) -> None:
    leader, standby = replicas
    for name in ("first", "second", "third"):
        env.kubectl.apply(sampleset(name))
    wait_for("the leader to reconcile them", lambda: all(status_of(env, n) for n in ("first", "second", "third")), 30)
    assert reconciles(leader) > 0
    assert reconciles(standby) == 0  # paused in favour of the higher priority

    leader.kill()  # a crash: no goodbye, its peering entry expires after its lifetime (10 s here)
    env.kubectl.apply(sampleset("fourth"))
    wait_for("the standby to take over", lambda: status_of(env, "fourth"), 90)
    assert reconciles(standby) > 0
