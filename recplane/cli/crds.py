"""`recplane crds`: the CustomResourceDefinitions generated from recplane/api."""

from __future__ import annotations

import sys
from pathlib import Path

import typer
from rich.console import Console

from recplane.api import crd

app = typer.Typer(no_args_is_help=True, help="Generate or check the CRDs (crds/).")
console = Console(stderr=True)


@app.command()
def generate(directory: Path = typer.Option(Path("crds"), "--dir", help="Where to write the CRD YAML.")) -> None:
    """Write one CRD per kind from the pydantic models."""
    for path in crd.write(directory):
        console.print(f"wrote {path}")


@app.command()
def check(directory: Path = typer.Option(Path("crds"), "--dir")) -> None:
    """Exit 1 when the CRDs in DIR differ from the models."""
    stale = crd.stale(directory)
    if stale:
        console.print(f"[red]stale CRDs[/red] in {directory}: {', '.join(stale)}; run `recplane crds generate`")
        raise typer.Exit(1)
    console.print(f"CRDs in {directory} match recplane/api")


@app.command()
def show() -> None:
    """Print every CRD as one YAML stream (for `kubectl apply -f -`)."""
    sys.stdout.write("---\n".join(crd.generated_files().values()))


@app.command()
def docs(
    out: Path = typer.Option(Path("docs/crd-reference.md"), "--out", help="Where to write the CRD reference."),
    check_only: bool = typer.Option(False, "--check", help="Exit 1 when OUT differs from the models; write nothing."),
) -> None:
    """Write the CRD reference page (every field, default, constraint and CEL rule) from the models."""
    from recplane.api import docs as crd_docs

    if check_only:
        if crd_docs.stale(out):
            console.print(f"[red]stale CRD reference[/red] {out}; run `recplane crds docs`")
            raise typer.Exit(1)
        console.print(f"{out} matches recplane/api")
        return
    console.print(f"wrote {crd_docs.write(out)}")
