"""`recplane promote|rollback`: move a ModelDeployment between model versions.

Both edit the ModelDeployment's spec, like `kubectl rollout undo` edits a
Deployment, and leave the rollout itself to the operator: the served version
is pinned (`spec.model.follow: pinned`, `spec.model.trainJobRef.version`), so
newer TrainJob versions stop rolling out until `follow` is set back.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.text import Text

from recplane.api import GROUP, kind_of

from .options import (
    EXIT_CODES_HELP,
    CliError,
    Context,
    ExitCode,
    Kubeconfig,
    Namespace,
    Output,
    OutputFormat,
    Target,
    err_console,
    out_console,
    parse_time,
    print_objects,
    reports_errors,
)
from .resources import complete_model_deployments, named_targets

app = typer.Typer(help="Promote or roll back a ModelDeployment's model version.")

MODEL_DEPLOYMENT = kind_of("ModelDeployment")


@dataclass(frozen=True)
class Change:
    """One field the patch changes; `new` None means the field is removed."""

    path: str
    old: Any
    new: Any

    def __str__(self) -> str:
        def show(v: Any) -> str:
            if isinstance(v, dict):
                return "{" + ", ".join(f"{k}: {x}" for k, x in v.items()) + "}"
            return "(unset)" if v is None else str(v)

        return f"{self.path}: {show(self.old)} -> {'(removed)' if self.new is None else show(self.new)}"


@dataclass
class Plan:
    """A merge patch of the ModelDeployment and the changes it makes, for people."""

    version: str  # the version served once the operator has rolled the change out
    patch: dict[str, Any]
    changes: list[Change] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _model(md: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """spec.model and spec.model.trainJobRef, refusing a deployment that serves a URI."""
    name = md["metadata"]["name"]
    model = (md.get("spec") or {}).get("model") or {}
    ref = model.get("trainJobRef")
    if not ref:
        raise CliError(
            f"ModelDeployment {name} serves spec.model.uri, not a TrainJob's versions: "
            "edit spec.model.uri to change what it serves",
            ExitCode.FAILED,
        )
    return model, ref


def _pin(md: dict[str, Any], version: str) -> tuple[dict[str, Any], list[Change], list[str]]:
    """The spec.model part of a patch that pins `version`, the changes it makes, and what to know."""
    model, ref = _model(md)
    changes = []
    if ref.get("version") != version:
        changes.append(Change("spec.model.trainJobRef.version", ref.get("version"), version))
    follow = model.get("follow", "promoted")
    notes = []
    if follow != "pinned":
        changes.append(Change("spec.model.follow", follow, "pinned"))
        notes.append(
            f"follow is now pinned: new versions of TrainJob {ref['name']} will not roll out until "
            f"spec.model.follow is set back to {follow}"
        )
    patch = {"spec": {"model": {"trainJobRef": {"version": version}, "follow": "pinned"}}}
    # Optimistic concurrency: refuse (409) if the object changed since it was read.
    patch["metadata"] = {"resourceVersion": md["metadata"].get("resourceVersion")}
    return patch, changes, notes


def plan_promote(md: dict[str, Any]) -> Plan:
    """Make the canary version the stable one and drop the canary.

    The canary is spec.canary.version, or, on a deployment that rolls out each new version
    canary first (a weight without a version), the version status.canaryVersion is analysing.
    """
    name = md["metadata"]["name"]
    canary = (md.get("spec") or {}).get("canary") or {}
    version = canary.get("version") or (md.get("status") or {}).get("canaryVersion")
    if not version:
        raise CliError(
            f"ModelDeployment {name} has no canary to promote: set spec.canary.version "
            "(and spec.canary.weight) first, let it serve, then promote",
            ExitCode.FAILED,
        )
    patch, changes, notes = _pin(md, version)
    patch["spec"]["canary"] = None
    changes.append(Change("spec.canary", canary, None))
    return Plan(version, patch, changes, notes)


def history_newest_first(status: dict[str, Any]) -> list[str]:
    """Versions the deployment has served as its stable version, newest first, each once.

    Entries without `startedAt` never became stable (a rejected version, a canary still under
    analysis or replaced before promotion): never a rollback target. Ordered by `startedAt`,
    ties in list order (the operator appends, so the last entry is the newest).
    """
    entries = [e for e in status.get("history") or [] if e.get("startedAt")]
    times = [parse_time(e["startedAt"]) for e in entries]
    if all(t is not None for t in times):
        order = sorted(range(len(entries)), key=lambda i: (times[i] or datetime.min, i))
        entries = [entries[i] for i in order]
    seen: list[str] = []
    for e in reversed(entries):
        v = e.get("version")
        if v and v not in seen:
            seen.append(v)
    return seen


def plan_rollback(md: dict[str, Any], to: str | None = None) -> Plan:
    """Pin the previous version from status.history, or `to` when given (it must be in the history)."""
    name = md["metadata"]["name"]
    status = md.get("status") or {}
    served = history_newest_first(status)
    current = status.get("currentVersion") or (served[0] if served else None)
    if to is not None:
        if to not in served:
            known = ", ".join(served) or "none yet"
            raise CliError(
                f"version {to} is not in ModelDeployment {name}'s history (served: {known}): pick one of those",
                ExitCode.FAILED,
            )
        if to == current:
            raise CliError(f"ModelDeployment {name} already serves version {to}: nothing to roll back", ExitCode.FAILED)
        target = to
    else:
        older = [v for v in served if v != current]
        if not older:
            raise CliError(
                f"ModelDeployment {name} has no previous version in status.history to roll back to "
                f"(it has served: {', '.join(served) or 'nothing yet'})",
                ExitCode.FAILED,
            )
        target = older[0]
    patch, changes, notes = _pin(md, target)
    canary = (md.get("spec") or {}).get("canary")
    if canary and not canary.get("version"):
        # Canary first only applies to followed versions: a pinned deployment with a weight and no
        # version is refused by the API server, and rolling back means stopping new versions anyway.
        patch["spec"]["canary"] = None
        changes.append(Change("spec.canary", canary, None))
    elif canary:
        notes.append("the canary is unchanged: remove spec.canary too if it should stop taking traffic")
    return Plan(target, patch, changes, notes)


def _apply_plan(
    plan_for: Callable[[dict[str, Any]], Plan],
    target: str,
    command: str,
    verb: str,
    namespace: str | None,
    context: str | None,
    kubeconfig: Path | None,
    output: OutputFormat,
    dry_run: bool,
) -> None:
    targets = named_targets([target])
    kind, name = targets[0]
    if kind.kind != MODEL_DEPLOYMENT.kind or len(targets) != 1:
        raise CliError(f"{command} works on one ModelDeployment: md/NAME", ExitCode.USAGE)
    from .cluster import connect

    cluster = connect(Target(namespace=namespace, context=context, kubeconfig=kubeconfig))
    ns = cluster.namespace(namespace)
    md = cluster.get(kind, name, ns)
    plan = plan_for(md)
    updated = cluster.merge_patch(kind, name, ns, plan.patch, dry_run=dry_run) if plan.changes else md
    if output not in (OutputFormat.table, OutputFormat.wide):
        print_objects([updated], output, single=True)
        return
    suffix = " (server dry run)" if dry_run else ""
    if not plan.changes:
        out_console.print(f"{kind.singular}.{GROUP}/{name} already pinned to {plan.version}: unchanged", soft_wrap=True)
        return
    out_console.print(f"{kind.singular}.{GROUP}/{name} {verb} to {plan.version}{suffix}", soft_wrap=True)
    for change in plan.changes:
        out_console.print(Text(f"  {change}"), soft_wrap=True)
    for note in plan.notes:
        err_console.print(Text("note: ", style="yellow") + Text(note))


TargetArg = Annotated[str, typer.Argument(metavar="md/NAME", autocompletion=complete_model_deployments)]
DryRun = Annotated[bool, typer.Option("--dry-run", help="Show the change and check it on the server; change nothing.")]


@app.command(epilog=EXIT_CODES_HELP)
@reports_errors
def promote(
    target: TargetArg,
    namespace: Namespace = None,
    context: Context = None,
    kubeconfig: Kubeconfig = None,
    output: Output = OutputFormat.table,
    dry_run: DryRun = False,
) -> None:
    """Make a ModelDeployment's canary version the stable one (pins it and removes the canary)."""
    _apply_plan(plan_promote, target, "promote", "promoted", namespace, context, kubeconfig, output, dry_run)


@app.command(epilog=EXIT_CODES_HELP)
@reports_errors
def rollback(
    target: TargetArg,
    to: Annotated[
        str | None,
        typer.Option("--to", help="Version to go back to.", show_default="the previous one in status.history"),
    ] = None,
    namespace: Namespace = None,
    context: Context = None,
    kubeconfig: Kubeconfig = None,
    output: Output = OutputFormat.table,
    dry_run: DryRun = False,
) -> None:
    """Serve the previous model version again (or --to VERSION), pinning it."""
    _apply_plan(
        lambda md: plan_rollback(md, to),
        target,
        "rollback",
        "rolled back",
        namespace,
        context,
        kubeconfig,
        output,
        dry_run,
    )
