"""`recplane operator`: run the operator, or print what installing it takes."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer
import yaml
from rich.console import Console

app = typer.Typer(no_args_is_help=True, help="Run the recplane operator (kopf) or print its RBAC and peering objects.")
err = Console(stderr=True)
LOG_FORMATS = ("json", "plain", "full")


@app.command()
def run(
    namespace: list[str] = typer.Option(
        [], "--namespace", "-n", help="Serve only this namespace (repeatable). Default: all namespaces."
    ),
    all_namespaces: bool = typer.Option(False, "--all-namespaces", "-A", help="Serve every namespace (the default)."),
    metrics_port: int = typer.Option(9090, help="Port of the Prometheus /metrics endpoint; 0 turns it off."),
    health_port: int = typer.Option(8080, help="Port of the liveness/readiness endpoint /healthz; 0 turns it off."),
    peering: str = typer.Option("recplane", help="kopf peering object used for leader election between replicas."),
    standalone: bool = typer.Option(False, help="No leader election (exactly one replica must run)."),
    priority: int | None = typer.Option(None, help="Peering priority; default random, so one replica wins."),
    peering_lifetime: int = typer.Option(60, help="Seconds before a crashed replica's peering entry expires."),
    kubeconfig: Path | None = typer.Option(None, envvar="KUBECONFIG", help="Default: in-cluster credentials."),
    trainer_image: str | None = typer.Option(None, envvar="RECPLANE_TRAINER_IMAGE", help="Steps and workers."),
    serving_image: str | None = typer.Option(None, envvar="RECPLANE_SERVING_IMAGE", help="Serving pods."),
    store_secret: str | None = typer.Option(
        None, envvar="RECPLANE_STORE_SECRET", help="Secret (in each namespace) with the RECPLANE_STORE* keys."
    ),
    step_retries: int | None = typer.Option(None, help="Retries of a failed SampleSet/FeatureSet step."),
    restart_backoff: float | None = typer.Option(None, help="Seconds before the first TrainJob group restart."),
    poll: float | None = typer.Option(
        None, help="Seconds between reconciles of a resource no event moves on (a continuous TrainJob, a back-off)."
    ),
    workers: int | None = typer.Option(None, help="Reconciles running at the same time."),
    log_format: str = typer.Option("json", help="json (structured), plain or full."),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Run the operator until SIGTERM (what the operator Deployment runs)."""
    from recplane.operator.config import OperatorConfig
    from recplane.operator.main import RunOptions
    from recplane.operator.main import run as run_operator

    if all_namespaces and namespace:
        err.print("[red]error:[/red] --namespace and --all-namespaces exclude each other")
        raise typer.Exit(2)
    if log_format not in LOG_FORMATS:
        err.print(f"[red]error:[/red] --log-format {log_format!r}: use one of {', '.join(LOG_FORMATS)}")
        raise typer.Exit(2)
    try:
        config = OperatorConfig.from_env(
            trainer_image=trainer_image,
            serving_image=serving_image,
            store_secret=store_secret,
            step_retries=step_retries,
            restart_backoff_seconds=restart_backoff,
            poll_seconds=poll,
            workers=workers,
        )
    except (TypeError, ValueError) as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None
    options = RunOptions(
        namespaces=tuple(namespace),
        peering=None if standalone else peering,
        priority=priority,
        peering_lifetime=peering_lifetime,
        metrics_port=metrics_port or None,
        liveness_endpoint=f"http://0.0.0.0:{health_port}/healthz" if health_port else None,
        kubeconfig=str(kubeconfig) if kubeconfig else None,
        log_format=log_format,
        verbose=verbose,
    )
    run_operator(config, options)


@app.command()
def manifests(
    namespace: str = typer.Option("recplane-system", "--namespace", "-n", help="Where the operator runs."),
    watch_namespace: str | None = typer.Option(
        None, help="Grant a Role in this namespace only (for `run --namespace`); default: a ClusterRole."
    ),
    store_secret: str = typer.Option("recplane-store", help="Name of the store Secret the operator may read."),
    peering: str = typer.Option("recplane", help="Name of the kopf peering object."),
    output: str = typer.Option("yaml", "--output", "-o", help="yaml or json."),
) -> None:
    """Print the ServiceAccount, RBAC and kopf peering objects the operator needs."""
    from recplane.operator import peering as peering_
    from recplane.operator import rbac

    objs = [
        *rbac.manifests(namespace, watch_namespace, store_secret=store_secret, peering=peering),
        *peering_.manifests(peering, watch_namespace),
    ]
    if output == "json":
        sys.stdout.write(json.dumps({"apiVersion": "v1", "kind": "List", "items": objs}, indent=2) + "\n")
    else:
        sys.stdout.write(yaml.safe_dump_all(objs, sort_keys=False))


if __name__ == "__main__":
    app()
