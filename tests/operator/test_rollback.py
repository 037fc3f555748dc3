"""`recplane rollback`: the previous version, pinned in the spec."""

from __future__ import annotations

import pytest

from recplane.operator.names import ROLLBACK_ANNOTATION
from recplane.operator.rollback import RollbackError, previous_version, rollback_patch


def served(make, history: list[str], current: str, spec: dict | None = None) -> dict:
    md = make("ModelDeployment", "ranker", spec=spec)
    md["status"] = {"currentVersion": current, "history": [{"version": v} for v in history]}
    return md


def test_rollback_pins_the_version_served_before_the_current_one(make) -> None:
    md = served(make, ["v1", "v2", "v3"], "v3")
    assert previous_version(md) == "v2"
    patch = rollback_patch(md)
    assert patch["spec"]["model"] == {"trainJobRef": {"name": "ranker", "version": "v2"}, "follow": "pinned"}
    assert patch["metadata"]["annotations"][ROLLBACK_ANNOTATION] == "v2"


def test_rolling_back_twice_goes_back_and_forth(make) -> None:
    # After a rollback to v2 the history ends v3, v2: the previous one is v3 again.
    md = served(make, ["v1", "v2", "v3", "v2"], "v2")
    assert previous_version(md) == "v3"


def test_rollback_to_a_named_version_and_by_uri(make) -> None:
    md = served(make, ["a", "b"], "b", spec={"model": {"uri": "s3://bucket/team-a/trainjob/t/b/"}})
    patch = rollback_patch(md, to="a")
    assert patch["spec"]["model"] == {"uri": "s3://bucket/team-a/trainjob/t/a/"}


def test_nothing_to_roll_back_to_is_an_error_that_says_what_to_do(make) -> None:
    md = served(make, ["v1"], "v1")
    with pytest.raises(RollbackError, match="--to"):
        rollback_patch(md)
