"""Talking to a Kubernetes cluster for the CLI: client setup and errors people can act on.

`connect()` builds a client the way kubectl does (`--kubeconfig`, else
$KUBECONFIG, else ~/.kube/config, else the pod's service account; `--context`
picks the context and its namespace is the default one). Every request goes
through `Cluster`, which turns what can go wrong (nothing listening, CRDs not
installed, RBAC, a missing object, a refused change) into one `CliError` line
that says what happened and what to do, with the exit code scripts rely on.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import urllib3
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException
from kubernetes.config.config_exception import ConfigException
from kubernetes.config.incluster_config import SERVICE_HOST_ENV_NAME, SERVICE_TOKEN_FILENAME

from recplane.api import GROUP, VERSION, Kind

from .options import CliError, ExitCode, Target

FIELD_MANAGER = "recplane"
DEFAULT_KUBECONFIG = Path("~/.kube/config")
# (connect, read) seconds for ordinary requests; watches and log streams set their own read timeout.
REQUEST_TIMEOUT = (10, 60)

UNREACHABLE_HINT = "check KUBECONFIG/--context or run `recplane dev-cluster up`"
CRDS_HINT = "run `helm install recplane helm/recplane` or `kubectl apply -f crds/`"


@dataclass(frozen=True)
class Request:
    """What was being asked of the API server, for error messages."""

    verb: str  # the RBAC verb: get, list, watch, patch, delete
    resource: str  # "trainjobs.recplane.io", "pods", "pods/log", "events"
    namespace: str | None
    kind: str = ""  # "TrainJob": how messages name the object
    name: str | None = None

    @property
    def group(self) -> str:
        return self.resource.split(".", 1)[1] if "." in self.resource else ""

    @staticmethod
    def for_kind(verb: str, kind: Kind, namespace: str | None, name: str | None = None) -> Request:
        return Request(verb, kind.crd_name, namespace, kind.kind, name)


def _status_body(body: Any) -> dict[str, Any]:
    """The API server's `Status` object from an error body, or {} when it sent plain text."""
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    if isinstance(body, str):
        try:
            body = json.loads(body)
        except ValueError:
            return {}
    return body if isinstance(body, dict) else {}


def _where(namespace: str | None) -> str:
    return f"in namespace {namespace}" if namespace else "in any namespace"


def not_found(kind: str, name: str, namespace: str | None) -> CliError:
    return CliError(f"{kind} {name} not found {_where(namespace)}", ExitCode.NOT_FOUND)


def unreachable(server: str, reason: str = "") -> CliError:
    why = f" ({reason})" if reason else ""
    return CliError(f"cannot reach the cluster at {server}{why}: {UNREACHABLE_HINT}", ExitCode.CLUSTER)


def translate(exc: BaseException, request: Request, server: str) -> CliError:
    """One line that says what went wrong and what to do, with its exit code.

    `exc` is what the kubernetes client raised: an ApiException carrying the
    server's Status, or a urllib3 error when no answer came back.
    """
    if isinstance(exc, ApiException):
        return _translate_api_error(exc, request, server)
    if isinstance(exc, urllib3.exceptions.MaxRetryError) and exc.reason is not None:
        exc = exc.reason
    if isinstance(exc, urllib3.exceptions.SSLError):
        return CliError(
            f"TLS with the cluster at {server} failed ({_first_line(exc)}): the kubeconfig's certificate "
            f"authority or client certificate does not fit this server; {UNREACHABLE_HINT}",
            ExitCode.CLUSTER,
        )
    # NewConnectionError subclasses ConnectTimeoutError, so it is asked first.
    if isinstance(exc, urllib3.exceptions.NewConnectionError | ConnectionError):
        return unreachable(server, "connection refused" if "refused" in str(exc).lower() else _first_line(exc))
    if isinstance(exc, urllib3.exceptions.TimeoutError):
        return unreachable(server, "timed out")
    if isinstance(exc, urllib3.exceptions.HTTPError | OSError):
        return unreachable(server, _first_line(exc))
    return CliError(f"{request.verb} {request.resource} failed: {_first_line(exc)}", ExitCode.FAILED)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    # urllib3 wraps the useful part: "<...HTTPSConnection object at 0x..>: Failed to establish ...: [Errno 111] ..."
    text = re.sub(r"^<[^>]*>:\s*", "", text)
    return text.splitlines()[0] if text else type(exc).__name__


