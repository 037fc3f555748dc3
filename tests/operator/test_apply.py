"""When a child is applied again: only when its desired state changed or someone changed our fields."""

from __future__ import annotations

import copy

from recplane.operator.builders import ModelRef, build_serving
from recplane.operator.config import OperatorConfig
from recplane.operator.controllers.base import HASH_ANNOTATION, contains, stamped


def deployment(make, **spec) -> dict:
    md = make("ModelDeployment", "ranker", spec={"model": {"trainJobRef": {"name": "t"}}, **spec})
    return build_serving(md, OperatorConfig(), ModelRef("v1", "s3://b/v1/")).apply[0]


def live_copy(desired: dict) -> dict:
    """What the API server returns: our fields plus defaults and status."""
    live = copy.deepcopy(desired)
    live["metadata"].update(uid="u1", resourceVersion="7", generation=1)
    live["spec"]["replicas"] = 3
    container = live["spec"]["template"]["spec"]["containers"][0]
    container["ports"][0]["protocol"] = "TCP"
    container["readinessProbe"]["httpGet"]["scheme"] = "HTTP"
    live["status"] = {"readyReplicas": 3}
    return live


def test_a_live_object_with_defaults_still_contains_what_we_applied(make) -> None:
    desired = stamped(deployment(make))
    assert contains(live_copy(desired), desired)


def test_drift_in_our_fields_is_seen(make) -> None:
    desired = stamped(deployment(make))
    live = live_copy(desired)
    live["spec"]["template"]["spec"]["containers"][0]["image"] = "someone/else:1"
    assert not contains(live, desired)
    live = live_copy(desired)
    del live["spec"]["template"]["spec"]["containers"][0]["env"][0]
    assert not contains(live, desired)


def test_the_hash_changes_when_a_field_is_removed(make) -> None:
    md = make("ModelDeployment", "ranker", spec={"model": {"trainJobRef": {"name": "t"}}})
    pinned = copy.deepcopy(md)
    pinned["spec"]["scheduling"]["nodeSelector"] = {"pool": "serving"}
    model = ModelRef("v1", "s3://b/v1/")
    with_selector = stamped(build_serving(pinned, OperatorConfig(), model).apply[0])
    without = stamped(build_serving(md, OperatorConfig(), model).apply[0])
    # A live object that still has the old nodeSelector holds every field of `without`: only the hash tells.
    assert contains(live_copy(with_selector)["spec"], without["spec"])
    hashes = {o["metadata"]["annotations"][HASH_ANNOTATION] for o in (with_selector, without)}
    assert len(hashes) == 2
    assert stamped(build_serving(md, OperatorConfig(), model).apply[0]) == without  # deterministic
