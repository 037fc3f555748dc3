"""Settings, model URIs and the `recplane serve` command, without starting a server."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from recplane.serving.config import ConfigError, ServingConfig, env_variables
from recplane.serving.model_source import ModelSourceError, resolve_model
from recplane.store import Manifest, Store

ROOT = Path(__file__).resolve().parents[2]


def test_every_setting_is_an_environment_variable_documented_in_docs_serving() -> None:
    page = (ROOT / "docs" / "serving.md").read_text()
    missing = [name for name in env_variables() if f"`{name}`" not in page]
    assert not missing, f"docs/serving.md does not document {missing}"


def test_settings_come_from_the_environment() -> None:
    config = ServingConfig.from_env(
        {"RECPLANE_MODEL_URI": "ns/trainjob/m/latest", "RECPLANE_SERVE_MAX_CANDIDATES": "50", "PATH": "/bin"}
    )
    assert config.model_uri == "ns/trainjob/m/latest"
    assert config.max_candidates == 50
    assert config.variant == "fp32"


def test_a_bad_setting_is_refused_naming_the_variable() -> None:
    with pytest.raises(ConfigError, match=r"RECPLANE_SERVE_MAX_CANDIDATES='lots'"):
        ServingConfig.from_env({"RECPLANE_SERVE_MAX_CANDIDATES": "lots"})
    with pytest.raises(ConfigError, match="RECPLANE_MODEL_VARIANT"):
        ServingConfig.from_env({"RECPLANE_MODEL_VARIANT": "fp8"})


def test_the_scoring_endpoints_are_left_out_of_tracing_unless_it_is_switched_on() -> None:
    from opentelemetry.util.http import ExcludeList

    from recplane.serving.service import UNTRACED_URLS

    assert ServingConfig.from_env({}).tracing is False
    assert ServingConfig.from_env({"RECPLANE_SERVE_TRACING": "true"}).tracing is True
    excluded = ExcludeList(UNTRACED_URLS)  # how BentoML's OpenTelemetry middleware reads the list
    for url in ("http://127.0.0.1:3000/rank", "https://ranker.feeds.svc/recall", "http://[::1]:3000/feedback"):
        assert excluded.url_disabled(url), url
    for url in ("http://127.0.0.1:3000/model", "http://h/ranking", "http://h/metrics", "http://h/v1/rank/x"):
        assert not excluded.url_disabled(url), url


def test_a_missing_model_uri_says_how_to_name_one() -> None:
    with pytest.raises(ConfigError, match="RECPLANE_MODEL_URI is not set"):
        ServingConfig.from_env({}).require_model_uri()


# ---- model URIs ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def stored_ranker(serving_store: Store, ranker_manifest: Manifest) -> tuple[Store, Manifest]:
    return serving_store, ranker_manifest


def test_latest_in_the_store_resolves_to_a_pinned_version(
    stored_ranker: tuple[Store, Manifest], monkeypatch: pytest.MonkeyPatch
) -> None:
    store, manifest = stored_ranker
    monkeypatch.setenv("RECPLANE_STORE", store.uri)
    location = resolve_model("default/trainjob/feed-ranker/latest")
    assert location.version == manifest.version
    assert location.pinned_uri == f"default/trainjob/feed-ranker/{manifest.version}"
    assert (location.local_dir / "model.pt").is_file()


def test_a_store_path_and_a_version_directory_name_the_same_version(stored_ranker: tuple[Store, Manifest]) -> None:
    store, manifest = stored_ranker
    by_store_path = resolve_model(f"file://{store.uri}/default/trainjob/feed-ranker/latest")
    by_directory = resolve_model(str(store.fetch_version(manifest)))
    assert by_store_path.version == by_directory.version == manifest.version
    assert by_directory.pinned_uri == str(store.fetch_version(manifest).resolve())


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("default/trainjob/no-such-job/latest", "check the TrainJob name and namespace"),
        ("default/trainjob/feed-ranker/0000000000000000", "has no version 0000000000000000"),
        ("s3://bucket-only", "must name a version"),
        ("http://example.invalid/model", "unsupported scheme"),
        ("no/such/dir", "no such directory, and not a store reference"),
    ],
)
def test_a_model_uri_that_names_nothing_is_refused_with_the_fix(
    stored_ranker: tuple[Store, Manifest], monkeypatch: pytest.MonkeyPatch, uri: str, message: str
) -> None:
    monkeypatch.setenv("RECPLANE_STORE", stored_ranker[0].uri)
    with pytest.raises(ModelSourceError, match=message):
        resolve_model(uri)


# ---- the command ---------------------------------------------------------------------------------
def _serve(*args: str, store: Store) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "RECPLANE_STORE": store.uri}
    return subprocess.run(
        [sys.executable, "-m", "recplane.cli.serve", *args], env=env, capture_output=True, text=True, check=False
    )


def test_serve_dry_run_checks_the_model_and_prints_the_server_command(stored_ranker: tuple[Store, Manifest]) -> None:
    store, manifest = stored_ranker
    result = _serve("--model", "default/trainjob/feed-ranker/latest", "--port", "3999", "--dry-run", store=store)
    assert result.returncode == 0, result.stderr
    assert f"serving model version {manifest.version}" in result.stderr
    assert "bentoml serve recplane.serving.service:RecplaneServing --host 127.0.0.1 --port 3999" in result.stdout


def test_serve_with_a_model_that_does_not_exist_exits_2_with_one_clear_line(
    stored_ranker: tuple[Store, Manifest],
) -> None:
    result = _serve("--model", "default/trainjob/typo/latest", "--dry-run", store=stored_ranker[0])
    assert result.returncode == 2
    assert "error:" in result.stderr and "typo" in result.stderr and "Traceback" not in result.stderr


def test_serve_refuses_a_bad_setting_before_starting(stored_ranker: tuple[Store, Manifest]) -> None:
    result = _serve(
        "--model", "default/trainjob/feed-ranker/latest", "--variant", "fp8", "--dry-run", store=stored_ranker[0]
    )
    assert result.returncode == 2
    assert "RECPLANE_MODEL_VARIANT" in result.stderr
