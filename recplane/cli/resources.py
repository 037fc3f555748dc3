"""`recplane apply|get|describe|delete|wait|logs`: the kubectl verbs for recplane's resources.

Resources are named the way kubectl names them: `tj feed-deepfm`, `tj/feed-deepfm`,
`trainjobs`, `TrainJob`; `get` without a kind lists all four kinds.
"""

from __future__ import annotations

import math
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer
import yaml
from rich.console import Group, RenderableType
from rich.text import Text

from recplane.api import API_VERSION, GROUP, KINDS, PIPELINE_ORDER, VERSION, Kind, kind_of
from recplane.api.resource import Resource, ResourceError, load_resources, parse_resource

from .options import (
    EXIT_CODES_HELP,
    AllNamespaces,
    CliError,
    Context,
    ExitCode,
    Kubeconfig,
    Namespace,
    Output,
    OutputFormat,
    Target,
    err_console,
    format_cell,
    format_duration,
    human_age,
    out_console,
    parse_duration,
    print_natural,
    print_objects,
    print_table,
    reports_errors,
    resource_rows,
    timeout_option,
)

if TYPE_CHECKING:
    from .cluster import Cluster

app = typer.Typer(help="Cluster verbs for recplane resources.")

# Kubernetes labels each pod of an Indexed Job with its index; a TrainJob worker's index is its node rank.
JOB_COMPLETION_INDEX = "batch.kubernetes.io/job-completion-index"
ALL_KINDS_ALIASES = ("all", "recplane")


# --------------------------------------------------------------- naming things


def parse_targets(args: Sequence[str], *, names_required: bool = False) -> list[tuple[Kind, str | None]]:
    """(kind, name) pairs from kubectl-style arguments; name None means every object of the kind.

    Accepts `KIND`, `KIND NAME...`, `KIND/NAME...`, `KIND1,KIND2` and `all`/`recplane` (every kind);
    no arguments means every kind.
    """
    if not args:
        if names_required:
            raise CliError("name a resource: KIND NAME or KIND/NAME, e.g. tj/feed-deepfm", ExitCode.USAGE)
        return [(KINDS[k], None) for k in PIPELINE_ORDER]
    slashed = ["/" in a for a in args]
    if any(slashed):
        if not all(slashed):
            raise CliError(
                "use either KIND NAME... or KIND/NAME..., not both: "
                f"{' '.join(a for a, s in zip(args, slashed, strict=True) if not s)} has no kind",
                ExitCode.USAGE,
            )
        out: list[tuple[Kind, str | None]] = []
        for a in args:
            kind_name, _, name = a.partition("/")
            if not name:
                raise CliError(f"{a}: name the resource after the slash, e.g. tj/feed-deepfm", ExitCode.USAGE)
            out.append((_kind(kind_name), name))
        return out
    kinds_arg, names = args[0], list(args[1:])
    if kinds_arg.lower() in ALL_KINDS_ALIASES:
        kinds = [KINDS[k] for k in PIPELINE_ORDER]
    else:
        kinds = [_kind(k) for k in kinds_arg.split(",") if k]
    if names and len(kinds) > 1:
        raise CliError(f"names need exactly one kind, got {kinds_arg}: use KIND/NAME for several", ExitCode.USAGE)
    if not names:
        if names_required:
            raise CliError(f"name the {kinds[0].kind} too: {kinds[0].short}/NAME", ExitCode.USAGE)
        return [(k, None) for k in kinds]
    return [(kinds[0], n) for n in names]


def named_targets(args: Sequence[str]) -> list[tuple[Kind, str]]:
    """Like parse_targets, but every target must name one object."""
    return [(k, n) for k, n in parse_targets(args, names_required=True) if n is not None]


def _kind(name: str) -> Kind:
    try:
        return kind_of(name)
    except KeyError as exc:
        raise CliError(str(exc.args[0]), ExitCode.USAGE) from None


def qualified(kind: Kind, name: str) -> str:
    """`trainjob.recplane.io/feed-deepfm`, as kubectl prints a resource it acted on."""
    return f"{kind.singular}.{GROUP}/{name}"


