"""The `recplane` command line: one module per noun, mounted here."""

from __future__ import annotations

import typer

from . import crds, step

app = typer.Typer(
    name="recplane",
    help="Kubernetes-native recommendation platform: samples, features, sharded training, serving.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
app.add_typer(crds.app, name="crds")
app.add_typer(step.app, name="step")


def _mount_optional() -> None:
    # Sub-commands whose modules need heavy or cluster-side dependencies are
    # imported lazily inside their own commands; mounting stays cheap.
    from . import dev_cluster

    app.add_typer(dev_cluster.app, name="dev-cluster", help="A simulated Kubernetes cluster on this machine.")

    # The cluster verbs sit at the top level, as in kubectl: `recplane get`, `recplane rollback`, ...
    from . import resources, rollout

    app.add_typer(resources.app)
    app.add_typer(rollout.app)

    from . import compare, features, local_cmd, operator_cmd, serve

    app.add_typer(local_cmd.app)
    app.add_typer(compare.app)

    app.add_typer(features.app, name="features")
    app.add_typer(operator_cmd.app, name="operator")
    app.add_typer(serve.app)


_mount_optional()

if __name__ == "__main__":
    app()
