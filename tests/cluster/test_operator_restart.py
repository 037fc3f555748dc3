"""Restart safety: the operator is killed at random points while 50 resources reconcile.

Children have deterministic names and owner references, restarts are counted from
the cluster, and every reconcile starts from what is there, so after 20 kills every
resource converges with exactly the children it should have: none twice, none orphaned.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from minio import Minio

from recplane.operator.testing import Kubectl, OperatorEnvironment, publish, wait_for
from recplane.store import open_store

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]
BUCKET = "recplane-restarts"
NS = "op-restarts"
API = "recplane.io/v1alpha1"
CHAINS = 10  # each: SampleSet, FeatureSet, TrainJob and two ModelDeployments = 50 resources
KILLS = 20


@pytest.fixture(scope="module")
def env(cluster: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorEnvironment]:
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
        Kubectl(cluster.kubectl, cluster.kubeconfig, cluster.env()), settings, tmp_path_factory.mktemp("restarts")
    )
    environment.install(ROOT / "crds")
    environment.namespace(NS)
    with pytest.MonkeyPatch.context() as mp:
        for key, value in settings.items():
            mp.setenv(key, value)
        store = open_store()
    # What the steps would have stored: every chain's data, features and a model version.
    for i in range(CHAINS):
        publish(store, NS, "sampleset", f"events-{i}", f"ss{i}", {"trainRows": 100 + i})
        publish(store, NS, "featureset", f"features-{i}", f"fs{i}", {})
        publish(store, NS, "trainjob", f"ranker-{i}", f"m{i}", {"metrics": {"auc": 0.7}})
    yield environment


def resources() -> list[dict[str, Any]]:
    feature = {
        "name": "u",
        "group": "id",
        "type": "sparse",
        "columns": ["u"],
        "transform": {"type": "hash", "buckets": 10},
    }
    out: list[tuple[str, str, dict[str, Any]]] = []
    for i in range(CHAINS):
        tj = {"featureSetRef": {"name": f"features-{i}"}, "model": {"type": "lr"}, "distributed": {"workers": 2}}
        model = {"trainJobRef": {"name": f"ranker-{i}"}, "follow": "latest"}
        out += [
            ("SampleSet", f"events-{i}", {"source": {"format": "synthetic", "synthetic": {"seed": i}}}),
            ("FeatureSet", f"features-{i}", {"sampleSetRef": {"name": f"events-{i}"}, "features": [feature]}),
            ("TrainJob", f"ranker-{i}", tj),
            ("ModelDeployment", f"serve-{i}", {"model": model}),
            ("ModelDeployment", f"canary-{i}", {"model": model, "autoscaling": {"minReplicas": 1, "maxReplicas": 2}}),
        ]
    return [{"apiVersion": API, "kind": kind, "metadata": {"name": name}, "spec": spec} for kind, name, spec in out]


def test_kills_at_random_points_leave_no_duplicate_and_no_orphan(env: OperatorEnvironment) -> None:
    rng = random.Random(1234)
    kubectl = env.kubectl
    # Standalone: a killed replica's peering entry would otherwise hold the next one off for its lifetime.
    op = env.operator("--standalone", log_name="restarts.log").start()
    try:
        op.wait_healthy()
        # Ten waves of five, one before each of the first ten kills, so that kills keep landing on
        # fresh work: resources waiting for their upstream, Jobs just created, statuses half written.
        all_resources = resources()
        waves = [all_resources[i::10] for i in range(10)]
        started = time.monotonic()
        for i in range(KILLS):
            if i < len(waves):
                kubectl.apply(waves[i], "-n", NS)
            # Anywhere once it is up: listing, resuming, mid-reconcile, writing children or status.
            time.sleep(rng.uniform(0.0, 1.5))
            op.kill()
            op.start()
            op.wait_healthy()
        print(f"{KILLS} kills in {time.monotonic() - started:.0f}s")
        expected = {
            "SampleSet": "Succeeded",
            "FeatureSet": "Succeeded",
            "TrainJob": "Succeeded",
            "ModelDeployment": "Serving",
        }

        def pending() -> list[str]:
            items = kubectl.json("get", "ss,fs,tj,md", "-n", NS)["items"]
            assert len(items) == 5 * CHAINS
            return [
                f"{o['kind']}/{o['metadata']['name']}"
                for o in items
                if next((c["reason"] for c in o.get("status", {}).get("conditions", []) if c["type"] == "Ready"), None)
                != expected[o["kind"]]
            ]

        started = time.monotonic()
        wait_for("every resource to converge", lambda: not pending(), timeout=120, interval=1)
        print(f"converged {time.monotonic() - started:.0f}s after the last restart")
    finally:
        op.stop()

    owners = {o["metadata"]["uid"]: o for o in kubectl.json("get", "ss,fs,tj,md", "-n", NS)["items"]}
    jobs = kubectl.json("get", "jobs", "-n", NS)["items"]
    for kind, count in (
        ("deployments", 2 * CHAINS),
        ("services", 3 * CHAINS),
        ("hpa", 2 * CHAINS),
        ("jobs", 3 * CHAINS),
    ):
        items = kubectl.json("get", kind, "-n", NS, "-l", "app.kubernetes.io/managed-by=recplane")["items"]
        # No duplicate: exactly the children the resources should have.
        assert len(items) == count, (kind, sorted(i["metadata"]["name"] for i in items))
        for item in items:
            # No orphan: each is owned by a resource that exists.
            (ref,) = item["metadata"]["ownerReferences"]
            assert ref["uid"] in owners and ref["controller"] is True, (kind, item["metadata"]["name"])
    job_uids = {j["metadata"]["uid"] for j in jobs}
    for cm in kubectl.json("get", "configmaps", "-n", NS, "-l", "app.kubernetes.io/managed-by=recplane")["items"]:
        (ref,) = cm["metadata"]["ownerReferences"]
        assert ref["kind"] == "Job" and ref["uid"] in job_uids, cm["metadata"]["name"]
    for o in owners.values():
        if o["kind"] == "TrainJob":
            assert o["status"]["restarts"] == 0 and o["status"]["latestVersion"].startswith("m")
        if o["kind"] == "ModelDeployment":
            assert len(o["status"]["history"]) == 1, o["status"]["history"]
