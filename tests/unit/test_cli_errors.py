"""Failures talking to a cluster become one line saying what happened and what to do,
with the exit code a script can rely on."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
import urllib3
import yaml
from kubernetes.client.exceptions import ApiException
from typer.testing import CliRunner

from recplane.api import KINDS
from recplane.cli.cluster import Request, connect, translate
from recplane.cli.main import app
from recplane.cli.options import ExitCode, Target

SERVER = "https://10.0.0.1:6443"
GET_TJ = Request.for_kind("get", KINDS["TrainJob"], "default", "feed-deepfm")
LIST_TJ = Request.for_kind("list", KINDS["TrainJob"], "default")


def _api_error(status: int, reason: str, body: object) -> ApiException:
    return ApiException(status=status, reason=reason, body=body if isinstance(body, str) else json.dumps(body))


def _status(code: int, reason: str, message: str, details: dict[str, str] | None = None) -> dict[str, object]:
    out: dict[str, object] = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code}
    out.update(reason=reason, message=message)
    if details is not None:
        out["details"] = details
    return out


def test_a_missing_object_names_kind_name_and_namespace() -> None:
    body = _status(404, "NotFound", 'trainjobs.recplane.io "feed-deepfm" not found', {"name": "feed-deepfm"})
    err = translate(_api_error(404, "Not Found", body), GET_TJ, SERVER)
    assert err.message == "TrainJob feed-deepfm not found in namespace default"
    assert err.code == ExitCode.NOT_FOUND


@pytest.mark.parametrize(
    "body",
    [
        "404 page not found\n",  # the group is unknown to the API server
        _status(404, "NotFound", "the server could not find the requested resource"),  # group known, kind not
    ],
    ids=["unknown-group", "unknown-kind"],
)
@pytest.mark.parametrize("request_", [GET_TJ, LIST_TJ], ids=["get", "list"])
def test_missing_crds_say_how_to_install_them(body: object, request_: Request) -> None:
    err = translate(_api_error(404, "Not Found", body), request_, SERVER)
    assert err.code == ExitCode.CLUSTER
    assert "the recplane CRDs are not installed" in err.message
    assert "helm install recplane helm/recplane" in err.message and "kubectl apply -f crds/" in err.message


def test_a_missing_namespace_says_how_to_create_it() -> None:
    body = _status(404, "NotFound", 'namespaces "recsys" not found', {"name": "recsys", "kind": "namespaces"})
    req = Request.for_kind("patch", KINDS["SampleSet"], "recsys", "feed-events")
    err = translate(_api_error(404, "Not Found", body), req, SERVER)
    assert err.code == ExitCode.NOT_FOUND
    assert err.message.startswith("namespace recsys not found")
    assert "kubectl create namespace recsys" in err.message


def test_forbidden_names_who_what_where_and_how_to_check() -> None:
    message = (
        'trainjobs.recplane.io is forbidden: User "alice" cannot list resource "trainjobs" '
        'in API group "recplane.io" in the namespace "team-a"'
    )
    req = Request.for_kind("list", KINDS["TrainJob"], "team-a")
    err = translate(_api_error(403, "Forbidden", _status(403, "Forbidden", message)), req, SERVER)
    assert err.code == ExitCode.CLUSTER
    assert err.message.startswith("forbidden: alice may not list trainjobs.recplane.io in namespace team-a")
    assert "ask a cluster admin for RBAC" in err.message
    assert "kubectl auth can-i list trainjobs.recplane.io -n team-a" in err.message


def test_refused_credentials_suggest_another_context() -> None:
    err = translate(_api_error(401, "Unauthorized", _status(401, "Unauthorized", "Unauthorized")), GET_TJ, SERVER)
    assert err.code == ExitCode.CLUSTER
    assert SERVER in err.message and "--context" in err.message


def test_an_apply_conflict_suggests_force_conflicts() -> None:
    message = 'Apply failed with 1 conflict: conflict with "kubectl-edit" using recplane.io/v1alpha1: .spec.model.type'
    req = Request.for_kind("patch", KINDS["TrainJob"], "default", "feed-deepfm")
    err = translate(_api_error(409, "Conflict", _status(409, "Conflict", message)), req, SERVER)
    assert err.code == ExitCode.FAILED
    assert ".spec.model.type" in err.message and "--force-conflicts" in err.message


def test_a_change_the_server_refuses_keeps_the_servers_field_message() -> None:
    message = 'TrainJob.recplane.io "feed-deepfm" is invalid: spec.distributed.workers: Invalid value: 0'
    req = Request.for_kind("patch", KINDS["TrainJob"], "default", "feed-deepfm")
    err = translate(_api_error(422, "Unprocessable Entity", _status(422, "Invalid", message)), req, SERVER)
    assert err.code == ExitCode.FAILED
    assert "spec.distributed.workers" in err.message


def test_connection_refused_says_where_and_what_to_do() -> None:
    conn = urllib3.connection.HTTPSConnection("10.0.0.1", 6443)  # never connected: only names the target
    refused = urllib3.exceptions.NewConnectionError(conn, "Failed to establish a new connection: [Errno 111] refused")
    pool = urllib3.HTTPSConnectionPool("10.0.0.1", 6443)
    err = translate(urllib3.exceptions.MaxRetryError(pool, "/apis", refused), GET_TJ, SERVER)
    assert err.code == ExitCode.CLUSTER
    assert err.message == (
        f"cannot reach the cluster at {SERVER} (connection refused): "
        "check KUBECONFIG/--context or run `recplane dev-cluster up`"
    )


# ------------------------------------------------------------------ connecting


def _kubeconfig(path: Path, server: str, *, namespace: str | None = None, contexts: tuple[str, ...] = ("dev",)) -> Path:
    ctx_extra = {"namespace": namespace} if namespace else {}
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": server, "insecure-skip-tls-verify": True}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [{"name": n, "context": {"cluster": "c", "user": "u", **ctx_extra}} for n in contexts],
                "current-context": contexts[0],
            }
        )
    )
    return path


def test_the_contexts_namespace_is_the_default_one(tmp_path: Path) -> None:
    kc = _kubeconfig(tmp_path / "config", "https://127.0.0.1:6443", namespace="recsys", contexts=("dev", "prod"))
    cluster = connect(Target(kubeconfig=kc, context="prod"))
    assert cluster.context == "prod"
    assert cluster.server == "https://127.0.0.1:6443"
    assert cluster.namespace(None) == "recsys"
    assert cluster.namespace("other") == "other"


def test_an_unknown_context_lists_the_known_ones(tmp_path: Path) -> None:
    kc = _kubeconfig(tmp_path / "config", "https://127.0.0.1:6443", contexts=("dev", "prod"))
    with pytest.raises(Exception) as info:
        connect(Target(kubeconfig=kc, context="staging"))
    assert str(info.value) == f"context staging not found in kubeconfig {kc}; it has: dev, prod"


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize(
    "argv",
    [["get"], ["get", "tj", "feed-deepfm"], ["describe", "tj/feed-deepfm"], ["wait", "tj/x"], ["rollback", "md/x"]],
)
def test_every_verb_reports_an_unreachable_cluster_in_one_line_with_exit_4(tmp_path: Path, argv: list[str]) -> None:
    server = f"https://127.0.0.1:{_closed_port()}"
    kc = _kubeconfig(tmp_path / "config", server)
    result = CliRunner().invoke(app, [*argv, "--kubeconfig", str(kc)])
    assert result.exit_code == ExitCode.CLUSTER, result.output
    assert result.output.strip() == (
        f"error: cannot reach the cluster at {server} (connection refused): "
        "check KUBECONFIG/--context or run `recplane dev-cluster up`"
    )


def test_no_kubeconfig_at_all_points_at_dev_cluster(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["get"], env={"KUBECONFIG": str(tmp_path / "missing")})
    assert result.exit_code == ExitCode.CLUSTER
    assert f"no kubeconfig at {tmp_path / 'missing'}" in result.output
    assert "recplane dev-cluster up" in result.output