def _connect(namespace: str | None, context: str | None, kubeconfig: Path | None) -> Cluster:
    # Imported here: the kubernetes client takes a third of a second to import, which
    # `recplane --help`, shell completion and the pods' `recplane step` should not pay.
    from .cluster import connect

    return connect(Target(namespace=namespace, context=context, kubeconfig=kubeconfig))


# ------------------------------------------------------------------ completion


def complete_targets(ctx: typer.Context, incomplete: str) -> list[str]:
    """Shell completion of kinds and, when a cluster answers within two seconds, of names."""
    before = [t for t in ctx.params.get("targets") or [] if t != incomplete]
    try:
        if "/" in incomplete:
            kind_name, _, prefix = incomplete.partition("/")
            return [f"{kind_name}/{n}" for n in _names(ctx, kind_of(kind_name)) if n.startswith(prefix)]
        if before and "/" not in before[0] and before[0].lower() not in ALL_KINDS_ALIASES:
            return [n for n in _names(ctx, kind_of(before[0])) if n.startswith(incomplete)]
    except Exception:
        # Completion must never print a traceback into the user's shell.
        return []
    kinds = [k.short for k in KINDS.values()] + [k.plural for k in KINDS.values()]
    return [k for k in kinds if k.startswith(incomplete)]


def complete_model_deployments(ctx: typer.Context, incomplete: str) -> list[str]:
    """Shell completion of `md/NAME` for promote and rollback."""
    try:
        names = [f"md/{n}" for n in _names(ctx, KINDS["ModelDeployment"])]
    except Exception:
        return []
    return [n for n in names if n.startswith(incomplete)]


def _names(ctx: typer.Context, kind: Kind) -> list[str]:
    params = ctx.params
    cluster = _connect(params.get("namespace"), params.get("context"), params.get("kubeconfig"))
    ns = cluster.namespace(params.get("namespace"))
    items = cluster.custom.list_namespaced_custom_object(GROUP, VERSION, ns, kind.plural, _request_timeout=2)
    return sorted(i["metadata"]["name"] for i in items.get("items", [])) if isinstance(items, dict) else []


TargetsArg = Annotated[
    list[str] | None,
    typer.Argument(
        metavar="RESOURCE",
        help="KIND, KIND NAME... or KIND/NAME... (tj, tj feed-deepfm, tj/feed-deepfm md/feed-ranker).",
        autocompletion=complete_targets,
        show_default=False,
    ),
]
RequiredTargetsArg = Annotated[
    list[str],
    typer.Argument(
        metavar="RESOURCE",
        help="KIND NAME... or KIND/NAME... (tj feed-deepfm, tj/feed-deepfm md/feed-ranker).",
        autocompletion=complete_targets,
    ),
]


# ----------------------------------------------------------------------- apply


def read_manifests(filenames: Sequence[str], namespace: str | None = None) -> list[Resource]:
    """Every resource in the files, directories or stdin (`-`), validated by the API models.

    Namespaces stay empty unless a document sets one; the caller fills in `-n` or the context's.
    A document whose namespace differs from `namespace` (the `-n` flag) is refused, as kubectl does.
    Raises ResourceError naming the file, object and field of the first invalid document.
    """
    out: list[Resource] = []
    for f in filenames:
        if f == "-":
            try:
                docs = list(yaml.safe_load_all(sys.stdin.read()))
            except yaml.YAMLError as exc:
                raise ResourceError(f"<stdin>: cannot read YAML: {exc}") from None
            out.extend(parse_resource(d, "", "<stdin>") for d in docs if d)
            continue
        path = Path(f)
        if not path.exists():
            raise ResourceError(f"{f}: no such file or directory")
        found = load_resources([path], default_namespace="")
        if not found:
            raise ResourceError(f"{f}: no recplane resources in it (expected YAML files with apiVersion {API_VERSION})")
        out.extend(found)
    for res in out:
        if namespace and res.namespace and res.namespace != namespace:
            raise CliError(
                f"{res.kind}/{res.name} is in namespace {res.namespace} but -n says {namespace}: "
                "drop -n or change metadata.namespace",
                ExitCode.USAGE,
            )
    return out


def _namespace_for(resource: Resource, explicit: str | None, default: str) -> str:
    return resource.namespace or explicit or default


def _same_content(before: dict[str, Any], after: dict[str, Any]) -> bool:
    keys = ("labels", "annotations")
    return before.get("spec") == after.get("spec") and all(
        before["metadata"].get(k) == after["metadata"].get(k) for k in keys
    )