def _translate_api_error(exc: ApiException, req: Request, server: str) -> CliError:
    status = int(exc.status or 0)
    body = _status_body(exc.body)
    message = str(body.get("message") or exc.reason or "").strip()
    details = body.get("details") or {}
    what = f"{req.kind} {req.name}" if req.kind and req.name else req.kind or req.resource

    if status == 404:
        if details.get("kind") == "namespaces":
            ns = details.get("name") or req.namespace
            return CliError(
                f"namespace {ns} not found: create it with `kubectl create namespace {ns}` or pick another with -n",
                ExitCode.NOT_FOUND,
            )
        if req.name and details.get("name") == req.name:
            return not_found(req.kind or req.resource, req.name, req.namespace)
        if req.group == GROUP:
            # The server knows no such resource at all: a bare "404 page not found" for an
            # unknown group, or a Status without details when the group lacks this kind.
            return CliError(
                f"the recplane CRDs are not installed in the cluster at {server}: {CRDS_HINT}", ExitCode.CLUSTER
            )
        if req.name:
            return not_found(req.kind or req.resource, req.name, req.namespace)
        return CliError(f"the cluster at {server} does not serve {req.resource}: {message}", ExitCode.CLUSTER)
    if status == 403:
        user = re.search(r'User "([^"]+)"', message)
        if user:
            return CliError(
                f"forbidden: {user.group(1)} may not {req.verb} {req.resource} {_where(req.namespace)}; "
                f"ask a cluster admin for RBAC that allows it "
                f"(check with `kubectl auth can-i {req.verb} {req.resource}"
                f"{' -n ' + req.namespace if req.namespace else ' -A'}`)",
                ExitCode.CLUSTER,
            )
        return CliError(f"forbidden: {message}", ExitCode.CLUSTER)
    if status == 401:
        return CliError(
            f"unauthorized: the cluster at {server} refused the kubeconfig's credentials; "
            "refresh them or pick another --context",
            ExitCode.CLUSTER,
        )
    if status == 409:
        hint = (
            "; re-run with --force-conflicts to take these fields over"
            if "conflict" in message.lower() and req.verb == "patch"
            else "; fetch it again and retry"
        )
        return CliError(f"conflict on {what}: {message}{hint}", ExitCode.FAILED)
    if status in (400, 422):
        return CliError(f"the API server refused {what}: {message}", ExitCode.FAILED)
    if status == 429 or status >= 500:
        return CliError(
            f"the API server at {server} could not {req.verb} {req.resource} ({status} {exc.reason}): "
            f"{message or 'no details'}; retry in a moment",
            ExitCode.CLUSTER,
        )
    return CliError(f"{req.verb} {what} failed ({status} {exc.reason}): {message}", ExitCode.FAILED)


# ------------------------------------------------------------------ connecting


def _kubeconfig_path(explicit: Path | None) -> str | None:
    """The kubeconfig (possibly a `:`-separated list) kubectl would use, or None for in-cluster config."""
    if explicit is not None:
        return str(explicit)
    env = os.environ.get("KUBECONFIG")
    if env:
        return env
    default = DEFAULT_KUBECONFIG.expanduser()
    if default.exists() or not os.environ.get(SERVICE_HOST_ENV_NAME):
        return str(default)
    return None


def connect(target: Target) -> Cluster:
    """A client for the cluster the flags and environment point at."""
    cfg = client.Configuration()
    path = _kubeconfig_path(target.kubeconfig)
    if path is None:
        if target.context:
            raise CliError(f"--context {target.context} needs a kubeconfig: set KUBECONFIG or --kubeconfig")
        try:
            config.load_incluster_config(client_configuration=cfg)
        except ConfigException as exc:
            raise CliError(f"cannot use the pod's service account: {exc}", ExitCode.CLUSTER) from None
        ns_file = Path(SERVICE_TOKEN_FILENAME).with_name("namespace")
        namespace = ns_file.read_text().strip() if ns_file.exists() else "default"
        return Cluster(client.ApiClient(_tuned(cfg)), namespace=namespace, context=None)

    files = [f for f in path.split(os.pathsep) if f]
    if not any(Path(f).expanduser().exists() for f in files):
        raise CliError(
            f"no kubeconfig at {path}: set KUBECONFIG or --kubeconfig, or run `recplane dev-cluster up`",
            ExitCode.CLUSTER,
        )
    try:
        contexts, current = config.list_kube_config_contexts(path)
    except ConfigException as exc:
        raise CliError(f"cannot read kubeconfig {path}: {exc}", ExitCode.CLUSTER) from None
    names = [c["name"] for c in contexts]
    if target.context:
        chosen = next((c for c in contexts if c["name"] == target.context), None)
        if chosen is None:
            raise CliError(
                f"context {target.context} not found in kubeconfig {path}; it has: {', '.join(names) or 'none'}",
                ExitCode.CLUSTER,
            )
    elif current:
        chosen = current
    else:
        raise CliError(
            f"kubeconfig {path} sets no current-context: pass --context (one of: {', '.join(names) or 'none'})",
            ExitCode.CLUSTER,
        )
    try:
        config.load_kube_config(
            config_file=path, context=chosen["name"], client_configuration=cfg, persist_config=False
        )
    except ConfigException as exc:
        raise CliError(f"kubeconfig {path}, context {chosen['name']}: {exc}", ExitCode.CLUSTER) from None
    namespace = (chosen.get("context") or {}).get("namespace") or "default"
    return Cluster(client.ApiClient(_tuned(cfg)), namespace=namespace, context=chosen["name"])


