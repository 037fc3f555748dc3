"""`recplane quickstart` and `recplane run --local`: whole pipelines on this machine."""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer()
console = Console(stderr=True)
out = Console()


def _store(uri: str | None):  # type: ignore[no-untyped-def]
    from recplane.store import open_store

    return open_store(uri)


def _fmt(value: object, digits: int = 4) -> str:
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    if isinstance(value, int):
        return f"{value:,}"
    return "-" if value is None else str(value)


def _row_flow(status: dict) -> str:  # type: ignore[type-arg]
    """A SampleSet's rows after each strategy, in order."""
    return " -> ".join(f"{k} {v:,}" for k, v in status.get("rows", {}).items())


def _summary(results: list, elapsed: float) -> Table:  # type: ignore[type-arg]
    table = Table(title=f"pipeline finished in {elapsed:.0f} s", title_justify="left")
    for column in ("stage", "name", "version", "result", "seconds"):
        table.add_column(column)
    for r in results:
        status = r.status
        if r.resource.kind == "SampleSet":
            result = (
                f"train {_fmt(status.get('trainRows'))}, validation {_fmt(status.get('validationRows'))}, "
                f"positive rate {_fmt(status.get('positiveRate'), 3)}"
            )
        elif r.resource.kind == "FeatureSet":
            result = f"{len(status.get('features', []))} features"
        elif r.resource.kind == "TrainJob":
            metrics = status.get("metrics", {})
            result = f"AUC {_fmt(metrics.get('auc'))}, logloss {_fmt(metrics.get('logloss'))}"
        else:
            result = r.endpoint or "-"
        table.add_row(r.resource.kind, r.resource.name, r.version or "-", result, f"{r.seconds:.1f}")
    return table


@app.command()
def quickstart(
    store: str = typer.Option(
        None, "--store", envvar="RECPLANE_STORE", help="Artifact store (default .recplane/store)."
    ),
    events: int = typer.Option(300_000, min=10_000, help="Synthetic impressions to generate."),
    model: str = typer.Option("deepfm", help="Model type to train (lr, fm, deepfm, fibinet, ...)."),
    nproc: int = typer.Option(2, min=1, help="Training processes (embeddings are sharded across them)."),
    keep_serving: bool = typer.Option(False, "--keep-serving", help="Leave the endpoint up until Ctrl-C."),
) -> None:
    """Synthetic feed events -> SampleSet -> FeatureSet -> TrainJob -> live endpoint -> real requests."""
    import httpx

    from recplane.data.samples import read_split
    from recplane.local.pipeline import LocalPipeline, PipelineError
    from recplane.local.quickstart import quickstart_resources, rank_request

    s = _store(store)
    resources = quickstart_resources(events=events, model=model)
    pipeline = LocalPipeline(s, nproc=nproc, on_stage=lambda m: console.rule(f"[bold]{m}"))
    start = time.perf_counter()
    try:
        results = pipeline.run(resources)
        elapsed = time.perf_counter() - start
        samples, train, served = results[0], results[2], results[3]
        body = rank_request(read_split(s, samples.manifest, "validation"))  # type: ignore[arg-type]
        response = httpx.post(f"{served.endpoint}/rank", json=body, timeout=30)
        response.raise_for_status()
        ranked = response.json()
        out.print(_summary(results, elapsed))
        out.print(f"rows per stage: {_row_flow(samples.status)}")
        bayes = samples.status.get("bayesAuc")
        auc = train.status.get("metrics", {}).get("auc")
        out.print(f"validation AUC {_fmt(auc)}  (Bayes-optimal {_fmt(bayes)}; gap {_fmt((bayes or 0) - (auc or 0))})")
        out.print(f"endpoint {served.endpoint}  model version {ranked['modelVersion']}  store {s.uri}")
        top = Table(title=f"top 5 of {len(body['candidates'])} candidates for user {body['user']['user_id']}")
        for column in ("rank", "item", "score"):
            top.add_column(column)
        for i, item in enumerate(ranked["items"][:5], 1):
            top.add_row(str(i), str(item["itemId"]), f"{item['score']:.4f}")
        out.print(top)
        if keep_serving:
            console.print(f"serving at {served.endpoint} (Ctrl-C to stop)")
            while True:
                time.sleep(3600)
    except PipelineError as e:
        console.print(f"[red]error:[/red] {e}")
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        pass
    finally:
        pipeline.close()


@app.command()
def run(
    files: list[Path] = typer.Option(..., "-f", "--filename", exists=True, help="Resource YAML files or directories."),
    local: bool = typer.Option(False, "--local", help="Run on this machine (the only mode `run` has)."),
    store: str = typer.Option(
        None, "--store", envvar="RECPLANE_STORE", help="Artifact store (default .recplane/store)."
    ),
    nproc: int = typer.Option(2, min=1, help="Training processes per TrainJob."),
    serve: bool = typer.Option(True, "--serve/--no-serve", help="Start ModelDeployments as local servers."),
    output: str = typer.Option("table", "-o", "--output", help="table | json"),
) -> None:
    """Run any set of the four resources here, the same YAML as on a cluster; `apply` sends it to a cluster."""
    from recplane.api.resource import ResourceError, load_resources
    from recplane.local.pipeline import LocalPipeline, PipelineError

    if not local:
        console.print(
            "[red]error:[/red] `recplane run` runs pipelines on this machine: add --local "
            "(to use a cluster: `recplane apply -f ...`)"
        )
        raise typer.Exit(2)
    try:
        resources = load_resources(files)
    except ResourceError as e:
        console.print(f"[red]error:[/red] {e}")
        raise typer.Exit(1) from None
    from recplane.local.continuous import continuous_trainjobs, run_until_stopped

    if continuous_trainjobs(resources):  # a continuous TrainJob keeps the run going until Ctrl-C
        raise typer.Exit(run_until_stopped(_store(store), resources, lambda m: console.print(m)))
    pipeline = LocalPipeline(_store(store), nproc=nproc, on_stage=lambda m: console.rule(f"[bold]{m}"))
    start = time.perf_counter()
    try:
        results = pipeline.run(resources, serve=serve)
        if output == "json":
            out.print_json(
                json.dumps(
                    [
                        {
                            "kind": r.resource.kind,
                            "name": r.resource.name,
                            "version": r.version,
                            "endpoint": r.endpoint,
                            "status": r.status,
                        }
                        for r in results
                    ],
                    default=str,
                )
            )
        else:
            out.print(_summary(results, time.perf_counter() - start))
            for r in results:
                if r.resource.kind == "SampleSet":
                    out.print(f"{r.resource.name} rows per stage: {_row_flow(r.status)}")
        if any(r.endpoint for r in results):
            console.print("serving (Ctrl-C to stop): " + ", ".join(r.endpoint for r in results if r.endpoint))
            while True:
                time.sleep(3600)
    except PipelineError as e:
        console.print(f"[red]error:[/red] {e}")
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        pass
    finally:
        pipeline.close()
