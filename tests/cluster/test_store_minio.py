"""The artifact-store suite of tests/unit/test_store.py against a real MinIO server, plus the
SampleSet and FeatureSet steps end to end on it (files read from and versions written to S3).

Only the MinIO binary of the test cluster is started (the binaries are built by
hack/build-cluster-bins.sh through the `cluster_binaries` fixture; never skipped).
"""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from recplane.api.featureset import FeatureSetSpec
from recplane.api.sampleset import SampleSetSpec
from recplane.data.catalogs import feed_features
from recplane.data.errors import DataError
from recplane.data.features import FeatureProcessor
from recplane.data.samples import read_split
from recplane.data.steps import materialize_featureset, materialize_sampleset
from recplane.store import Store, StoreError, open_store
from recplane.store.s3 import S3Store

pytestmark = pytest.mark.cluster

_SUITE_PATH = Path(__file__).resolve().parents[1] / "unit" / "test_store.py"
_spec = importlib.util.spec_from_file_location("recplane_store_suite", _SUITE_PATH)
assert _spec is not None and _spec.loader is not None
_suite = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_suite)
# The backend-independent tests, collected here with this module's `store` fixture.
globals().update({k: v for k, v in vars(_suite).items() if k.startswith("test_") and not k.startswith("test_local_")})


@dataclass(frozen=True)
class MinioServer:
    endpoint: str
    access_key: str
    secret_key: str


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as r:
            return bool(r.status == 200)
    except OSError:
        return False


@pytest.fixture(scope="session")
def minio_server(cluster_binaries: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[MinioServer]:
    data = tmp_path_factory.mktemp("minio")
    port, console = _free_port(), _free_port()
    server = MinioServer(f"127.0.0.1:{port}", "recplane-test", uuid.uuid4().hex)
    env = {
        **os.environ,
        "MINIO_ROOT_USER": server.access_key,
        "MINIO_ROOT_PASSWORD": server.secret_key,
        "MINIO_BROWSER": "off",
        "MINIO_UPDATE": "off",
    }
    log = (data / "minio.log").open("w")
    proc = subprocess.Popen(
        [str(cluster_binaries["minio"]), "server", "--quiet", "--address", server.endpoint,
         "--console-address", f"127.0.0.1:{console}", str(data / "data")],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not _ready(f"http://{server.endpoint}/minio/health/ready"):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"MinIO did not start: {(data / 'minio.log').read_text()[-2000:]}", pytrace=False)
            time.sleep(0.2)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture
def s3_env(minio_server: MinioServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    """RECPLANE_S3_* pointing at the server, and a fresh bucket URI for this test."""
    monkeypatch.setenv("RECPLANE_S3_ENDPOINT", minio_server.endpoint)
    monkeypatch.setenv("RECPLANE_S3_ACCESS_KEY", minio_server.access_key)
    monkeypatch.setenv("RECPLANE_S3_SECRET_KEY", minio_server.secret_key)
    monkeypatch.setenv("RECPLANE_S3_SECURE", "false")
    monkeypatch.setenv("RECPLANE_CACHE", str(tmp_path / "cache"))
    return f"s3://t-{uuid.uuid4().hex[:20]}"


@pytest.fixture
def store(s3_env: str) -> Store:
    s = open_store(s3_env + "/artifacts")
    assert isinstance(s, S3Store)
    return s


def test_wrong_credentials_are_reported(s3_env: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECPLANE_S3_SECRET_KEY", "wrong")
    s = open_store(s3_env)
    with pytest.raises(StoreError, match=r"cannot use bucket t-\w+ at 127.0.0.1:\d+: SignatureDoesNotMatch"):
        s.names("default", "sampleset")


def test_samples_and_features_from_and_into_minio(s3_env: str, tmp_path: Path) -> None:
    store = open_store(s3_env + "/artifacts")
    # Events uploaded as Parquet objects, read back through the s3:// source.
    rows = [
        {
            "user_id": f"u{u}",
            "item_id": f"i{(u * 7 + k) % 50}",
            "ts": 1_000 + 60 * k + u,
            "clicked": int((u + k) % 4 == 0),
        }
        for u in range(30)
        for k in range(20)
    ]
    local = tmp_path / "events.parquet"
    pq.write_table(pa.Table.from_pylist(rows), local)
    raw = open_store(s3_env)
    raw.put_file("incoming/day-1/events.parquet", local)
    spec = SampleSetSpec.model_validate(
        {
            "source": {"format": "parquet", "uri": f"{s3_env}/incoming/"},
            "label": {"dwellColumn": None},
            "botFilter": {"enabled": False},
        }
    )
    samples = materialize_sampleset(spec, store, "team-a", "clicks")
    assert samples.uri.startswith(s3_env + "/artifacts/team-a/sampleset/clicks/")
    assert samples.status["rows"]["source"] == 600
    assert read_split(store, samples, "train").num_rows == samples.status["trainRows"]
    assert materialize_sampleset(spec, store, "team-a", "clicks").version == samples.version

    catalog = [f for f in feed_features() if f.name in ("user_id", "item_id")]
    features = materialize_featureset(
        FeatureSetSpec(sample_set_ref={"name": "clicks"}, features=catalog), store, "team-a", "clicks-features"
    )
    processor = FeatureProcessor.from_store(store, features)
    out = processor.transform_rows([{"user_id": "u3", "item_id": "i21"}, {"user_id": "nobody"}])
    assert out.ids("user_id")[0].tolist()[1] == 1 and out.ids("item_id")[0].tolist()[1] == 0

    with pytest.raises(DataError, match=r"spec.source.uri: no parquet objects match"):
        materialize_sampleset(
            SampleSetSpec.model_validate({"source": {"format": "parquet", "uri": f"{s3_env}/nothing/"}}),
            store,
            "team-a",
            "empty",
        )
    assert store.versions("team-a", "sampleset", "empty") == []
