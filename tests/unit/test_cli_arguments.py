"""How the cluster verbs read their arguments and options, before any cluster is involved."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from rich.text import Text
from typer.testing import CliRunner

from recplane.api import KINDS
from recplane.cli.main import app
from recplane.cli.options import CliError, ExitCode
from recplane.cli.resources import WaitFor, parse_targets, read_manifests

ROOT = Path(__file__).resolve().parents[2]
# Points at nothing: a command that got past local checks would fail with exit 4, not with theirs.
NO_CLUSTER = {"KUBECONFIG": "/nonexistent/recplane-test-kubeconfig"}


def _kinds(targets: list[tuple[object, str | None]]) -> list[tuple[str, str | None]]:
    return [(k.kind, n) for k, n in targets]  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ([], [("SampleSet", None), ("FeatureSet", None), ("TrainJob", None), ("ModelDeployment", None)]),
        (["recplane"], [("SampleSet", None), ("FeatureSet", None), ("TrainJob", None), ("ModelDeployment", None)]),
        (["tj"], [("TrainJob", None)]),
        (["trainjobs", "a", "b"], [("TrainJob", "a"), ("TrainJob", "b")]),
        (["TrainJob", "a"], [("TrainJob", "a")]),
        (["tj/a", "md/b"], [("TrainJob", "a"), ("ModelDeployment", "b")]),
        (["ss,fs"], [("SampleSet", None), ("FeatureSet", None)]),
    ],
)
def test_resources_are_named_the_kubectl_way(args: list[str], expected: list[tuple[str, str | None]]) -> None:
    assert _kinds(parse_targets(args)) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["pods"], "unknown kind 'pods'"),
        (["tj/a", "b"], "use either KIND NAME... or KIND/NAME..."),
        (["tj/"], "name the resource after the slash"),
        (["ss,fs", "a"], "names need exactly one kind"),
    ],
)
def test_badly_named_resources_are_usage_errors(args: list[str], fragment: str) -> None:
    with pytest.raises(CliError) as info:
        parse_targets(args)
    assert info.value.code == ExitCode.USAGE
    assert fragment in info.value.message


def test_verbs_that_act_on_objects_need_names() -> None:
    with pytest.raises(CliError, match="tj/NAME"):
        parse_targets(["tj"], names_required=True)


@pytest.mark.parametrize(
    ("text", "condition", "status"),
    [("condition=Ready", "Ready", "True"), ("condition=Failed=False", "Failed", "False"), ("delete", None, "True")],
)
def test_wait_for_reads_condition_and_delete(text: str, condition: str | None, status: str) -> None:
    parsed = WaitFor.parse(text)
    assert (parsed.condition, parsed.status) == (condition, status)


def test_examples_validate_locally() -> None:
    resources = read_manifests([str(ROOT / "examples")])
    assert {r.kind for r in resources} == set(KINDS)
    assert all(r.namespace == "" for r in resources)  # filled in later from -n or the context


def test_a_namespace_in_the_file_that_contradicts_n_is_refused(tmp_path: Path) -> None:
    doc = (
        (ROOT / "examples" / "sampleset.yaml")
        .read_text()
        .replace("name: feed-events", "name: feed-events\n  namespace: a")
    )
    (tmp_path / "ss.yaml").write_text(doc)
    with pytest.raises(CliError, match="SampleSet/feed-events is in namespace a but -n says b"):
        read_manifests([str(tmp_path / "ss.yaml")], namespace="b")


def test_an_invalid_document_refuses_the_whole_apply_before_contacting_a_cluster(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "apiVersion: recplane.io/v1alpha1\nkind: TrainJob\nmetadata: {name: broken}\n"
        "spec:\n  featureSetRef: {name: feed}\n  model: {type: deepfm}\n  distributed: {workers: 0}\n"
    )
    result = CliRunner().invoke(app, ["apply", "-f", str(ROOT / "examples"), "-f", str(bad)], env=NO_CLUSTER)
    assert result.exit_code == ExitCode.FAILED, result.output
    assert result.output.startswith(f"error: {bad}: TrainJob/broken: spec.distributed.workers")
    assert "created" not in result.output


def test_apply_reads_stdin_and_names_it_in_errors() -> None:
    doc = "apiVersion: recplane.io/v1alpha1\nkind: ModelDeployment\nmetadata: {name: m}\nspec: {model: {}}\n"
    result = CliRunner().invoke(app, ["apply", "-f", "-"], input=doc, env=NO_CLUSTER)
    assert result.exit_code == ExitCode.FAILED
    assert "error: <stdin>: ModelDeployment/m: spec.model: set exactly one of model.trainJobRef and model.uri" in (
        result.output
    )


def test_apply_of_a_missing_file_says_so() -> None:
    result = CliRunner().invoke(app, ["apply", "-f", "nope.yaml"], env=NO_CLUSTER)
    assert result.exit_code == ExitCode.FAILED
    assert result.output.strip() == "error: nope.yaml: no such file or directory"


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["wait", "tj/x", "--for=jsonpath=x"], "use condition=TYPE[=STATUS]"),
        (["wait", "tj/x", "--timeout=soon"], "is not a duration"),
        (["get", "-o", "xml"], "xml"),
        (["get", "pods"], "unknown kind 'pods'"),
        (["get", "-A", "tj", "feed-deepfm"], "use -n instead"),
        (["logs", "tj"], "name the TrainJob too"),
        (["rollback", "tj/feed-deepfm"], "rollback works on one ModelDeployment"),
    ],
)
def test_usage_errors_exit_2_before_contacting_a_cluster(argv: list[str], fragment: str) -> None:
    result = CliRunner().invoke(app, argv, env=NO_CLUSTER)
    assert result.exit_code == ExitCode.USAGE, result.output
    assert fragment in result.output


@pytest.mark.parametrize("verb", ["apply", "get", "describe", "delete", "wait", "logs", "promote", "rollback"])
def test_every_verb_documents_the_exit_codes(verb: str) -> None:
    result = CliRunner().invoke(app, [verb, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "Exit codes: 0 ok, 1 failed or invalid, 2 bad usage, 3 not found" in result.output


def test_shell_completion_is_offered() -> None:
    result = CliRunner().invoke(app, ["--help"])
    assert "--install-completion" in result.output


def _commands(command: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    yield path, command
    for name, sub in (getattr(command, "commands", None) or {}).items():
        yield from _commands(sub, (*path, name))


def test_every_option_help_shows_in_full_in_help_output() -> None:
    """Rich reads `[...]` in a help text as markup and drops it, so `[default: x]` would vanish from
    `--help` and leave a stray " ." behind; defaults are written `(default: x)`."""
    for path, command in _commands(typer.main.get_command(app)):
        for param in command.params:
            help_text = getattr(param, "help", None) or ""
            where = f"`recplane {' '.join(path)}` {param.opts[0]}"
            assert Text.from_markup(help_text).plain == help_text, f"{where}: {help_text!r}"
    result = CliRunner().invoke(app, ["serve", "--help"], env={"COLUMNS": "200"})
    assert "fp32 or int8 (default: $RECPLANE_MODEL_VARIANT, else fp32)." in result.output
