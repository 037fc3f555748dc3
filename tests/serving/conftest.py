"""Fixtures for the serving tests: a real FeatureSet over synthetic feed events (and, for the
endpoint tests, models trained on it and a running BentoML server; see the other fixtures)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import torch

from recplane.api.featureset import FeatureSetSpec
from recplane.api.resource import parse_resource
from recplane.api.sampleset import SampleSetSpec
from recplane.data.catalogs import feed_features
from recplane.data.features import FeatureProcessor
from recplane.data.steps import materialize_featureset, materialize_sampleset
from recplane.store import LocalStore, Manifest, Store
from recplane.trainer.step import train_job

sys.path.insert(0, str(Path(__file__).parent))  # the tests' shared helpers (scrape)

torch.set_num_threads(1)
NS = "default"


@pytest.fixture(scope="session")
def feed_store(tmp_path_factory: pytest.TempPathFactory) -> tuple[Store, Manifest]:
    """A store holding a small synthetic feed SampleSet and the feed feature catalog over it."""
    store = LocalStore(tmp_path_factory.mktemp("serving-store"))
    samples = SampleSetSpec.model_validate(
        {
            "source": {
                "format": "synthetic",
                "synthetic": {"events": 12_000, "users": 300, "items": 600, "authors": 60, "days": 2, "seed": 7},
            },
            "shardRows": 4000,
        }
    )
    materialize_sampleset(samples, store, NS, "feed")
    features = FeatureSetSpec.model_validate({"sampleSetRef": {"name": "feed"}, "features": feed_features()})
    manifest = materialize_featureset(features, store, NS, "feed-features")
    return store, manifest


@pytest.fixture(scope="session")
def processor(feed_store: tuple[Store, Manifest]) -> FeatureProcessor:
    store, manifest = feed_store
    return FeatureProcessor.from_store(store, manifest)


# ---- trained models and running servers -------------------------------------------------------
def _train(store: Store, name: str, model: dict[str, object]) -> Manifest:
    resource = parse_resource(
        {
            "apiVersion": "recplane.io/v1alpha1",
            "kind": "TrainJob",
            "metadata": {"name": name, "namespace": NS},
            "spec": {
                "featureSetRef": {"name": "feed-features"},
                "model": model,
                "optimization": {"batchSize": 512, "maxSteps": 15, "seed": 3},
                "distributed": {"workers": 1, "procsPerWorker": 1},
            },
        }
    )
    return train_job(resource, store)


@pytest.fixture(scope="session")
def serving_store(feed_store: tuple[Store, Manifest]) -> Store:
    return feed_store[0]


@pytest.fixture(scope="session")
def ranker_manifest(serving_store: Store) -> Manifest:
    """A tiny DeepFM ranker, trained for a few steps through the trainer."""
    return _train(serving_store, "feed-ranker", {"type": "deepfm", "embeddingDim": 8, "denseLayers": [16]})


@pytest.fixture(scope="session")
def recall_manifest(serving_store: Store) -> Manifest:
    """A tiny two-tower recall model (with its item index), trained for a few steps."""
    model = {"type": "two_tower", "embeddingDim": 8, "denseLayers": [16], "topK": 20}
    return _train(serving_store, "feed-recall", model)


@dataclass
class _Server:
    """One `recplane serve` process group on 127.0.0.1."""

    name: str
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# Small limits, so the limit tests need small bodies; a generous batching deadline, so a busy test
# machine slows requests down instead of shedding them (shedding under load is BentoML's own behaviour).
SERVER_LIMITS = {
    "RECPLANE_SERVE_MAX_CANDIDATES": "300",
    "RECPLANE_SERVE_MAX_BODY_BYTES": str(256 * 1024),
    "RECPLANE_SERVE_MAX_LATENCY_MS": "30000",
}


def _start(name: str, model_uri: str, workdir: Path, store: Store, extra_env: dict[str, str]) -> _Server:
    port = _free_port()
    log = workdir / f"{name}.log"
    env = {
        **os.environ,
        "RECPLANE_STORE": store.uri,
        "RECPLANE_CACHE": str(workdir / "cache"),
        "BENTOML_HOME": str(workdir / f"bentoml-{name}"),
        "OMP_NUM_THREADS": "1",
        **SERVER_LIMITS,
        **extra_env,
    }
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "recplane.cli.serve", "--model", model_uri, "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: the server and its workers stop together
        )
    return _Server(name=name, url=f"http://127.0.0.1:{port}", process=process, log=log)


def _wait_ready(server: _Server, deadline: float) -> None:
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"server {server.name} exited with {server.process.returncode}:\n{server.log_tail()}")
        try:
            if httpx.get(f"{server.url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"server {server.name} was not ready in time:\n{server.log_tail()}")


@pytest.fixture(scope="session")
def servers(
    serving_store: Store,
    ranker_manifest: Manifest,
    recall_manifest: Manifest,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, str]]:
    """Base URLs of real BentoML servers, started together: the ranker as fp32 (`ranker`) and int8
    (`ranker-int8`), and the recall model (`recall`)."""
    workdir = tmp_path_factory.mktemp("servers")
    ranker = f"{NS}/trainjob/{ranker_manifest.name}/latest"
    recall = f"{NS}/trainjob/{recall_manifest.name}/latest"
    started = [
        _start("ranker", ranker, workdir, serving_store, {}),
        _start("ranker-int8", ranker, workdir, serving_store, {"RECPLANE_MODEL_VARIANT": "int8"}),
        _start("recall", recall, workdir, serving_store, {}),
    ]
    try:
        deadline = time.monotonic() + 240
        for server in started:
            _wait_ready(server, deadline)
        yield {s.name: s.url for s in started}
    finally:
        for server in started:
            server.stop()


# The event log of the server below: a prefix inside the serving store, flushed often so tests see events soon.
EVENTS_PREFIX = f"{NS}/events/feed-ranker"


@pytest.fixture(scope="module")
def events_server(
    serving_store: Store, ranker_manifest: Manifest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, str]]:
    """(base URL, events prefix) of a ranker server that logs impressions and feedback into the serving store."""
    workdir = tmp_path_factory.mktemp("events-server")
    extra = {"RECPLANE_EVENTS_URI": EVENTS_PREFIX, "RECPLANE_EVENTS_FLUSH_SECONDS": "0.2"}
    server = _start("events", f"{NS}/trainjob/{ranker_manifest.name}/latest", workdir, serving_store, extra)
    try:
        _wait_ready(server, time.monotonic() + 240)
        yield server.url, EVENTS_PREFIX
    finally:
        server.stop()


@pytest.fixture
def buffering_events_server(
    serving_store: Store, ranker_manifest: Manifest, tmp_path: Path
) -> Iterator[tuple[_Server, str]]:
    """(server, events prefix) of a ranker whose event log only writes at shutdown; the test stops it."""
    prefix = f"{NS}/events/feed-ranker-shutdown"
    extra = {"RECPLANE_EVENTS_URI": prefix, "RECPLANE_EVENTS_FLUSH_SECONDS": "3600"}
    server = _start("buffering", f"{NS}/trainjob/{ranker_manifest.name}/latest", tmp_path, serving_store, extra)
    try:
        _wait_ready(server, time.monotonic() + 240)
        yield server, prefix
    finally:
        server.stop()
