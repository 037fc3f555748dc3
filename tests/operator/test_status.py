"""Conditions, transitions and the Events they cause."""

from __future__ import annotations

from dataclasses import replace

from recplane.api.common import Condition
from recplane.operator.status import Verdict, build_status, conditions, event_due, event_type

RUNNING = Verdict(phase="Running", reason="Running", message="Job x is running", progressing=True)
READY = Verdict(phase="Ready", reason="Succeeded", message="version v1", ready=True)


def test_conditions_are_ready_progressing_failed_shaped_like_metav1_condition() -> None:
    conds = conditions(RUNNING, [], generation=3, now="2026-01-01T00:00:00Z")
    assert [c["type"] for c in conds] == ["Ready", "Progressing", "Failed"]
    assert [c["status"] for c in conds] == ["False", "True", "False"]
    for c in conds:
        Condition.model_validate(c)  # the API's own model of a condition accepts it
        assert c["observedGeneration"] == 3 and c["reason"] == "Running"


def test_a_repeated_reconcile_keeps_transition_times_and_writes_nothing_new() -> None:
    first = build_status(RUNNING, {"version": None}, None, 1, now="2026-01-01T00:00:00Z")
    again = build_status(RUNNING, {}, first, 1, now="2026-01-01T00:05:00Z")
    assert again == first
    assert not event_due(first, again)


def test_transition_time_moves_only_for_conditions_that_flip() -> None:
    first = build_status(RUNNING, {}, None, 1, now="2026-01-01T00:00:00Z")
    done = build_status(READY, {}, first, 1, now="2026-01-01T00:05:00Z")
    times = {c["type"]: c["lastTransitionTime"] for c in done["conditions"]}
    assert times == {
        "Ready": "2026-01-01T00:05:00Z",
        "Progressing": "2026-01-01T00:05:00Z",
        "Failed": "2026-01-01T00:00:00Z",
    }
    assert event_due(first, done)


def test_a_new_phase_under_the_same_reason_is_not_an_event() -> None:
    pending = build_status(replace(RUNNING, phase="Pending"), {}, None, 1, now="2026-01-01T00:00:00Z")
    running = build_status(RUNNING, {}, pending, 1, now="2026-01-01T00:01:00Z")
    assert running["phase"] == "Running"
    assert not event_due(pending, running)
    stuck = replace(RUNNING, phase="Pending", reason="ImagePullBackOff", warning=True)
    assert event_due(running, build_status(stuck, {}, running, 1, now="2026-01-01T00:02:00Z"))


def test_failures_and_warnings_become_warning_events() -> None:
    failed = Verdict(phase="Failed", reason="StepFailed", message="exit 1", failed=True)
    missing = Verdict(phase="Waiting", reason="ReferenceNotFound", message="no", warning=True, requeue_after=5)
    assert event_type(failed) == event_type(missing) == "Warning"
    assert event_type(READY) == "Normal"


def test_the_message_is_kept_on_ready_and_on_the_condition_that_holds() -> None:
    failed = Verdict(phase="Failed", reason="StepFailed", message="pod p exited with code 1", failed=True)
    by_type = {c["type"]: c for c in conditions(failed, [], None)}
    assert by_type["Ready"]["message"] == by_type["Failed"]["message"] == "pod p exited with code 1"
    assert by_type["Progressing"]["message"] == ""
    assert "observedGeneration" not in by_type["Ready"]
