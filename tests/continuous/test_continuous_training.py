"""Continuous training end to end: three batches of drifting events land in a followed directory,
each becomes a warm-started model version judged on its own fresh hold-out; a corrupted batch
is rejected and never becomes the promoted version."""

from __future__ import annotations

import itertools
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from recplane.api.resource import Resource, parse_resource
from recplane.api.sampleset import SampleSetSpec, SyntheticSource
from recplane.data.synthetic import generate
from recplane.local.continuous import ContinuousLoop
from recplane.store import LocalStore, Manifest
from recplane.trainer import promotion
from recplane.trainer.continuous import RoundResult, continuous_round, holdout_auc
from recplane.trainer.export import CARD_FILE

torch.set_num_threads(1)
NS = "default"
MIN_AUC = 0.56


def _features() -> list[dict[str, object]]:
    def sparse(name: str, cols: list[str], transform: dict[str, object], group: str = "id") -> dict[str, object]:
        return {"name": name, "group": group, "type": "sparse", "columns": cols, "transform": transform}

    # Hash buckets only: tables keep their shape across FeatureSet versions, so warm starts apply.
    return [
        sparse("user_id", ["user_id"], {"type": "hash", "buckets": 512}),
        sparse("item_id", ["item_id"], {"type": "hash", "buckets": 1024}),
        sparse("topic", ["topic"], {"type": "hash", "buckets": 64}, "material"),
        sparse("user_x_topic", ["user_id", "topic"], {"type": "cross", "buckets": 8192}, "reader"),
        sparse("position", ["position"], {"type": "bucketize", "boundaries": [1, 2, 3, 5, 8, 13]}, "context"),
    ]


def _resources(events_dir: Path, processes: int = 1) -> list[Resource]:
    docs = [
        {
            "kind": "SampleSet",
            "metadata": {"name": "feed"},
            "spec": {"source": {"format": "parquet", "uri": str(events_dir), "follow": True}},
        },
        {
            "kind": "FeatureSet",
            "metadata": {"name": "feed-features"},
            "spec": {"sampleSetRef": {"name": "feed"}, "features": _features()},
        },
        {
            "kind": "TrainJob",
            "metadata": {"name": "ranker"},
            "spec": {
                "featureSetRef": {"name": "feed-features"},
                "model": {"type": "deepfm", "embeddingDim": 8, "denseLayers": [16]},
                "optimization": {"batchSize": 256, "epochs": 1, "seed": 1},
                "distributed": {"workers": 1, "procsPerWorker": processes},
                "continuous": {"interval": "1s", "warmStart": True},
                "promoteIf": {"minAuc": MIN_AUC, "maxAucDrop": 0.03},
            },
        },
    ]
    return [parse_resource({"apiVersion": "recplane.io/v1alpha1", "namespace": NS, **d}) for d in docs]


def _land_batch(events_dir: Path, batch: int, corrupt: bool = False) -> None:
    """Write one batch of events (tastes drifted `batch` times) as a new Parquet file."""
    source = SyntheticSource(
        events=16_000, users=200, items=400, authors=40, topics=16, days=1, seed=5, drift=0.45, batch=batch
    )
    table = pa.Table.from_batches(list(generate(source)))
    if corrupt:
        # Labels detached from the events: what a broken logging pipeline produces.
        perm = pa.array(np.random.default_rng(batch).permutation(table.num_rows))
        for col in ("clicked", "dwell_s"):
            table = table.set_column(table.schema.get_field_index(col), col, table[col].take(perm))
        table = table.drop_columns([c for c in table.column_names if c.startswith("_")])
    pq.write_table(table, events_dir / f"events-{batch:03d}.parquet")


Rounds = tuple[LocalStore, list[RoundResult], ContinuousLoop]


def _one_result(loop: ContinuousLoop) -> RoundResult:
    out = loop.round()
    assert len(out) == 1, "the new batch produced no model version"
    return out[0]


