"""The cluster verbs of the `recplane` CLI against a real API server.

No operator runs here: tests write status through the status subresource, as
the operator would, and check what the CLI makes of it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner, Result

from recplane.cli.main import app
from recplane.cli.options import ExitCode

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]
NS = "cli-tests"


@pytest.fixture(scope="module")
def env(cluster: Any, kubectl: Any) -> dict[str, str]:
    kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
    kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd", "-l", "app.kubernetes.io/part-of=recplane")
    kubectl("create", "namespace", NS, check=False)
    return {"KUBECONFIG": str(cluster.kubeconfig), "COLUMNS": "200"}


def recplane(env: dict[str, str], *args: str, input: str | None = None) -> Result:
    """The CLI in-process, in the test namespace."""
    return CliRunner().invoke(app, [*args, "-n", NS], env=env, input=input)


@pytest.fixture
def applied(env: dict[str, str], kubectl: Any) -> Iterator[None]:
    result = recplane(env, "apply", "-f", str(ROOT / "examples"))
    assert result.exit_code == 0, result.output
    yield
    kubectl("delete", "-n", NS, "ss,fs,tj,md", "--all")


def set_status(kubectl: Any, kind: str, name: str, status: dict[str, Any]) -> None:
    kubectl("patch", kind, name, "-n", NS, "--subresource=status", "--type=merge", "-p", json.dumps({"status": status}))


def get_json(kubectl: Any, kind: str, name: str) -> dict[str, Any]:
    return dict(json.loads(kubectl("get", kind, name, "-n", NS, "-o", "json").stdout))


def ready(status: str, reason: str, message: str = "", generation: int = 1) -> dict[str, Any]:
    return {
        "type": "Ready",
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": "2026-01-01T00:00:00Z",
        "observedGeneration": generation,
    }


# ----------------------------------------------------------------------- apply


def test_apply_creates_in_pipeline_order_then_reports_unchanged_and_configured(
    env: dict[str, str], kubectl: Any, tmp_path: Path
) -> None:
    first = recplane(env, "apply", "-f", str(ROOT / "examples"))
    assert first.exit_code == 0, first.output
    assert first.output.splitlines() == [
        "sampleset.recplane.io/feed-events created",
        "featureset.recplane.io/feed-features created",
        "trainjob.recplane.io/feed-deepfm created",
        "modeldeployment.recplane.io/feed-ranker created",
    ]
    again = recplane(env, "apply", "-f", str(ROOT / "examples" / "trainjob.yaml"))
    assert again.output.strip() == "trainjob.recplane.io/feed-deepfm unchanged"

    changed = (ROOT / "examples" / "trainjob.yaml").read_text().replace("epochs: 1", "epochs: 2")
    result = recplane(env, "apply", "-f", "-", input=changed)
    assert result.output.strip() == "trainjob.recplane.io/feed-deepfm configured"
    assert get_json(kubectl, "tj", "feed-deepfm")["spec"]["optimization"]["epochs"] == 2
    shown = kubectl("get", "tj", "feed-deepfm", "-n", NS, "-o", "json", "--show-managed-fields").stdout
    assert "recplane" in {m["manager"] for m in json.loads(shown)["metadata"]["managedFields"]}
    kubectl("delete", "-n", NS, "ss,fs,tj,md", "--all")


def test_one_invalid_document_means_nothing_is_applied(env: dict[str, str], kubectl: Any, tmp_path: Path) -> None:
    (tmp_path / "a-sampleset.yaml").write_text((ROOT / "examples" / "sampleset.yaml").read_text())
    (tmp_path / "b-trainjob.yaml").write_text(
        "apiVersion: recplane.io/v1alpha1\nkind: TrainJob\nmetadata: {name: broken}\n"
        "spec: {featureSetRef: {name: f}, model: {type: deepfm}, optimization: {learningRate: -1}}\n"
    )
    result = recplane(env, "apply", "-f", str(tmp_path))
    assert result.exit_code == ExitCode.FAILED
    assert f"{tmp_path / 'b-trainjob.yaml'}: TrainJob/broken: spec.optimization.learningRate" in result.output
    assert kubectl("get", "ss", "feed-events", "-n", NS, check=False).returncode != 0


def test_server_dry_run_changes_nothing(env: dict[str, str], kubectl: Any) -> None:
    result = recplane(env, "apply", "--dry-run", "-f", str(ROOT / "examples" / "sampleset.yaml"))
    assert result.output.strip() == "sampleset.recplane.io/feed-events created (server dry run)"
    assert kubectl("get", "ss", "feed-events", "-n", NS, check=False).returncode != 0


# ------------------------------------------------------------------------- get


def test_get_without_a_kind_lists_all_four_kinds(env: dict[str, str], applied: None) -> None:
    result = recplane(env, "get")
    assert result.exit_code == 0, result.output
    for qualified in (
        "sampleset.recplane.io/feed-events",
        "featureset.recplane.io/feed-features",
        "trainjob.recplane.io/feed-deepfm",
        "modeldeployment.recplane.io/feed-ranker",
    ):
        assert qualified in result.output


def test_get_shows_the_printer_columns_from_status(env: dict[str, str], kubectl: Any, applied: None) -> None:
    set_status(
        kubectl,
        "tj",
        "feed-deepfm",
        {
            "phase": "Running",
            "latestVersion": "v7",
            "metrics": {"auc": 0.73456},
            "conditions": [ready("False", "Training")],
        },
    )
    lines = recplane(env, "get", "tj").output.splitlines()
    assert lines[0].split() == ["NAME", "PHASE", "READY", "MODEL", "VERSION", "AUC", "AGE"]
    assert lines[1].split()[:6] == ["feed-deepfm", "Running", "False", "deepfm", "v7", "0.7346"]


def test_machine_output_is_exactly_the_objects(env: dict[str, str], applied: None) -> None:
    one = json.loads(recplane(env, "get", "tj/feed-deepfm", "-o", "json").stdout)
    assert one["kind"] == "TrainJob" and one["spec"]["distributed"]["backend"] == "gloo"  # defaulted by the server
    several = yaml.safe_load(recplane(env, "get", "ss,fs", "-o", "yaml").stdout)
    assert several["kind"] == "List"
    assert [i["kind"] for i in several["items"]] == ["SampleSet", "FeatureSet"]
    assert recplane(env, "get", "md", "-o", "name").stdout == "modeldeployment.recplane.io/feed-ranker\n"


def test_missing_objects_exit_3_naming_kind_name_and_namespace(env: dict[str, str]) -> None:
    for argv in (["get", "tj", "nope"], ["describe", "md/nope"], ["delete", "tj/nope"], ["wait", "tj/nope"]):
        result = recplane(env, *argv)
        assert result.exit_code == ExitCode.NOT_FOUND, (argv, result.output)
        kind = "ModelDeployment" if "md/nope" in argv else "TrainJob"
        assert result.output.strip() == f"error: {kind} nope not found in namespace {NS}"


def test_an_empty_namespace_says_so(env: dict[str, str], kubectl: Any) -> None:
    kubectl("create", "namespace", "cli-empty", check=False)
    result = CliRunner().invoke(app, ["get", "-n", "cli-empty"], env=env)
    assert result.exit_code == 0
    assert result.output.strip() == "No resources found in cli-empty namespace."


def test_forbidden_by_rbac_is_one_line_with_exit_4(
    env: dict[str, str], kubectl: Any, cluster: Any, tmp_path: Path
) -> None:
    kubectl("create", "serviceaccount", "nobody", "-n", NS, check=False)
    token = kubectl("create", "token", "nobody", "-n", NS).stdout.strip()
    config = yaml.safe_load(Path(cluster.kubeconfig).read_text())
    config["users"] = [{"name": "nobody", "user": {"token": token}}]
    for ctx in config["contexts"]:
        ctx["context"]["user"] = "nobody"
    kubeconfig = tmp_path / "nobody"
    kubeconfig.write_text(yaml.safe_dump(config))
    result = CliRunner().invoke(app, ["get", "tj", "-n", NS, "--kubeconfig", str(kubeconfig)], env=env)
    assert result.exit_code == ExitCode.CLUSTER
    assert result.output.strip() == (
        f"error: forbidden: system:serviceaccount:{NS}:nobody may not list trainjobs.recplane.io in namespace {NS}; "
        "ask a cluster admin for RBAC that allows it "
        f"(check with `kubectl auth can-i list trainjobs.recplane.io -n {NS}`)"
    )


# -------------------------------------------------------------------- describe


def test_describe_shows_status_conditions_and_events(env: dict[str, str], kubectl: Any, applied: None) -> None:
    set_status(
        kubectl,
        "tj",
        "feed-deepfm",
        {"phase": "Running", "step": 120, "conditions": [ready("False", "Training", "step 120 of 400")]},
    )
    kubectl(
        "create",
        "-n",
        NS,
        "-f",
        "-",
        input={
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": "feed-deepfm.restart", "namespace": NS},
            "involvedObject": {
                "apiVersion": "recplane.io/v1alpha1",
                "kind": "TrainJob",
                "name": "feed-deepfm",
                "namespace": NS,
            },
            "type": "Warning",
            "reason": "WorkerRestarted",
            "message": "rank 1 was OOMKilled",
            "source": {"component": "recplane-operator"},
        },
    )
    result = recplane(env, "describe", "tj", "feed-deepfm")
    assert result.exit_code == 0, result.output
    lines = [line.split() for line in result.output.splitlines()]
    assert ["Phase:", "Running"] in lines
    assert ["featureSetRef:", "{name:", "feed-features}"] in lines
    assert ["step:", "120"] in lines
    ready_row = next(ln for ln in lines if ln[:1] == ["Ready"])
    assert ready_row[:7] == ["Ready", "False", "Training", "step", "120", "of", "400"]
    assert any(
        ln[:2] == ["Warning", "WorkerRestarted"] and ln[-4:] == ["rank", "1", "was", "OOMKilled"] for ln in lines
    )


# ------------------------------------------------------------------------ wait


def cli_process(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    """The installed CLI as a separate process, as a script would run it."""
    return subprocess.Popen(
        [sys.executable, "-m", "recplane.cli.main", *args, "-n", NS],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_wait_returns_when_the_operator_reports_ready(env: dict[str, str], kubectl: Any, applied: None) -> None:
    waiting = cli_process(env, "wait", "tj/feed-deepfm", "--for=condition=Ready", "--timeout=60s")
    set_status(kubectl, "tj", "feed-deepfm", {"phase": "Running", "conditions": [ready("False", "Training")]})
    set_status(
        kubectl, "tj", "feed-deepfm", {"phase": "Succeeded", "conditions": [ready("True", "Trained", "v1 stored")]}
    )
    out, err = waiting.communicate(timeout=90)
    assert waiting.returncode == 0, err
    assert out.strip() == "trainjob.recplane.io/feed-deepfm condition met"


def test_wait_exits_1_with_the_message_when_the_resource_fails(
    env: dict[str, str], kubectl: Any, applied: None
) -> None:
    set_status(
        kubectl,
        "tj",
        "feed-deepfm",
        {"phase": "Failed", "conditions": [ready("False", "RestartsExhausted", "worker 0 OOMKilled 4 times")]},
    )
    result = recplane(env, "wait", "tj/feed-deepfm", "--timeout=30s")
    assert result.exit_code == ExitCode.FAILED
    assert result.output.strip() == "error: TrainJob feed-deepfm failed: RestartsExhausted: worker 0 OOMKilled 4 times"


def test_wait_exits_5_on_timeout_saying_where_it_stands(env: dict[str, str], kubectl: Any, applied: None) -> None:
    set_status(
        kubectl,
        "fs",
        "feed-features",
        {"conditions": [ready("False", "Waiting", "SampleSet feed-events is not Ready")]},
    )
    result = recplane(env, "wait", "fs/feed-features", "--timeout=2s")
    assert result.exit_code == ExitCode.TIMEOUT
    assert result.output.strip() == (
        "error: timed out after 2s waiting for FeatureSet feed-features to be Ready; "
        "now Ready=False: Waiting: SampleSet feed-events is not Ready"
    )


# ---------------------------------------------------------------------- delete


def test_delete_waits_until_the_object_is_gone(env: dict[str, str], kubectl: Any, applied: None) -> None:
    result = recplane(env, "delete", "ss", "feed-events")
    assert result.exit_code == 0, result.output
    assert result.output.strip() == 'sampleset.recplane.io "feed-events" deleted'
    assert kubectl("get", "ss", "feed-events", "-n", NS, check=False).returncode != 0


def test_delete_held_by_a_finalizer_times_out_naming_it(env: dict[str, str], kubectl: Any, applied: None) -> None:
    kubectl(
        "patch",
        "fs",
        "feed-features",
        "-n",
        NS,
        "--type=merge",
        "-p",
        '{"metadata":{"finalizers":["recplane.io/cleanup"]}}',
    )
    try:
        result = recplane(env, "delete", "fs/feed-features", "--timeout=2s")
        assert result.exit_code == ExitCode.TIMEOUT
        assert "finalizers recplane.io/cleanup still pending (is the recplane operator running?)" in result.output
    finally:
        kubectl("patch", "fs", "feed-features", "-n", NS, "--type=merge", "-p", '{"metadata":{"finalizers":null}}')


# ------------------------------------------------------------------------ logs


def test_logs_before_the_operator_started_pods_say_where_to_look(env: dict[str, str], applied: None) -> None:
    result = recplane(env, "logs", "tj/feed-deepfm")
    assert result.exit_code == ExitCode.NOT_FOUND
    assert result.output.startswith(f"error: no rank 0 pods of TrainJob feed-deepfm in namespace {NS} yet")
    assert "recplane describe tj/feed-deepfm" in result.output


# ------------------------------------------------------------- promote/rollback


HISTORY = [
    {"version": "v1", "startedAt": "2026-01-01T09:00:00Z", "reason": "Promoted"},
    {"version": "v2", "startedAt": "2026-01-01T10:00:00Z", "reason": "Promoted"},
    {"version": "v3", "startedAt": "2026-01-01T11:00:00Z", "reason": "Promoted"},
]


def test_rollback_pins_the_previous_version(env: dict[str, str], kubectl: Any, applied: None) -> None:
    set_status(kubectl, "md", "feed-ranker", {"currentVersion": "v3", "history": HISTORY})
    result = recplane(env, "rollback", "md/feed-ranker")
    assert result.exit_code == 0, result.output
    assert "modeldeployment.recplane.io/feed-ranker rolled back to v2" in result.output
    assert "spec.model.follow: promoted -> pinned" in result.output
    model = get_json(kubectl, "md", "feed-ranker")["spec"]["model"]
    assert model == {"trainJobRef": {"name": "feed-deepfm", "version": "v2"}, "follow": "pinned"}


def test_rollback_without_history_is_refused_and_changes_nothing(
    env: dict[str, str], kubectl: Any, applied: None
) -> None:
    before = get_json(kubectl, "md", "feed-ranker")["spec"]
    result = recplane(env, "rollback", "md/feed-ranker")
    assert result.exit_code == ExitCode.FAILED
    assert "has no previous version in status.history" in result.output
    assert get_json(kubectl, "md", "feed-ranker")["spec"] == before


def test_promote_makes_the_canary_stable(env: dict[str, str], kubectl: Any, applied: None) -> None:
    kubectl(
        "patch", "md", "feed-ranker", "-n", NS, "--type=merge", "-p", '{"spec":{"canary":{"version":"v4","weight":10}}}'
    )
    result = recplane(env, "promote", "md/feed-ranker")
    assert result.exit_code == 0, result.output
    spec = get_json(kubectl, "md", "feed-ranker")["spec"]
    assert "canary" not in spec
    assert spec["model"] == {"trainJobRef": {"name": "feed-deepfm", "version": "v4"}, "follow": "pinned"}