def _tuned(cfg: client.Configuration) -> client.Configuration:
    # One retry covers a dropped keep-alive connection; more would only delay "cannot reach".
    cfg.retries = 1
    return cfg


# ---------------------------------------------------------------- the client


def _object(result: object) -> dict[str, Any]:
    """A custom object as the client returns it (typed `object`: it is the JSON dict)."""
    if not isinstance(result, dict):
        raise TypeError(f"expected a JSON object from the API server, got {type(result).__name__}")
    return result


def _raw(result: object) -> urllib3.HTTPResponse:
    """What a call with `_preload_content=False` returns, whatever its annotation says: the raw response."""
    return cast(urllib3.HTTPResponse, result)


def _json(result: object) -> dict[str, Any]:
    return _object(json.loads(_raw(result).data))


class Cluster:
    """The API calls the CLI makes, each one translating failures into a CliError.

    Objects are plain dicts in the API's JSON shape (camelCase), as kubectl shows them.
    """

    def __init__(self, api: client.ApiClient, *, namespace: str = "default", context: str | None = None) -> None:
        self.api = api
        self.default_namespace = namespace
        self.context = context
        self.server = str(api.configuration.host)
        self.custom = client.CustomObjectsApi(api)
        self.core = client.CoreV1Api(api)

    def namespace(self, explicit: str | None) -> str:
        """`-n` when given, else the context's namespace."""
        return explicit or self.default_namespace

    @contextmanager
    def request(self, req: Request) -> Iterator[None]:
        """Run API calls, raising their failure as one translated CliError."""
        try:
            yield
        except CliError:
            raise
        except (ApiException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise translate(exc, req, self.server) from None

    # ---------------------------------------------------------- custom objects

    def get(self, kind: Kind, name: str, namespace: str) -> dict[str, Any]:
        with self.request(Request.for_kind("get", kind, namespace, name)):
            return _object(
                self.custom.get_namespaced_custom_object(
                    GROUP, VERSION, namespace, kind.plural, name, _request_timeout=REQUEST_TIMEOUT
                )
            )

    def find(self, kind: Kind, name: str, namespace: str) -> dict[str, Any] | None:
        """The object, or None when it does not exist (every other failure still raises)."""
        try:
            return self.get(kind, name, namespace)
        except CliError as exc:
            # A get names its object, so NOT_FOUND means that object (a missing CRD is CLUSTER).
            if exc.code == ExitCode.NOT_FOUND:
                return None
            raise

    def list_objects(self, kind: Kind, namespace: str | None, selector: str | None = None) -> list[dict[str, Any]]:
        """Objects of a kind in `namespace` (None: all namespaces), sorted by namespace and name."""
        with self.request(Request.for_kind("list", kind, namespace)):
            if namespace is None:
                result = _object(
                    self.custom.list_cluster_custom_object(
                        GROUP, VERSION, kind.plural, label_selector=selector, _request_timeout=REQUEST_TIMEOUT
                    )
                )
            else:
                result = _object(
                    self.custom.list_namespaced_custom_object(
                        GROUP,
                        VERSION,
                        namespace,
                        kind.plural,
                        label_selector=selector,
                        _request_timeout=REQUEST_TIMEOUT,
                    )
                )
        items = [dict(i, apiVersion=f"{GROUP}/{VERSION}", kind=kind.kind) for i in result.get("items", [])]
        return sorted(items, key=lambda o: (o["metadata"].get("namespace", ""), o["metadata"]["name"]))

    def apply(
        self, kind: Kind, body: dict[str, Any], namespace: str, *, force: bool = False, dry_run: bool = False
    ) -> dict[str, Any]:
        """Server-side apply of `body` (field manager `recplane`); returns the object as stored."""
        name = body["metadata"]["name"]
        with self.request(Request.for_kind("patch", kind, namespace, name)):
            # Read raw: the generated client maps only a 200 answer to a body, and an apply
            # that creates the object answers 201.
            return _json(
                self.custom.patch_namespaced_custom_object(
                    GROUP,
                    VERSION,
                    namespace,
                    kind.plural,
                    name,
                    body,
                    field_manager=FIELD_MANAGER,
                    force=force,
                    dry_run="All" if dry_run else None,
                    _content_type="application/apply-patch+yaml",
                    _preload_content=False,
                    _request_timeout=REQUEST_TIMEOUT,
                )
            )

    def merge_patch(
        self, kind: Kind, name: str, namespace: str, patch: dict[str, Any], *, dry_run: bool = False
    ) -> dict[str, Any]:
        """A JSON merge patch of the object (None values remove fields)."""
        with self.request(Request.for_kind("patch", kind, namespace, name)):
            return _object(
                self.custom.patch_namespaced_custom_object(
                    GROUP,
                    VERSION,
                    namespace,
                    kind.plural,
                    name,
                    patch,
                    field_manager=FIELD_MANAGER,
                    dry_run="All" if dry_run else None,
                    _content_type="application/merge-patch+json",
                    _request_timeout=REQUEST_TIMEOUT,
                )
            )

    def delete(self, kind: Kind, name: str, namespace: str) -> None:
        with self.request(Request.for_kind("delete", kind, namespace, name)):
            self.custom.delete_namespaced_custom_object(
                GROUP, VERSION, namespace, kind.plural, name, _request_timeout=REQUEST_TIMEOUT
            )

    def watch(
        self, kind: Kind, name: str, namespace: str, resource_version: str | None, timeout_s: int
    ) -> Iterator[tuple[str, dict[str, Any]]]:
        """(event type, object) for one object until the server ends the watch after `timeout_s`.

        An expired resource version (410) ends the iteration early; callers re-read and watch again.
        """
        with self.request(Request.for_kind("watch", kind, namespace, name)):
            w = watch.Watch()
            try:
                for event in w.stream(
                    self.custom.list_namespaced_custom_object,
                    GROUP,
                    VERSION,
                    namespace,
                    kind.plural,
                    field_selector=f"metadata.name={name}",
                    resource_version=resource_version,
                    timeout_seconds=max(1, timeout_s),
                    _request_timeout=(REQUEST_TIMEOUT[0], timeout_s + 15),
                ):
                    yield event["type"], event["raw_object"]
            except ApiException as exc:
                if exc.status != 410:
                    raise
            finally:
                w.stop()

    # ------------------------------------------------------------- core objects

    def events(self, namespace: str, kind: str, name: str) -> list[dict[str, Any]]:
        """Events about one object, oldest first."""
        with self.request(Request("list", "events", namespace, kind, name)):
            resp = self.core.list_namespaced_event(
                namespace,
                field_selector=f"involvedObject.kind={kind},involvedObject.name={name}",
                _preload_content=False,
                _request_timeout=REQUEST_TIMEOUT,
            )
        items = _json(resp).get("items", [])
        return sorted(items, key=lambda e: str(e.get("lastTimestamp") or e.get("eventTime") or ""))

    def pods(self, namespace: str, selector: str) -> list[dict[str, Any]]:
        with self.request(Request("list", "pods", namespace)):
            resp = self.core.list_namespaced_pod(
                namespace, label_selector=selector, _preload_content=False, _request_timeout=REQUEST_TIMEOUT
            )
        return list(_json(resp).get("items", []))

    def pod_log(
        self,
        namespace: str,
        pod: str,
        *,
        container: str | None = None,
        follow: bool = False,
        tail: int | None = None,
        previous: bool = False,
    ) -> Iterator[bytes]:
        """A pod's log as raw chunks; with `follow`, until the container ends or the caller stops."""
        with self.request(Request("get", "pods/log", namespace, "Pod", pod)):
            resp = _raw(
                self.core.read_namespaced_pod_log(
                    pod,
                    namespace,
                    container=container,
                    follow=follow,
                    tail_lines=tail,
                    previous=previous,
                    _preload_content=False,
                    # A followed log may stay quiet for hours: no read timeout (the pod list before it
                    # already proved the server reachable).
                    _request_timeout=None if follow else REQUEST_TIMEOUT,
                )
            )
            try:
                yield from resp.stream(4096, decode_content=True)
            finally:
                resp.release_conn()
