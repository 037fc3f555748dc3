"""`recplane dev-cluster`: a Docker-free Kubernetes cluster on this machine
(real control plane, kwok fake nodes, MinIO), see recplane.devcluster."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from recplane.devcluster import DevCluster, DevClusterError, ensure_binaries, find_binaries

app = typer.Typer(no_args_is_help=True, help="Start, inspect or stop the local dev cluster.")
console = Console(soft_wrap=True)  # never break the printed paths
err = Console(stderr=True)

StateDir = typer.Option(
    None,
    "--state-dir",
    envvar="RECPLANE_STATE_DIR",
    help="Where pids, logs, kubeconfig and data live (default: ~/.local/state/recplane/dev-cluster).",
)


def _fail(exc: Exception) -> None:
    err.print(f"[red]error:[/red] {exc}", markup=True, highlight=False)
    raise typer.Exit(1)


@app.command()
def up(
    state_dir: Path | None = StateDir,
    build: bool = typer.Option(True, help="Build missing binaries from the Go module proxy (slow the first time)."),
    timeout: float = typer.Option(180.0, help="Seconds to wait for the cluster to become ready."),
) -> None:
    """Start the cluster (from empty data) and print how to reach it."""
    try:
        try:
            bins = find_binaries()
        except DevClusterError:
            if not build:
                raise
            err.print("building the dev-cluster binaries (tens of minutes the first time)...")
            bins = ensure_binaries()
        cluster = DevCluster(state_dir, binaries=bins)
        with console.status("starting etcd, kube-apiserver, controllers, kwok nodes and MinIO..."):
            cluster.start(timeout=timeout)
    except DevClusterError as exc:
        _fail(exc)
    console.print(f"[green]dev cluster up[/green] at {cluster.server} ({cluster.nodes} kwok nodes)")
    console.print(f"kubeconfig:     {cluster.kubeconfig}")
    console.print(f"kubectl:        {cluster.kubectl}")
    console.print(
        f"MinIO (S3):     http://{cluster.minio_endpoint}  access key {cluster.minio_access_key}"
        f"  (secret in {cluster.state_dir / 'minio' / 'credentials.json'})"
    )
    console.print(f"logs:           {cluster.state_dir / 'logs'}")
    console.print(f"\n  export KUBECONFIG={cluster.kubeconfig}\n", highlight=False)


@app.command()
def status(state_dir: Path | None = StateDir) -> None:
    """Show the cluster's processes; exit 1 unless every one is running."""
    st = DevCluster(state_dir).status()
    if not st.processes:
        console.print(f"no dev cluster in {st.state_dir}")
        raise typer.Exit(1)
    table = Table("component", "pid", "state", "log")
    for p in st.processes:
        table.add_row(p.name, str(p.pid), "[green]running[/green]" if p.alive else "[red]stopped[/red]", str(p.log))
    console.print(table)
    console.print(f"server {st.server}   MinIO {st.minio_endpoint}   kubeconfig {st.kubeconfig}")
    if not st.running:
        raise typer.Exit(1)


@app.command()
def down(state_dir: Path | None = StateDir) -> None:
    """Stop every process of the cluster (its data is discarded at the next `up`)."""
    cluster = DevCluster(state_dir)
    if not cluster.status().processes:
        console.print(f"no dev cluster running in {cluster.state_dir}")
        return
    try:
        cluster.stop()  # raises if any process survives SIGKILL
    except DevClusterError as exc:
        _fail(exc)
    console.print("dev cluster stopped")