def _samples(store: LocalStore, result: RoundResult) -> Manifest:
    """The SampleSet version a round trained and judged on."""
    assert result.verdict.sample_set_version is not None
    return store.resolve(NS, "sampleset", "feed", result.verdict.sample_set_version)


@pytest.fixture(scope="module")
def rounds(tmp_path_factory: pytest.TempPathFactory) -> Rounds:
    root = tmp_path_factory.mktemp("continuous")
    events, store = root / "events", LocalStore(root / "store")
    events.mkdir()
    loop = ContinuousLoop(store, _resources(events))
    results: list[RoundResult] = []
    for batch in range(3):
        _land_batch(events, batch)
        results.append(_one_result(loop))
    _land_batch(events, 3, corrupt=True)
    results.append(_one_result(loop))
    return store, results, loop


def test_each_new_batch_trains_a_warm_started_version_on_only_the_new_events(rounds: Rounds) -> None:
    store, results, _ = rounds
    versions = [r.manifest.version for r in results]
    assert len(set(versions)) == 4
    assert results[0].manifest.inputs["warmStartFrom"] is None
    for before, after in itertools.pairwise(results[:3]):
        assert after.manifest.inputs["warmStartFrom"] == before.manifest.version
    sample_versions = [r.verdict.sample_set_version for r in results]
    assert len(set(sample_versions)) == 4
    for r in results:
        m = _samples(store, r)
        assert len(m.inputs["files"]) == 1, "each SampleSet version reads only the one new file"
        assert 0 < m.row_counts["train"] + m.row_counts["validation"] <= 16_000


def test_versions_follow_the_drift_better_than_a_frozen_model(rounds: Rounds) -> None:
    store, results, _ = rounds
    newest_holdout = _samples(store, results[2])
    frozen = holdout_auc(store, results[0].manifest, newest_holdout)
    updated = holdout_auc(store, results[2].manifest, newest_holdout)
    assert frozen is not None and updated is not None
    assert updated > frozen + 0.01, f"continuously updated AUC {updated:.4f} vs frozen {frozen:.4f}"
    assert all(r.verdict.promoted for r in results[:3]), [r.verdict.reason for r in results]


def test_a_corrupted_batch_is_rejected_and_never_promoted(rounds: Rounds) -> None:
    store, results, _ = rounds
    bad = results[3]
    assert not bad.verdict.promoted
    assert "minAuc" in bad.verdict.reason
    assert promotion.promoted_version(store, NS, "ranker") == results[2].manifest.version
    recorded = {v.version: v for v in promotion.history(store, NS, "ranker")}
    assert recorded[bad.manifest.version].promoted is False
    assert recorded[bad.manifest.version].reason == bad.verdict.reason


def test_next_round_warm_starts_from_the_promoted_version_not_the_rejected_one(rounds: Rounds) -> None:
    _, results, loop = rounds
    spec = loop.resources[0].spec
    assert isinstance(spec, SampleSetSpec) and spec.source.uri
    events = Path(spec.source.uri)
    _land_batch(events, 4)
    assert _one_result(loop).manifest.inputs["warmStartFrom"] == results[2].manifest.version


def test_a_round_without_new_events_trains_nothing(rounds: Rounds) -> None:
    store, _, loop = rounds
    before = len(store.versions(NS, "trainjob", "ranker"))
    assert continuous_round(loop.resources[2], store) is None
    assert loop.run(threading.Event(), max_rounds=2) == 2
    assert len(store.versions(NS, "trainjob", "ranker")) == before


