"""`recplane compare`: model versions of several TrainJobs side by side, best validation AUC first."""

from __future__ import annotations

import json

import pipeline_data as pdx
import pytest
import typer
from typer.testing import CliRunner

from recplane.cli import compare
from recplane.store import LocalStore
from recplane.trainer.step import train_job

cli = typer.Typer()
cli.add_typer(compare.app)


@pytest.fixture
def two_models(store: LocalStore) -> LocalStore:
    for name, model in (("feed-lr", "lr"), ("feed-fm", "fm")):
        doc = pdx.trainjob(
            name, model={"type": model}, distributed={"procsPerWorker": 1}, checkpoint={"everySteps": 1000}
        )
        train_job(pdx.resource(doc), store)
    return store


def test_compare_lists_each_version_with_its_metrics_best_first(two_models: LocalStore) -> None:
    result = CliRunner().invoke(cli, ["compare", "feed-lr", "feed-fm", "--store", str(two_models.root), "-o", "json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert {r["trainJob"] for r in rows} == {"feed-lr", "feed-fm"}
    assert {r["model"] for r in rows} == {"lr", "fm"}
    aucs = [r["metrics"]["auc"] for r in rows]
    assert aucs == sorted(aucs, reverse=True)
    for r in rows:
        stored = two_models.latest("default", "trainjob", r["trainJob"])
        assert stored is not None and r["version"] == stored.version
        assert r["metrics"]["auc"] == stored.status["metrics"]["auc"]
        assert "aucInt8" in r["metrics"] and "samplesPerSecond" in r["metrics"]


def test_compare_prints_a_table_for_people(two_models: LocalStore) -> None:
    result = CliRunner().invoke(cli, ["compare", "feed-lr", "feed-fm", "--store", str(two_models.root)])
    assert result.exit_code == 0, result.output
    header, *lines = [line for line in result.stdout.splitlines() if line.strip()]
    for column in ("TRAINJOB", "VERSION", "MODEL", "AUC", "LOGLOSS", "AUC INT8", "SAMPLES/S"):
        assert column in header
    assert any(line.startswith("feed-lr") for line in lines) and any(line.startswith("feed-fm") for line in lines)
    assert "Bayes-optimal validation AUC" in result.stdout


def test_compare_names_a_trainjob_without_versions(store: LocalStore) -> None:
    result = CliRunner().invoke(cli, ["compare", "nothing-here", "--store", str(store.root)])
    assert result.exit_code == 3
    assert "TrainJob default/nothing-here has no model version" in result.output