@app.command(epilog=EXIT_CODES_HELP)
@reports_errors
def apply(
    filenames: Annotated[
        list[str],
        typer.Option(
            "--filename",
            "-f",
            help="YAML file or directory of recplane resources (multi-document); `-` reads stdin. Repeatable.",
        ),
    ],
    namespace: Namespace = None,
    context: Context = None,
    kubeconfig: Kubeconfig = None,
    output: Output = OutputFormat.table,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Validate here and on the server (schema, CEL rules); change nothing.")
    ] = False,
    force_conflicts: Annotated[
        bool, typer.Option("--force-conflicts", help="Take over fields another field manager owns.")
    ] = False,
) -> None:
    """Create or update resources from YAML (server-side apply, field manager `recplane`).

    Every document is validated first with the same models and rules the API
    server uses; if any is invalid nothing is sent.
    """
    # Upstream first (SampleSet ... ModelDeployment), so the operator meets references it can resolve.
    resources = sorted(read_manifests(filenames, namespace), key=lambda r: PIPELINE_ORDER.index(r.kind))
    cluster = _connect(namespace, context, kubeconfig)
    applied: list[dict[str, Any]] = []
    refused = 0
    suffix = " (server dry run)" if dry_run else ""
    for res in resources:
        kind = kind_of(res.kind)
        ns = _namespace_for(res, namespace, cluster.default_namespace)
        body = dict(res.raw)
        body["metadata"] = {**(res.raw.get("metadata") or {}), "namespace": ns}
        before = cluster.find(kind, res.name, ns)
        try:
            after = cluster.apply(kind, body, ns, force=force_conflicts, dry_run=dry_run)
        except CliError as exc:
            if exc.code != ExitCode.FAILED:
                raise  # the cluster itself is the problem: nothing further will succeed
            err_console.print(Text("error: ", style="bold red") + Text(exc.message))
            refused += 1
            continue
        if before is None:
            action = "created"
        elif (dry_run and _same_content(before, after)) or (
            not dry_run and before["metadata"].get("resourceVersion") == after["metadata"].get("resourceVersion")
        ):
            action = "unchanged"
        else:
            action = "configured"
        applied.append(after)
        if output in (OutputFormat.table, OutputFormat.wide):
            out_console.print(f"{qualified(kind, res.name)} {action}{suffix}", soft_wrap=True)
    if output not in (OutputFormat.table, OutputFormat.wide) and applied:
        print_objects(applied, output, single=len(resources) == 1)
    if refused:
        raise CliError(f"{refused} of {len(resources)} resources refused by the API server", ExitCode.FAILED)


# ------------------------------------------------------------------------- get


@app.command(epilog=EXIT_CODES_HELP)
@reports_errors
def get(
    targets: TargetsArg = None,
    namespace: Namespace = None,
    all_namespaces: AllNamespaces = False,
    selector: Annotated[
        str | None, typer.Option("--selector", "-l", help="Label selector, e.g. team=feed.", show_default=False)
    ] = None,
    context: Context = None,
    kubeconfig: Kubeconfig = None,
    output: Output = OutputFormat.table,
) -> None:
    """List resources, or show some by name; without a kind, all four kinds (like `kubectl get recplane`)."""
    from .cluster import not_found

    wanted = parse_targets(targets or [])
    if all_namespaces and any(name for _, name in wanted):
        raise CliError("-A lists; an object is fetched by name in one namespace: use -n instead", ExitCode.USAGE)
    cluster = _connect(namespace, context, kubeconfig)
    ns = None if all_namespaces else cluster.namespace(namespace)
    found: dict[str, list[dict[str, Any]]] = {}
    missing: list[CliError] = []
    for kind, name in wanted:
        if name is None:
            found.setdefault(kind.kind, []).extend(cluster.list_objects(kind, ns, selector))
            continue
        obj = cluster.find(kind, name, cluster.namespace(namespace))
        if obj is None:
            missing.append(not_found(kind.kind, name, cluster.namespace(namespace)))
        else:
            found.setdefault(kind.kind, []).append(obj)
    objects = [o for objs in found.values() for o in objs]

    if output in (OutputFormat.table, OutputFormat.wide):
        several_kinds = len({k.kind for k, _ in wanted}) > 1
        printed = False
        for kind_name, objs in found.items():
            if not objs:
                continue
            if printed:
                out_console.print()
            headers, rows = resource_rows(
                KINDS[kind_name],
                objs,
                wide=output is OutputFormat.wide,
                with_namespace=all_namespaces,
                qualify=several_kinds,
            )
            print_table(headers, rows)
            printed = True
        if not printed and not missing:
            where = "any namespace" if ns is None else f"{ns} namespace"
            err_console.print(f"No resources found in {where}.")
    elif objects or not missing:
        single = len(wanted) == 1 and wanted[0][1] is not None
        print_objects(objects, output, single=single)
    for exc in missing[:-1]:
        err_console.print(Text("error: ", style="bold red") + Text(exc.message))
    if missing:
        raise missing[-1]