def test_rounds_on_several_processes_warm_start_and_record_one_verdict_each(tmp_path: Path) -> None:
    """What a cluster's worker group runs for each new FeatureSet version (`recplane step train`
    on a continuous TrainJob, under torchrun), here on two local processes."""
    events, store = tmp_path / "events", LocalStore(tmp_path / "store")
    events.mkdir()
    messages: list[str] = []
    loop = ContinuousLoop(store, _resources(events, processes=2), on_event=messages.append)
    first_batch = None
    for batch in range(2):
        _land_batch(events, batch)
        result = _one_result(loop)
        first_batch = first_batch or result
        card = (store.fetch_version(result.manifest) / CARD_FILE).read_text()
        assert "- 2 process(es), backend gloo" in card
    assert loop.round() == []  # nothing new: no torchrun at all
    history = promotion.history(store, NS, "ranker")
    assert [v.version for v in history] == [first_batch.manifest.version, result.manifest.version]
    assert result.manifest.inputs["warmStartFrom"] == first_batch.manifest.version
    assert history[1].incumbent == first_batch.manifest.version and history[1].incumbent_auc is not None
    assert any("training on 2 processes" in m for m in messages)


# ---- a live server following the promoted version ---------------------------------------------
def _start_server(store: LocalStore, workdir: Path) -> tuple[subprocess.Popen[bytes], str, Path]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    log = workdir / "serve.log"
    env = {
        **os.environ,
        "RECPLANE_STORE": store.uri,
        "RECPLANE_CACHE": str(workdir / "cache"),
        "BENTOML_HOME": str(workdir / "bentoml"),
        "OMP_NUM_THREADS": "1",
        "RECPLANE_MODEL_POLL_SECONDS": "0.5",
        "RECPLANE_SERVE_MAX_LATENCY_MS": "30000",  # a busy test machine slows requests instead of shedding them
    }
    model = f"{NS}/trainjob/ranker/promoted"
    cmd = [sys.executable, "-m", "recplane.cli.serve", "--model", model, "--port", str(port)]
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    for _ in range(480):
        assert proc.poll() is None, log.read_text(errors="replace")[-3000:]
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return proc, url, log
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"the server was not ready: {log.read_text(errors='replace')[-3000:]}")


def _served(url: str) -> str:
    return str(httpx.get(f"{url}/model", timeout=10).json()["modelVersion"])


def test_a_following_server_switches_to_each_promoted_version_without_a_failed_request(
    rounds: Rounds, tmp_path: Path
) -> None:
    store, _, loop = rounds
    spec = loop.resources[0].spec
    assert isinstance(spec, SampleSetSpec) and spec.source.uri
    events = Path(spec.source.uri)
    before = promotion.promoted_version(store, NS, "ranker")
    proc, url, log = _start_server(store, tmp_path)
    body = {
        "user": {"user_id": "u00001"},
        "context": {"position": 2},
        "candidates": [{"item_id": f"i{i:05d}", "topic": f"t{i % 7}"} for i in range(20)],
    }
    outcomes: list[tuple[int, str]] = []
    stop = threading.Event()

    def steady_requests() -> None:
        with httpx.Client(timeout=60) as client:
            while not stop.is_set():
                r = client.post(f"{url}/rank", json=body)
                outcomes.append((r.status_code, r.json().get("modelVersion", "") if r.status_code == 200 else r.text))

    sender = threading.Thread(target=steady_requests)
    try:
        assert _served(url) == before
        sender.start()
        _land_batch(events, 5)
        fresh = _one_result(loop)
        assert fresh.verdict.promoted, fresh.verdict.reason
        for _ in range(240):
            if _served(url) == fresh.manifest.version:
                break
            time.sleep(0.5)
        assert _served(url) == fresh.manifest.version, log.read_text(errors="replace")[-3000:]
        _land_batch(events, 6, corrupt=True)
        rejected = _one_result(loop)
        assert not rejected.verdict.promoted
        time.sleep(3)  # several polls: the rejected version must not be picked up
        assert _served(url) == fresh.manifest.version
    finally:
        stop.set()
        if sender.is_alive():
            sender.join(timeout=120)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
    failed = [o for o in outcomes if o[0] != 200]
    assert outcomes and not failed, failed[:3]
    served = {v for _, v in outcomes}
    assert fresh.manifest.version in served
    assert served <= {before, fresh.manifest.version}, "a request was scored by a version that was not promoted"
