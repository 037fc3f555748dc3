"""The watch cache: what reconciles read instead of asking the API server."""

from __future__ import annotations

import asyncio
from typing import Any

from recplane.api import KINDS
from recplane.operator.cache import (
    CHILD_KINDS,
    POD_INDEX,
    Cache,
    child_index_id,
    index_child,
    index_pod,
    object_index_id,
)

RUNNING_POD = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {
        "name": "ranker-abc-0-xyz",
        "labels": {"batch.kubernetes.io/job-name": "ranker-abc-0"},
        "annotations": {"recplane.io/owner": "TrainJob/ranker"},
        "managedFields": [{"manager": "kubelet"}],
    },
    "spec": {"containers": [{"name": "trainer"}]},
    "status": {"phase": "Running", "containerStatuses": [{"name": "trainer", "state": {"running": {}}}]},
}


def test_pods_are_indexed_by_the_recplane_resource_behind_them_and_trimmed() -> None:
    indexed = asyncio.run(index_pod(body=RUNNING_POD, namespace="team-a"))
    ((key, pod),) = indexed.items()
    assert key == ("team-a", "TrainJob", "ranker")
    assert pod == {
        "metadata": {"name": "ranker-abc-0-xyz", "labels": {"batch.kubernetes.io/job-name": "ranker-abc-0"}},
        "status": {"phase": "Running", "containerStatuses": [{"name": "trainer", "state": {"running": {}}}]},
    }
    foreign = {**RUNNING_POD, "metadata": {"name": "other", "annotations": {}}}
    assert asyncio.run(index_pod(body=foreign, namespace="team-a")) is None


def test_children_are_indexed_by_their_controlling_recplane_owner() -> None:
    ref = {"apiVersion": "recplane.io/v1alpha1", "kind": "TrainJob", "name": "r", "uid": "u-1", "controller": True}
    job = {"kind": "Job", "metadata": {"name": "r-1", "ownerReferences": [ref]}}
    assert asyncio.run(index_child(body=job)) == {"u-1": job}
    cronjob_owned = {"kind": "Job", "metadata": {"name": "x", "ownerReferences": [{**ref, "apiVersion": "batch/v1"}]}}
    assert asyncio.run(index_child(body=cronjob_owned)) is None


def bound_cache(objects: dict[tuple[str, str], list[dict[str, Any]]]) -> Cache:
    """A cache over kopf-shaped indexes: key -> the objects stored under it."""
    cache = Cache()
    indexes: dict[str, Any] = {object_index_id(k): {} for k in KINDS}
    indexes[object_index_id("TrainJob")] = objects
    indexes.update({child_index_id(c): {} for c in CHILD_KINDS})
    indexes[POD_INDEX] = {}
    cache.bind(indexes)
    return cache


def tj(version: str, phase: str) -> dict[str, Any]:
    meta = {"name": "r", "namespace": "ns", "resourceVersion": version}
    return {"kind": "TrainJob", "metadata": meta, "status": {"phase": phase}}


def test_a_status_write_is_read_back_until_the_watch_catches_up() -> None:
    seen = {("ns", "r"): [tj("10", "Pending")]}
    cache = bound_cache(seen)
    cache.remember(tj("11", "Running"), based_on="10")
    assert cache.resource("TrainJob", "ns", "r")["status"]["phase"] == "Running"  # type: ignore[index]
    seen[("ns", "r")] = [tj("12", "Running")]  # the watch delivered a newer version
    assert cache.resource("TrainJob", "ns", "r")["metadata"]["resourceVersion"] == "12"  # type: ignore[index]


def test_an_unbound_cache_knows_nothing_so_callers_ask_the_api_server() -> None:
    cache = Cache()
    assert cache.resource("TrainJob", "ns", "r") is None
    assert cache.children("Job", "u-1") is None
    assert cache.pods("ns", "TrainJob", "r") is None
