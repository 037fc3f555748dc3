"""promote and rollback: which version they pin and what they refuse."""

from __future__ import annotations

from typing import Any

import pytest

from recplane.cli.options import CliError, ExitCode
from recplane.cli.rollout import history_newest_first, plan_promote, plan_rollback


def _md(
    history: list[dict[str, Any]] | None = None,
    current: str | None = None,
    canary: dict[str, Any] | None = None,
    model: dict[str, Any] | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {"model": model or {"trainJobRef": {"name": "feed-deepfm"}, "follow": "promoted"}}
    if canary is not None:
        spec["canary"] = canary
    status: dict[str, Any] = {"history": history or []}
    if current:
        status["currentVersion"] = current
    return {"metadata": {"name": "feed-ranker", "resourceVersion": "42"}, "spec": spec, "status": status}


HISTORY = [
    {"version": "v1", "startedAt": "2026-01-01T09:00:00Z", "reason": "Promoted"},
    {"version": "v3", "startedAt": "2026-01-01T11:00:00Z", "reason": "Promoted"},
    {"version": "v2", "startedAt": "2026-01-01T10:00:00Z", "reason": "Promoted"},
]


def test_rollback_pins_the_version_served_before_the_current_one() -> None:
    plan = plan_rollback(_md(HISTORY, current="v3"))
    assert plan.version == "v2"
    assert plan.patch == {
        "metadata": {"resourceVersion": "42"},
        "spec": {"model": {"trainJobRef": {"version": "v2"}, "follow": "pinned"}},
    }
    assert [str(c) for c in plan.changes] == [
        "spec.model.trainJobRef.version: (unset) -> v2",
        "spec.model.follow: promoted -> pinned",
    ]
    assert any("will not roll out" in note for note in plan.notes)


def test_history_is_ordered_by_start_time() -> None:
    assert history_newest_first({"history": HISTORY}) == ["v3", "v2", "v1"]


def test_versions_that_never_became_stable_are_not_rollback_targets() -> None:
    history = [
        *HISTORY,
        {"version": "v4", "promoted": False, "reason": "rejected: AUC 0.61 is below promoteIf.minAuc 0.7"},
        {"version": "v5", "canaryStartedAt": "2026-01-01T12:00:00Z", "reason": "canary"},
    ]
    assert history_newest_first({"history": history}) == ["v3", "v2", "v1"]
    assert plan_rollback(_md(history, current="v3")).version == "v2"
    with pytest.raises(CliError, match="not in ModelDeployment feed-ranker's history"):
        plan_rollback(_md(history, current="v3"), to="v4")


def test_promote_on_a_canary_first_deployment_pins_the_canary_under_analysis() -> None:
    md = _md(HISTORY, current="v3", canary={"weight": 10, "analysis": "10m"})
    md["status"]["canaryVersion"] = "v4"
    plan = plan_promote(md)
    assert plan.version == "v4"
    assert plan.patch["spec"]["canary"] is None
    assert plan.patch["spec"]["model"]["trainJobRef"] == {"version": "v4"}


def test_rollback_of_a_canary_first_deployment_drops_the_versionless_canary() -> None:
    # Pinned with a weight and no version is refused by the API server: the patch must drop it.
    plan = plan_rollback(_md(HISTORY, current="v3", canary={"weight": 10}))
    assert plan.patch["spec"]["canary"] is None
    assert "spec.canary: {weight: 10} -> (removed)" in [str(c) for c in plan.changes]


def test_rollback_to_a_named_version_from_the_history() -> None:
    plan = plan_rollback(_md(HISTORY, current="v3"), to="v1")
    assert plan.patch["spec"]["model"]["trainJobRef"] == {"version": "v1"}


def test_rollback_twice_goes_further_back_once_the_operator_reports_the_new_current() -> None:
    pinned = _md([*HISTORY, {"version": "v2", "startedAt": "2026-01-01T12:00:00Z", "reason": "Rollback"}], current="v2")
    assert plan_rollback(pinned).version == "v3"


@pytest.mark.parametrize(
    ("md", "to", "fragment"),
    [
        (_md([{"version": "v1"}], current="v1"), None, "has no previous version in status.history"),
        (_md([], current=None), None, "has no previous version in status.history"),
        (
            _md(HISTORY, current="v3"),
            "v9",
            "version v9 is not in ModelDeployment feed-ranker's history (served: v3, v2, v1)",
        ),
        (_md(HISTORY, current="v3"), "v3", "already serves version v3"),
        (_md(HISTORY, current="v3", model={"uri": "s3://models/v1"}), None, "serves spec.model.uri"),
    ],
    ids=["only-one-version", "no-history", "unknown-version", "current-version", "uri"],
)
def test_rollback_refuses_with_a_reason(md: dict[str, Any], to: str | None, fragment: str) -> None:
    with pytest.raises(CliError) as info:
        plan_rollback(md, to)
    assert info.value.code == ExitCode.FAILED
    assert fragment in info.value.message


def test_rollback_leaves_a_canary_alone_but_says_so() -> None:
    plan = plan_rollback(_md(HISTORY, current="v3", canary={"version": "v4", "weight": 10}))
    assert "canary" not in plan.patch["spec"]
    assert any("canary is unchanged" in note for note in plan.notes)


def test_promote_makes_the_canary_stable_and_removes_it() -> None:
    md = _md(HISTORY, current="v3", canary={"version": "v4", "weight": 10})
    md["spec"]["model"]["trainJobRef"]["version"] = "v3"
    plan = plan_promote(md)
    assert plan.version == "v4"
    assert plan.patch["spec"] == {"model": {"trainJobRef": {"version": "v4"}, "follow": "pinned"}, "canary": None}
    assert [str(c) for c in plan.changes] == [
        "spec.model.trainJobRef.version: v3 -> v4",
        "spec.model.follow: promoted -> pinned",
        "spec.canary: {version: v4, weight: 10} -> (removed)",
    ]


@pytest.mark.parametrize("canary", [None, {"weight": 0}], ids=["no-canary", "canary-without-version"])
def test_promote_without_a_canary_version_is_refused(canary: dict[str, Any] | None) -> None:
    with pytest.raises(CliError) as info:
        plan_promote(_md(HISTORY, current="v3", canary=canary))
    message = info.value.message
    assert message.startswith("ModelDeployment feed-ranker has no canary to promote: set spec.canary.version")
