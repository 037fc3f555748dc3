"""`recplane operator run` refuses contradictory or unknown options before connecting anywhere."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from recplane.cli.operator_cmd import app


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--namespace", "a", "--all-namespaces"], "exclude each other"),
        (["--log-format", "xml"], "--log-format 'xml'"),
    ],
)
def test_bad_options_are_refused_with_a_message_naming_them(args: list[str], fragment: str) -> None:
    result = CliRunner().invoke(app, ["run", *args])
    assert result.exit_code == 2
    assert fragment in result.output


def test_a_bad_environment_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECPLANE_STEP_RETRIES", "many")
    result = CliRunner().invoke(app, ["run"])
    assert result.exit_code == 2
    assert "RECPLANE_STEP_RETRIES='many'" in result.output
