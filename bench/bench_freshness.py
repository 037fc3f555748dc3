"""Benchmark: freshness of continuous training, locally.

    .venv/bin/python bench/bench_freshness.py [--events 100000]

A TrainJob with `continuous` and a server following its promoted version run on this
machine. After a first version is promoted and served, `--events` new feed events land as
one Parquet file in the followed directory; the clock starts when the file is in place and
stops at the first /rank response scored by the new version. Printed per stage, with its share:

* sampleset: the new file becomes a SampleSet version (only the new events);
* featureset: the FeatureSet over it (hash features: no vocabulary to grow);
* train: one warm-started epoch on the new events, export, store;
* verdict: the promoted version scored on the same hold-out, promotion recorded;
* serve: the server's poll notices the pointer, loads the version, answers with it.

Everything runs in one process group on the CPU; nothing is asserted: this prints figures.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from recplane.api.resource import Resource, parse_resource
from recplane.api.sampleset import SyntheticSource
from recplane.data.steps import materialize_featureset, materialize_sampleset
from recplane.data.synthetic import generate
from recplane.store import LocalStore, Manifest, Store
from recplane.trainer.continuous import continuous_round
from recplane.trainer.step import train_job

NS = "default"
POLL_SECONDS = 1.0


def _resources(events: Path) -> list[Resource]:
    def sparse(name: str, cols: list[str], transform: dict[str, object]) -> dict[str, object]:
        return {"name": name, "group": "id", "type": "sparse", "columns": cols, "transform": transform}

    features = [
        sparse("user_id", ["user_id"], {"type": "hash", "buckets": 1 << 14}),
        sparse("item_id", ["item_id"], {"type": "hash", "buckets": 1 << 15}),
        sparse("author_id", ["author_id"], {"type": "hash", "buckets": 1 << 12}),
        sparse("topic", ["topic"], {"type": "hash", "buckets": 256}),
        sparse("user_x_topic", ["user_id", "topic"], {"type": "cross", "buckets": 1 << 16}),
        sparse("position", ["position"], {"type": "bucketize", "boundaries": [1, 2, 3, 5, 8, 13]}),
    ]
    docs = [
        {"kind": "SampleSet", "spec": {"source": {"format": "parquet", "uri": str(events), "follow": True}}},
        {"kind": "FeatureSet", "spec": {"sampleSetRef": {"name": "feed"}, "features": features}},
        {
            "kind": "TrainJob",
            "spec": {
                "featureSetRef": {"name": "feed-features"},
                "model": {"type": "deepfm", "embeddingDim": 16, "denseLayers": [64, 32]},
                "optimization": {"batchSize": 2048, "epochs": 1, "seed": 1},
                "distributed": {"workers": 1, "procsPerWorker": 1},
                "continuous": {"interval": "10s"},
                "promoteIf": {"minAuc": 0.55, "maxAucDrop": 0.05},
            },
        },
    ]
    names = {"SampleSet": "feed", "FeatureSet": "feed-features", "TrainJob": "ranker"}
    return [
        parse_resource(
            {"apiVersion": "recplane.io/v1alpha1", "metadata": {"name": names[d["kind"]]}, **d}  # type: ignore[index]
        )
        for d in docs
    ]


def _land(events: Path, batch: int, n: int) -> None:
    source = SyntheticSource(
        events=n, users=20_000, items=50_000, authors=2_000, days=1, seed=11, drift=0.3, batch=batch
    )
    table = pa.Table.from_batches(list(generate(source)))
    tmp = events / f".events-{batch:03d}.parquet"
    pq.write_table(table, tmp)
    tmp.rename(events / f"events-{batch:03d}.parquet")  # lands atomically, as an object-store upload does


def _round(store: Store, res: list[Resource], times: dict[str, float]) -> Manifest:
    t = time.perf_counter()
    materialize_sampleset(res[0].spec, store, NS, "feed")  # type: ignore[arg-type]
    times["sampleset"] = time.perf_counter() - t
    t = time.perf_counter()
    materialize_featureset(res[1].spec, store, NS, "feed-features")  # type: ignore[arg-type]
    times["featureset"] = time.perf_counter() - t
    trained: dict[str, float] = {}

    def timed_train(resource: Resource, s: Store, warm: str | None) -> Manifest:
        start = time.perf_counter()
        m = train_job(resource, s, warm_start_from=warm)
        trained["train"] = time.perf_counter() - start
        return m

    t = time.perf_counter()
    result = continuous_round(res[2], store, train=timed_train)
    assert result is not None and result.verdict.promoted, result
    times["train"] = trained["train"]
    times["verdict"] = time.perf_counter() - t - trained["train"]
    return result.manifest


def _serve(store: Store, workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    env = {
        **os.environ,
        "RECPLANE_STORE": store.uri,
        "RECPLANE_CACHE": str(workdir / "cache"),
        "BENTOML_HOME": str(workdir / "bentoml"),
        "RECPLANE_MODEL_POLL_SECONDS": str(POLL_SECONDS),
    }
    cmd = [sys.executable, "-m", "recplane.cli.serve", "--model", f"{NS}/trainjob/ranker/promoted", "--port", str(port)]
    log = (workdir / "serve.log").open("wb")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited; see {workdir / 'serve.log'}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        time.sleep(0.5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=100_000, help="New events in the measured batch.")
    args = parser.parse_args()
    torch.set_num_threads(max(1, (os.cpu_count() or 2) // 2))
    with tempfile.TemporaryDirectory(prefix="recplane-bench-freshness-") as tmp:
        root = Path(tmp)
        events, store = root / "events", LocalStore(root / "store")
        events.mkdir()
        res = _resources(events)
        _land(events, 0, 50_000)
        first = _round(store, res, {})
        proc, url = _serve(store, root)
        body = {"user": {"user_id": "u1"}, "candidates": [{"item_id": f"i{i}", "topic": "t1"} for i in range(50)]}
        try:
            assert httpx.post(f"{url}/rank", json=body, timeout=30).json()["modelVersion"] == first.version
            times: dict[str, float] = {}
            _land(events, 1, args.events)
            landed = time.perf_counter()
            new = _round(store, res, times)
            published = time.perf_counter()
            while httpx.post(f"{url}/rank", json=body, timeout=30).json()["modelVersion"] != new.version:
                time.sleep(0.05)
            times["serve"] = time.perf_counter() - published
            total = time.perf_counter() - landed
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
    print(f"freshness for {args.events:,} new events: {total:.1f}s (goal: under 120s); poll every {POLL_SECONDS:g}s")
    print(f"{'stage':<12}{'seconds':>9}{'share':>8}")
    for stage, seconds in times.items():
        print(f"{stage:<12}{seconds:>9.1f}{seconds / total:>8.0%}")


if __name__ == "__main__":
    main()