# -------------------------------------------------------------------- describe


def _yaml_block(data: dict[str, Any], indent: int = 2) -> str:
    """A mapping as block YAML whose innermost lists and maps stay on one line (`denseLayers: [128, 64]`)."""
    lines: list[str] = []
    for key, value in data.items():
        nested = isinstance(value, dict | list) and bool(value)
        text = yaml.safe_dump({key: value}, sort_keys=False, default_flow_style=None if nested else False, width=100)
        lines.extend(text.rstrip("\n").splitlines())
    return "\n".join(" " * indent + line for line in lines)


def _field(label: str, value: Any) -> Text:
    return Text(f"{label + ':':<14}{value}")


def _sub_table(
    title: str, headers: Sequence[str], rows: Sequence[Sequence[str]], empty: str = "<none>"
) -> RenderableType:
    if not rows:
        return _field(title, empty)
    from .options import table

    return Group(Text(f"{title}:"), _indented(table(headers, rows)))


def _indented(renderable: RenderableType) -> RenderableType:
    from rich.padding import Padding

    return Padding(renderable, (0, 0, 0, 2), expand=False)


def describe_object(
    kind: Kind, obj: dict[str, Any], events: Sequence[dict[str, Any]], now: datetime | None = None
) -> RenderableType:
    """What `describe` shows for one object: identity, spec, status, conditions, versions/history, events."""
    meta = obj.get("metadata", {})
    status = dict(obj.get("status") or {})
    generation = meta.get("generation")
    observed = status.get("observedGeneration")
    created = meta.get("creationTimestamp")
    labels = ", ".join(f"{k}={v}" for k, v in sorted((meta.get("labels") or {}).items())) or "<none>"
    parts: list[RenderableType] = [
        _field("Name", meta.get("name", "")),
        _field("Namespace", meta.get("namespace", "")),
        _field("Kind", f"{kind.kind} ({obj.get('apiVersion', API_VERSION)})"),
        _field("Labels", labels),
        _field("Created", f"{created} ({human_age(created, now)} ago)" if created else "<unknown>"),
    ]
    if generation is not None:
        behind = (
            f" (status describes generation {observed}: the operator has not caught up yet)"
            if observed is not None and observed < generation
            else ""
        )
        parts.append(_field("Generation", f"{generation}{behind}"))
    if meta.get("deletionTimestamp"):
        finalizers = ", ".join(meta.get("finalizers") or []) or "none"
        parts.append(_field("Deleting", f"for {human_age(meta['deletionTimestamp'], now)} (finalizers: {finalizers})"))
    parts.append(_field("Phase", status.get("phase") or "<none>"))
    parts.append(Text("Spec:\n" + _yaml_block(obj.get("spec") or {})))

    conditions = status.pop("conditions", None) or []
    versions = status.pop("versions", None) or []
    history = status.pop("history", None) or []
    for key in ("phase", "observedGeneration"):
        status.pop(key, None)
    parts.append(Text("Status:\n" + _yaml_block(status)) if status else _field("Status", "<none>"))
    parts.append(
        _sub_table(
            "Conditions",
            ["TYPE", "STATUS", "REASON", "MESSAGE", "AGE"],
            [
                [
                    str(c.get("type", "")),
                    str(c.get("status", "")),
                    str(c.get("reason", "")),
                    str(c.get("message", "")),
                    human_age(c.get("lastTransitionTime"), now),
                ]
                for c in conditions
            ],
        )
    )
    if kind.kind == "TrainJob":
        promoted = (obj.get("status") or {}).get("promotedVersion")
        parts.append(
            _sub_table(
                "Versions",
                ["VERSION", "AGE", "AUC", "LOGLOSS", "PROMOTED", "REASON"],
                [
                    [
                        str(v.get("version", "")) + (" (serving)" if v.get("version") == promoted else ""),
                        human_age(v.get("createdAt"), now),
                        format_cell((v.get("metrics") or {}).get("auc")),
                        format_cell((v.get("metrics") or {}).get("logloss")),
                        format_cell(v.get("promoted")),
                        str(v.get("reason") or ""),
                    ]
                    for v in versions
                ],
            )
        )
    if kind.kind == "ModelDeployment":
        st = obj.get("status") or {}
        marks = {st.get("currentVersion"): "current", st.get("canaryVersion"): "canary"}
        parts.append(
            _sub_table(
                "History",
                ["VERSION", "STARTED", "REASON", ""],
                [
                    [
                        str(h.get("version", "")),
                        f"{human_age(h.get('startedAt'), now)} ago" if h.get("startedAt") else "",
                        str(h.get("reason") or ""),
                        marks.get(h.get("version"), ""),
                    ]
                    for h in history
                ],
            )
        )
    parts.append(
        _sub_table(
            "Events",
            ["TYPE", "REASON", "AGE", "FROM", "MESSAGE"],
            [
                [
                    str(e.get("type", "")),
                    str(e.get("reason", "")),
                    human_age(e.get("lastTimestamp") or e.get("eventTime") or e.get("firstTimestamp"), now)
                    + (f" (x{e['count']})" if (e.get("count") or 1) > 1 else ""),
                    str((e.get("source") or {}).get("component") or e.get("reportingComponent") or ""),
                    str(e.get("message", "")).strip(),
                ]
                for e in events
            ],
        )
    )
    return Group(*parts)


