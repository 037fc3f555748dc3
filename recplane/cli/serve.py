"""`recplane serve`: run the BentoML serving endpoint for one model version.

The same command runs on a laptop and in a ModelDeployment's pods. It checks the
settings and resolves the model (downloading a remote version into the local
cache once), then hands the process over to BentoML's production server with the
settings in the environment, so signals reach the server directly. Every setting
is an environment variable (docs/serving.md); the flags override them.
"""

from __future__ import annotations

import os
import shlex
import sys
from typing import Annotated

import typer
from rich.console import Console

SERVICE = "recplane.serving.service:RecplaneServing"
err = Console(stderr=True, highlight=False, soft_wrap=True)

app = typer.Typer(help="Serve a model version over HTTP (BentoML).", no_args_is_help=False)


def server_command(host: str, port: int) -> list[str]:
    """The BentoML command line `serve` hands over to."""
    return [sys.executable, "-m", "bentoml", "serve", SERVICE, "--host", host, "--port", str(port)]


def server_environment(base: dict[str, str], overrides: dict[str, str]) -> dict[str, str]:
    """The server's environment: `base` plus the settings given as flags, and BentoML's defaults for recplane."""
    env = {**base, **{k: v for k, v in overrides.items() if v}}
    # BentoML would send usage statistics home; a serving pod has no business doing so.
    env.setdefault("BENTOML_DO_NOT_TRACK", "True")
    return env


@app.command()
def serve(
    model: Annotated[
        str,
        typer.Option(
            "--model",
            "-m",
            envvar="RECPLANE_MODEL_URI",
            help="Model version: a directory, file:///..., s3://bucket/<ns>/trainjob/<name>/<version>, "
            "or <ns>/trainjob/<name>/<version|latest> in RECPLANE_STORE.",
            show_default=False,
        ),
    ],
    port: Annotated[int, typer.Option("--port", "-p", envvar="RECPLANE_SERVE_PORT", min=1, max=65535)] = 3000,
    host: Annotated[
        str, typer.Option("--host", envvar="RECPLANE_SERVE_HOST", help="Address to listen on.")
    ] = "127.0.0.1",
    variant: Annotated[
        str | None,
        typer.Option(
            "--variant", help="fp32 or int8 (default: $RECPLANE_MODEL_VARIANT, else fp32).", show_default=False
        ),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers", min=1, help="Server processes (default: $RECPLANE_SERVE_WORKERS, else 1).", show_default=False
        ),
    ] = None,
    access_log: Annotated[
        bool,
        typer.Option("--access-log/--no-access-log", envvar="RECPLANE_SERVE_ACCESS_LOG", help="Log every request."),
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Check the settings and the model, print the server command, and exit.")
    ] = False,
) -> None:
    """Serve /rank, /recall and /model for one model version (BentoML, adaptive batching, Prometheus /metrics)."""
    from recplane.serving.config import ConfigError, ServingConfig
    from recplane.serving.model_source import ModelSourceError, resolve_model

    overrides = {
        "RECPLANE_MODEL_URI": model,
        "RECPLANE_MODEL_VARIANT": variant or "",
        "RECPLANE_SERVE_WORKERS": str(workers) if workers else "",
        "RECPLANE_SERVE_ACCESS_LOG": "true" if access_log else "false",
    }
    env = server_environment(dict(os.environ), overrides)
    try:
        config = ServingConfig.from_env(env)
        location = resolve_model(config.require_model_uri())
    except (ConfigError, ModelSourceError) as exc:
        err.print(f"[bold red]error:[/] {exc}")
        raise typer.Exit(2) from None
    err.print(f"serving model version {location.version} from {location.local_dir} on http://{host}:{port}")
    command = server_command(host, port)
    if dry_run:
        sys.stdout.write(shlex.join(command) + "\n")
        return
    # Every worker serves the version resolved here, even if `latest` moves while they start.
    env["RECPLANE_MODEL_URI"] = location.pinned_uri
    env["RECPLANE_MODEL_FOLLOW_URI"] = config.require_model_uri()  # `…/promoted` is followed from there
    os.execve(command[0], command, env)


if __name__ == "__main__":
    app()
