"""Reading a resource's state: when `wait` is done or has failed, what `describe` shows,
and which pods `logs` reads."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from typing import Any

from rich.console import Console

from recplane.api import KINDS
from recplane.cli.options import print_natural
from recplane.cli.resources import condition_verdict, describe_object, newest_first, pod_selector, prefixed_lines

NOW = datetime(2026, 1, 2, 12, 0, 0, tzinfo=UTC)


def _obj(
    conditions: list[dict[str, Any]], phase: str | None = None, generation: int = 1, observed: int = 1
) -> dict[str, Any]:
    status: dict[str, Any] = {"conditions": conditions, "observedGeneration": observed}
    if phase:
        status["phase"] = phase
    return {"metadata": {"name": "feed-deepfm", "generation": generation}, "status": status}


def _cond(type_: str, status: str, reason: str = "", message: str = "", generation: int = 1) -> dict[str, Any]:
    return {"type": type_, "status": status, "reason": reason, "message": message, "observedGeneration": generation}


def test_ready_true_meets_the_wait() -> None:
    assert condition_verdict(_obj([_cond("Ready", "True", "Trained")]), "Ready").state == "met"


def test_a_failed_condition_ends_the_wait_with_its_message() -> None:
    obj = _obj([_cond("Ready", "False", "Training"), _cond("Failed", "True", "Crashed", "worker 0 OOMKilled")])
    verdict = condition_verdict(obj, "Ready")
    assert (verdict.state, verdict.detail) == ("failed", "Crashed: worker 0 OOMKilled")


def test_phase_failed_ends_the_wait_with_the_ready_message() -> None:
    obj = _obj([_cond("Ready", "False", "BackoffLimitExceeded", "the job failed 3 times")], phase="Failed")
    verdict = condition_verdict(obj, "Ready")
    assert (verdict.state, verdict.detail) == ("failed", "BackoffLimitExceeded: the job failed 3 times")


def test_waiting_for_failed_is_not_ended_by_failure() -> None:
    obj = _obj([_cond("Failed", "True", "Crashed")], phase="Failed")
    assert condition_verdict(obj, "Failed").state == "met"


def test_a_condition_written_for_an_older_spec_does_not_count() -> None:
    obj = _obj([_cond("Ready", "True", "Trained", generation=1)], generation=2)
    verdict = condition_verdict(obj, "Ready")
    assert verdict.state == "waiting"
    assert "older generation" in verdict.detail


def test_an_old_failure_does_not_end_a_wait_for_the_new_spec() -> None:
    obj = _obj([_cond("Failed", "True", "Crashed", generation=1)], phase="Failed", generation=2, observed=1)
    assert condition_verdict(obj, "Ready").state == "waiting"


def test_waiting_says_where_it_stands() -> None:
    obj = _obj([_cond("Ready", "False", "Waiting", "FeatureSet feed-features is not Ready")])
    assert condition_verdict(obj, "Ready").detail == "Ready=False: Waiting: FeatureSet feed-features is not Ready"
    assert condition_verdict(_obj([], phase="Pending"), "Ready").detail == "no Ready condition yet (phase Pending)"


def test_a_deleted_object_is_gone() -> None:
    assert condition_verdict(None, "Ready").state == "gone"


def _render(renderable: Any) -> str:
    buf = io.StringIO()
    print_natural(renderable, Console(file=buf, width=60, color_system=None))
    return buf.getvalue()


def test_describe_shows_conditions_versions_and_events() -> None:
    tj = {
        "apiVersion": "recplane.io/v1alpha1",
        "kind": "TrainJob",
        "metadata": {
            "name": "feed-deepfm",
            "namespace": "default",
            "creationTimestamp": "2026-01-02T11:00:00Z",
            "generation": 2,
            "labels": {"team": "feed"},
        },
        "spec": {"featureSetRef": {"name": "feed-features"}, "model": {"type": "deepfm", "denseLayers": [128, 64]}},
        "status": {
            "phase": "Running",
            "observedGeneration": 1,
            "latestVersion": "v2",
            "promotedVersion": "v1",
            "conditions": [
                {
                    "type": "Ready",
                    "status": "False",
                    "reason": "Training",
                    "message": "step 120 of 400",
                    "lastTransitionTime": "2026-01-02T11:58:00Z",
                }
            ],
            "versions": [
                {"version": "v1", "uri": "s3://b/v1", "metrics": {"auc": 0.70123}, "promoted": True},
                {"version": "v2", "uri": "s3://b/v2", "metrics": {"auc": 0.69}, "promoted": False, "reason": "AUC"},
            ],
        },
    }
    events = [
        {
            "type": "Warning",
            "reason": "WorkerRestarted",
            "message": "rank 1 OOMKilled",
            "count": 2,
            "lastTimestamp": "2026-01-02T11:59:30Z",
            "source": {"component": "recplane-operator"},
        }
    ]
    lines = [line.split() for line in _render(describe_object(KINDS["TrainJob"], tj, events, now=NOW)).splitlines()]
    text = "\n".join(" ".join(words) for words in lines)
    assert "Labels: team=feed" in text
    assert "Generation: 2 (status describes generation 1: the operator has not caught up yet)" in text
    assert "denseLayers: [128, 64]" in text
    assert "latestVersion: v2" in text
    assert ["Ready", "False", "Training", "step", "120", "of", "400", "2m"] in lines
    assert ["v1", "(serving)", "0.7012", "true"] in lines
    assert ["v2", "0.69", "false", "AUC"] in lines
    assert ["Warning", "WorkerRestarted", "30s", "(x2)", "recplane-operator", "rank", "1", "OOMKilled"] in lines


def test_describe_marks_the_current_and_canary_versions_of_a_deployment() -> None:
    md = {
        "metadata": {"name": "feed-ranker", "namespace": "default"},
        "spec": {"model": {"trainJobRef": {"name": "feed-deepfm"}}},
        "status": {
            "currentVersion": "v2",
            "canaryVersion": "v3",
            "history": [{"version": "v1"}, {"version": "v2"}, {"version": "v3"}],
        },
    }
    lines = [line.split() for line in _render(describe_object(KINDS["ModelDeployment"], md, [], now=NOW)).splitlines()]
    assert ["v2", "current"] in lines and ["v3", "canary"] in lines and ["v1"] in lines
    assert ["Events:", "<none>"] in lines


def _labels(selector: str) -> dict[str, str]:
    return dict(part.split("=", 1) for part in selector.split(","))


def test_logs_select_a_trainjobs_worker_of_one_rank_by_the_operators_labels() -> None:
    assert _labels(pod_selector(KINDS["TrainJob"], "feed-deepfm", 0)) == {
        "app.kubernetes.io/managed-by": "recplane",
        "recplane.io/trainjob": "feed-deepfm",
        "recplane.io/role": "worker",
        "batch.kubernetes.io/job-completion-index": "0",
    }
    assert _labels(pod_selector(KINDS["TrainJob"], "feed-deepfm", 3))["batch.kubernetes.io/job-completion-index"] == "3"


def test_logs_select_every_replica_of_a_deployment() -> None:
    assert _labels(pod_selector(KINDS["ModelDeployment"], "feed-ranker", 0)) == {
        "app.kubernetes.io/managed-by": "recplane",
        "recplane.io/modeldeployment": "feed-ranker",
    }


def test_a_long_name_selects_by_the_same_shortened_label_value_the_operator_writes() -> None:
    name = "a-" * 40 + "model"
    value = _labels(pod_selector(KINDS["ModelDeployment"], name, 0))["recplane.io/modeldeployment"]
    assert len(value) <= 63 and value != name


def test_logs_read_the_newest_restart_attempt() -> None:
    def pod(name: str, attempt: str, created: str) -> dict[str, Any]:
        return {"metadata": {"name": name, "labels": {"recplane.io/attempt": attempt}, "creationTimestamp": created}}

    pods = [pod("j-a0-0", "0", "2026-01-02T10:00:00Z"), pod("j-a2-0", "2", "2026-01-02T09:00:00Z")]
    pods.append(pod("j-a1-0", "1", "2026-01-02T11:00:00Z"))
    assert [p["metadata"]["name"] for p in newest_first(pods)] == ["j-a2-0", "j-a1-0", "j-a0-0"]


def test_logs_of_several_pods_come_as_whole_prefixed_lines() -> None:
    chunks = [b"step 1\nst", b"ep 2\n", b"", b"done"]
    assert list(prefixed_lines(chunks, b"[pod/a] ")) == [b"[pod/a] step 1\n", b"[pod/a] step 2\n", b"[pod/a] done\n"]