@app.command(epilog=EXIT_CODES_HELP)
@reports_errors
def describe(
    targets: RequiredTargetsArg,
    namespace: Namespace = None,
    context: Context = None,
    kubeconfig: Kubeconfig = None,
) -> None:
    """Show one resource in detail: spec, status, conditions, versions or history, and recent events."""
    wanted = parse_targets(targets)
    cluster = _connect(namespace, context, kubeconfig)
    ns = cluster.namespace(namespace)
    first = True
    for kind, name in wanted:
        objects = [cluster.get(kind, name, ns)] if name else cluster.list_objects(kind, ns)
        for obj in objects:
            if not first:
                out_console.print()
            first = False
            events = cluster.events(ns, kind.kind, obj["metadata"]["name"])
            print_natural(describe_object(kind, obj, events))


# ------------------------------------------------------------------ waiting


@dataclass(frozen=True)
class Verdict:
    """Where a wait stands: `met`, `failed` (will not get there), `gone` (deleted) or still `waiting`."""

    state: Literal["met", "failed", "gone", "waiting"]
    detail: str = ""


@dataclass(frozen=True)
class WaitFor:
    """A parsed `--for`: `condition=TYPE[=STATUS]` or `delete`."""

    condition: str | None  # None: wait for deletion
    status: str = "True"

    @staticmethod
    def parse(text: str) -> WaitFor:
        if text.strip().lower() == "delete":
            return WaitFor(None)
        what, _, rest = text.partition("=")
        if what.strip().lower() == "condition" and rest:
            cond, _, status = rest.partition("=")
            return WaitFor(cond.strip(), status.strip() or "True")
        raise CliError(f"--for={text}: use condition=TYPE[=STATUS] (e.g. condition=Ready) or delete", ExitCode.USAGE)

    def describe(self) -> str:
        if self.condition is None:
            return "be deleted"
        return f"be {self.condition}" if self.status == "True" else f"have {self.condition}={self.status}"

    def verdict(self, obj: dict[str, Any] | None) -> Verdict:
        if self.condition is None:
            return Verdict("met") if obj is None else Verdict("waiting", _deleting_detail(obj))
        return condition_verdict(obj, self.condition, self.status)


