"""`recplane step <kind>`: what a pod runs, and what the local runner calls.

Each step reads one resource from a file (a mounted ConfigMap in a pod), does
its work against the artifact store named by RECPLANE_STORE, and prints the
result manifest as JSON on stdout.
"""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(no_args_is_help=True, help="Run one pipeline step (what the operator's pods run).")

SpecOption = typer.Option(..., "--spec", exists=True, dir_okay=False, help="YAML file with one resource.")


@app.command("sampleset")
def sampleset(spec: Path = SpecOption) -> None:
    """Materialise a SampleSet version into the store."""
    from recplane.data.steps import sampleset_step

    sampleset_step(spec)


@app.command("featureset")
def featureset(spec: Path = SpecOption) -> None:
    """Compute a FeatureSet's statistics and vocabularies and store its feature spec."""
    from recplane.data.steps import featureset_step

    featureset_step(spec)


@app.command("train")
def train(spec: Path = SpecOption) -> None:
    """Train a TrainJob (run under torchrun for several processes) and store a model version."""
    from recplane.trainer.step import train_step

    train_step(spec)