def _deleting_detail(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata", {})
    finalizers = meta.get("finalizers") or []
    if meta.get("deletionTimestamp") and finalizers:
        return f"finalizers {', '.join(finalizers)} still pending (is the recplane operator running?)"
    return "still there"


def condition_verdict(obj: dict[str, Any] | None, condition: str, want: str = "True") -> Verdict:
    """Has `obj` reached condition=want, failed for good, or is it still on its way?

    A condition written for an older generation than the spec's does not count
    (the operator has not looked at the new spec yet), as with kubectl wait.
    """
    if obj is None:
        return Verdict("gone", "it was deleted")
    generation = obj.get("metadata", {}).get("generation")
    status = obj.get("status") or {}
    by_type = {c.get("type"): c for c in status.get("conditions") or []}

    def current(part: dict[str, Any]) -> bool:
        observed = part.get("observedGeneration")
        return not (generation and observed and observed < generation)

    cond = by_type.get(condition)
    if cond is not None and current(cond) and cond.get("status") == want:
        return Verdict("met")
    if condition != "Failed":
        failed = by_type.get("Failed")
        if failed is not None and current(failed) and failed.get("status") == "True":
            return Verdict("failed", _explain(failed))
        if status.get("phase") == "Failed" and current(status):
            return Verdict("failed", _explain(cond) or "phase Failed")
    if cond is None:
        phase = status.get("phase")
        return Verdict("waiting", f"no {condition} condition yet" + (f" (phase {phase})" if phase else ""))
    stale = "" if current(cond) else " (written for an older generation)"
    return Verdict("waiting", f"{condition}={cond.get('status')}{stale}: {_explain(cond)}")


def _explain(cond: dict[str, Any] | None) -> str:
    if not cond:
        return ""
    reason, message = cond.get("reason") or "", cond.get("message") or ""
    return f"{reason}: {message}" if reason and message else reason or message


def wait_until(
    cluster: Cluster,
    kind: Kind,
    name: str,
    namespace: str,
    judge: Callable[[dict[str, Any] | None], Verdict],
    deadline: float,
    progress: Callable[[str], None] = lambda _: None,
) -> Verdict:
    """Watch one object until `judge` says anything but `waiting`, or the (monotonic) deadline passes.

    Returns the last verdict; a `waiting` one means the deadline passed.
    """
    obj = cluster.find(kind, name, namespace)
    while True:
        verdict = judge(obj)
        if verdict.state != "waiting":
            return verdict
        progress(verdict.detail)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return verdict
        version = obj["metadata"].get("resourceVersion") if obj else None
        for event_type, event_obj in cluster.watch(kind, name, namespace, version, math.ceil(min(remaining, 60))):
            obj = None if event_type == "DELETED" else event_obj
            verdict = judge(obj)
            if verdict.state != "waiting":
                return verdict
            progress(verdict.detail)
            if time.monotonic() >= deadline:
                return verdict
        # The watch window closed (or its resource version expired): read afresh and watch again.
        obj = cluster.find(kind, name, namespace)


@app.command(epilog=EXIT_CODES_HELP)
@reports_errors
def wait(
    targets: RequiredTargetsArg,
    for_: Annotated[
        str, typer.Option("--for", help="condition=TYPE[=STATUS] (e.g. condition=Ready) or delete.")
    ] = "condition=Ready",
    timeout: Annotated[float, timeout_option("5m")] = parse_duration("5m"),
    namespace: Namespace = None,
    context: Context = None,
    kubeconfig: Kubeconfig = None,
) -> None:
    """Wait until resources reach a condition (default Ready) or are deleted.

    Exits 1 with the condition's message when a resource fails, 5 when the
    timeout passes first, 3 when it does not exist.
    """
    condition = WaitFor.parse(for_)
    wanted = named_targets(targets)
    cluster = _connect(namespace, context, kubeconfig)
    ns = cluster.namespace(namespace)
    deadline = time.monotonic() + timeout
    for kind, name in wanted:
        label = qualified(kind, name)
        if condition.condition is not None and cluster.find(kind, name, ns) is None:
            raise CliError(f"{kind.kind} {name} not found in namespace {ns}", ExitCode.NOT_FOUND)
        with err_console.status(f"waiting for {label} to {condition.describe()}") as spinner:

            def show(detail: str, label: str = label) -> None:
                spinner.update(f"waiting for {label}: {detail}")

            verdict = wait_until(cluster, kind, name, ns, condition.verdict, deadline, show)
        if verdict.state == "met":
            out_console.print(
                f"{label} {'deleted' if condition.condition is None else 'condition met'}", soft_wrap=True
            )
        elif verdict.state == "failed":
            raise CliError(f"{kind.kind} {name} failed: {verdict.detail}", ExitCode.FAILED)
        elif verdict.state == "gone":
            raise CliError(
                f"{kind.kind} {name} was deleted while waiting for it to {condition.describe()}", ExitCode.NOT_FOUND
            )
        else:
            raise CliError(
                f"timed out after {format_duration(timeout)} waiting for {kind.kind} {name} to "
                f"{condition.describe()}; now {verdict.detail}",
                ExitCode.TIMEOUT,
            )


# ---------------------------------------------------------------------- delete


@app.command(epilog=EXIT_CODES_HELP)
@reports_errors
def delete(
    targets: TargetsArg = None,
    filenames: Annotated[
        list[str] | None,
        typer.Option(
            "--filename", "-f", help="Delete the resources in these YAML files or directories.", show_default=False
        ),
    ] = None,
    namespace: Namespace = None,
    context: Context = None,
    kubeconfig: Kubeconfig = None,
    wait_: Annotated[
        bool, typer.Option("--wait/--no-wait", help="Wait until they are gone (the operator's finalizers ran).")
    ] = True,
    timeout: Annotated[float, timeout_option("2m")] = parse_duration("2m"),
    ignore_not_found: Annotated[
        bool, typer.Option("--ignore-not-found", help="Succeed for resources that do not exist.")
    ] = False,
) -> None:
    """Delete resources by name or by the files that created them."""
    from .cluster import not_found

    if targets and filenames:
        raise CliError("name resources or pass -f, not both", ExitCode.USAGE)
    from_files = read_manifests(filenames, namespace) if filenames else []
    named = [] if filenames else named_targets(targets or [])
    cluster = _connect(namespace, context, kubeconfig)
    default_ns = cluster.namespace(namespace)
    doomed = [(kind_of(r.kind), r.name, _namespace_for(r, namespace, default_ns)) for r in from_files]
    doomed += [(k, n, default_ns) for k, n in named]
    deleted: list[tuple[Kind, str, str]] = []
    missing: list[CliError] = []
    for kind, name, ns in doomed:
        try:
            cluster.delete(kind, name, ns)
        except CliError as failure:
            if failure.code != ExitCode.NOT_FOUND:
                raise
            if not ignore_not_found:
                missing.append(not_found(kind.kind, name, ns))
            continue
        out_console.print(f'{kind.singular}.{GROUP} "{name}" deleted', soft_wrap=True)
        deleted.append((kind, name, ns))
    if wait_ and deleted:
        deadline = time.monotonic() + timeout
        for kind, name, ns in deleted:
            with err_console.status(f"waiting for {qualified(kind, name)} to be gone"):
                verdict = wait_until(cluster, kind, name, ns, WaitFor(None).verdict, deadline)
            if verdict.state != "met":
                raise CliError(
                    f"{kind.kind} {name} is still there after {format_duration(timeout)}: {verdict.detail}",
                    ExitCode.TIMEOUT,
                )
    for later in missing[:-1]:
        err_console.print(Text("error: ", style="bold red") + Text(later.message))
    if missing:
        raise missing[-1]


# ------------------------------------------------------------------------ logs


def pod_selector(kind: Kind, name: str, rank: int) -> str:
    """The label selector of the pods the operator runs for a resource (a TrainJob: its workers of one rank).

    The labels are the operator's own (recplane.operator.names), so both always agree.
    """
    from recplane.operator import names

    match = names.selector_labels(kind.kind, name)
    if kind.kind == "TrainJob":
        match = {**match, names.ROLE_LABEL: "worker", JOB_COMPLETION_INDEX: str(rank)}
    return names.label_selector(match)


def newest_first(pods: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Pods by restart attempt (the operator's attempt label), then creation time, newest first."""
    from recplane.operator import names

    def key(pod: dict[str, Any]) -> tuple[int, str, str]:
        meta = pod["metadata"]
        attempt = (meta.get("labels") or {}).get(names.ATTEMPT_LABEL, "0")
        return (int(attempt) if attempt.isdigit() else 0, meta.get("creationTimestamp") or "", meta["name"])

    return sorted(pods, key=key, reverse=True)


def _default_container(pod: dict[str, Any]) -> str | None:
    containers = [c["name"] for c in pod.get("spec", {}).get("containers", [])]
    if len(containers) <= 1:
        return None  # the API server picks the only one
    annotated = (pod["metadata"].get("annotations") or {}).get("kubectl.kubernetes.io/default-container")
    return annotated if annotated in containers else containers[0]


def prefixed_lines(chunks: Iterable[bytes], prefix: bytes) -> Iterator[bytes]:
    """Re-cut a byte stream into whole lines, each starting with `prefix`."""
    pending = b""
    for chunk in chunks:
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            yield prefix + line + b"\n"
    if pending:
        yield prefix + pending + b"\n"


@app.command(epilog=EXIT_CODES_HELP)
@reports_errors
def logs(
    targets: RequiredTargetsArg,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep streaming new lines.")] = False,
    tail: Annotated[int, typer.Option("--tail", help="Lines from the end of each log; -1 for all.")] = -1,
    rank: Annotated[int, typer.Option("--rank", help="TrainJob worker rank whose log to show.")] = 0,
    container: Annotated[
        str | None,
        typer.Option("--container", "-c", help="Container.", show_default="the pod's only or default one"),
    ] = None,
    previous: Annotated[
        bool, typer.Option("--previous", "-p", help="The log of the previous (crashed) container.")
    ] = False,
    namespace: Namespace = None,
    context: Context = None,
    kubeconfig: Kubeconfig = None,
) -> None:
    """Print a resource's pod logs: a TrainJob's rank-0 worker, a ModelDeployment's replicas.

    A SampleSet's or FeatureSet's logs are those of its newest job pod.
    """
    wanted = named_targets(targets)
    if len(wanted) != 1:
        raise CliError("logs takes one resource, e.g. tj/feed-deepfm", ExitCode.USAGE)
    kind, name = wanted[0]
    cluster = _connect(namespace, context, kubeconfig)
    ns = cluster.namespace(namespace)
    cluster.get(kind, name, ns)  # a missing resource says so, not "no pods"
    selector = pod_selector(kind, name, rank)
    pods = newest_first(cluster.pods(ns, selector))
    if not pods:
        which = f" rank {rank}" if kind.kind == "TrainJob" else ""
        raise CliError(
            f"no{which} pods of {kind.kind} {name} in namespace {ns} yet (selector {selector}): "
            f"see `recplane describe {kind.short}/{name}` for why",
            ExitCode.NOT_FOUND,
        )
    # A deployment: every replica, stable and canary. Otherwise the newest pod: older ones
    # belong to restarted attempts or earlier data versions.
    pods = sorted(pods, key=lambda p: str(p["metadata"]["name"])) if kind.kind == "ModelDeployment" else pods[:1]

    def chunks(pod: dict[str, Any]) -> Iterator[bytes]:
        return cluster.pod_log(  # type: ignore[no-any-return]
            ns,
            pod["metadata"]["name"],
            container=container or _default_container(pod),
            follow=follow,
            tail=None if tail < 0 else tail,
            previous=previous,
        )

    out = sys.stdout.buffer
    if len(pods) == 1:
        for chunk in chunks(pods[0]):
            out.write(chunk)
            out.flush()
        return
    lock = threading.Lock()
    failures: list[BaseException] = []

    def pump(pod: dict[str, Any]) -> None:
        try:
            for line in prefixed_lines(chunks(pod), f"[pod/{pod['metadata']['name']}] ".encode()):
                with lock:
                    out.write(line)
                    out.flush()
        except BaseException as exc:  # reported by the main thread
            failures.append(exc)

    if not follow:
        for pod in pods:
            pump(pod)
    else:
        threads = [threading.Thread(target=pump, args=(p,), daemon=True) for p in pods]
        for t in threads:
            t.start()
        while any(t.is_alive() for t in threads):
            for t in threads:
                t.join(timeout=0.2)
    if failures:
        first = failures[0]
        raise first if isinstance(first, CliError) else CliError(str(first))


__all__ = ["app", "complete_targets", "condition_verdict", "describe_object", "parse_targets", "read_manifests"]
