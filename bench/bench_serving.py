"""Benchmark: `/rank` with 100 candidates against the BentoML service and a plain FastAPI handler.

    .venv/bin/python bench/bench_serving.py [--model URI] [--duration 6] [--concurrency 1,2,4,8,16,32]

Both servers load the same model version and run on 127.0.0.1 in the same run:

* (a) `recplane serve` (BentoML, adaptive batching, validation, metrics);
* (b) a plain FastAPI app whose handler validates and scores each request on its own
  (no batching), with the same Scorer, served by uvicorn.

Printed, per server: p50/p99 latency, throughput and server CPU milliseconds per request
of closed-loop clients at rising concurrency (throughput at saturation = the best level),
and p50/p99 of an open-loop load at a fixed rate (default 50 requests/s). CPU per request
is the figure that survives a busy machine: latency and throughput move with whatever else
runs, the work a server spends on one request hardly does. The in-process floor is printed first:
the model's forward pass for 100 candidates, and transform + forward, with no HTTP.

Without --model, a DeepFM is trained for a few steps on synthetic feed events into a
temporary store (its quality is irrelevant here; its size is realistic: 16-dim
embeddings, [128, 64] dense layers). The load generator runs in this process on the
same machine as the servers: on a small machine it competes with them for CPU, as
the figures say. Nothing is asserted: this prints figures.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

# Module level: FastAPI resolves the handler's (string) annotations in this module's namespace.
from recplane.serving.schemas import RankRequest, RankResponse

NS = "default"
USER_COLUMNS = ("user_id", "recent_topics", "user_activity")
CONTEXT_COLUMNS = ("hour", "device", "network", "referrer")


# ---- the model ----------------------------------------------------------------------------
def train_model(store_dir: Path) -> str:
    """A DeepFM trained for a few steps on synthetic feed events; returns its store reference."""
    from recplane.api.featureset import FeatureSetSpec
    from recplane.api.resource import parse_resource
    from recplane.api.sampleset import SampleSetSpec
    from recplane.data.catalogs import feed_features
    from recplane.data.steps import materialize_featureset, materialize_sampleset
    from recplane.store import LocalStore
    from recplane.trainer.step import train_job

    store = LocalStore(store_dir)
    synthetic = {"events": 60_000, "users": 4000, "items": 8000, "authors": 400, "days": 3, "seed": 11}
    materialize_sampleset(
        SampleSetSpec.model_validate({"source": {"format": "synthetic", "synthetic": synthetic}}), store, NS, "feed"
    )
    features = FeatureSetSpec.model_validate({"sampleSetRef": {"name": "feed"}, "features": feed_features()})
    materialize_featureset(features, store, NS, "feed-features")
    job = {
        "apiVersion": "recplane.io/v1alpha1",
        "kind": "TrainJob",
        "metadata": {"name": "bench-deepfm", "namespace": NS},
        "spec": {
            "featureSetRef": {"name": "feed-features"},
            "model": {"type": "deepfm", "embeddingDim": 16, "denseLayers": [128, 64]},
            "optimization": {"batchSize": 1024, "maxSteps": 30},
            "distributed": {"workers": 1, "procsPerWorker": 1},
        },
    }
    train_job(parse_resource(job), store)
    return f"{NS}/trainjob/bench-deepfm/latest"


def request_bodies(model_uri: str, count: int, candidates: int) -> list[dict[str, Any]]:
    """`count` /rank bodies: one logged user and context each, over `candidates` logged items."""
    from recplane.data.samples import read_split
    from recplane.serving.model_source import resolve_model
    from recplane.store import open_store
    from recplane.trainer.export import load_model_version

    location = resolve_model(model_uri)
    processor = load_model_version(location.local_dir).processor
    store = open_store()
    samples = store.latest(NS, "sampleset", "feed")
    if samples is None:
        raise SystemExit("the store has no SampleSet default/feed to draw request rows from")
    rows = read_split(store, samples, "validation", processor.input_columns).to_pylist()
    rng = random.Random(0)
    shared = set(USER_COLUMNS) | set(CONTEXT_COLUMNS)
    bodies = []
    for i in range(count):
        who = rng.choice(rows)
        items = rng.sample(rows, candidates)
        bodies.append(
            {
                "user": {c: who[c] for c in USER_COLUMNS if c in who},
                "context": {c: who[c] for c in CONTEXT_COLUMNS if c in who},
                "candidates": [{k: v for k, v in r.items() if k not in shared} for r in items],
                "requestId": f"bench-{i}",
            }
        )
    return bodies


# ---- the in-process floor -----------------------------------------------------------------
def floor(model_uri: str, bodies: list[dict[str, Any]], repeats: int = 200) -> dict[str, float]:
    """Median milliseconds, in this process: forward only, transform + forward, and the whole /rank work
    (the service's own steps: validate, transform + forward, sort and serialise the response body)."""
    import torch

    from recplane.data.tensors import to_torch
    from recplane.serving.config import ServingConfig
    from recplane.serving.scoring import Scorer

    torch.set_num_threads(1)
    scorer = Scorer.load(model_uri, ServingConfig())
    requests = [RankRequest.model_validate(b) for b in bodies]
    blocks = [scorer.rank_block(r) for r in requests]
    inputs = [scorer.transform([block]) for block in blocks]

    def median_ms(work: Any, prepare: Any = lambda i: i) -> float:
        times = []
        for i in range(repeats):
            ready = prepare(i % len(bodies))
            started = time.perf_counter()
            work(ready)
            times.append(time.perf_counter() - started)
        return float(np.median(times[repeats // 10 :]) * 1000)

    # Each pass gets tensors of its own, as each request does: a KeyedJaggedTensor caches what the
    # first forward derives from it (offsets, per-key lengths), so a reused one would time less work.
    with torch.inference_mode():
        forward = median_ms(scorer.loaded.score, lambda i: to_torch(inputs[i]))

    def whole(i: int) -> bytes:
        scores = scorer.score_blocks([scorer.rank_block(requests[i])])[0]
        return scorer.ranking(requests[i], scores).json()

    return {
        "forward_ms": forward,
        "transform_forward_ms": median_ms(lambda i: scorer.score_blocks([blocks[i]])),
        "validate_transform_forward_ms": median_ms(whole),
    }


def exact_top_k_ms(
    sizes: tuple[int, ...] = (10_000, 100_000, 1_000_000), dim: int = 32, k: int = 50
) -> dict[int, float]:
    """Median milliseconds of /recall's exact top-k (one user against every item) by index size."""
    import torch

    from recplane.trainer.evaluate import ItemIndex

    torch.set_num_threads(1)
    out = {}
    for n in sizes:
        gen = torch.Generator().manual_seed(n)
        index = ItemIndex(
            ids=np.arange(n), embeddings=torch.nn.functional.normalize(torch.randn(n, dim, generator=gen))
        )
        user = torch.nn.functional.normalize(torch.randn(1, dim, generator=gen))
        times = []
        for _ in range(30):
            started = time.perf_counter()
            index.top_k(user, k)
            times.append(time.perf_counter() - started)
        out[n] = float(np.median(times) * 1000)
    return out


# ---- the servers --------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    name: str
    url: str
    process: subprocess.Popen[bytes]

    def cpu_seconds(self) -> float:
        """CPU time of the server's whole process tree (BentoML runs its workers as child processes)."""
        import psutil

        root = psutil.Process(self.process.pid)
        total = 0.0
        for p in [root, *root.children(recursive=True)]:
            try:
                t = p.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += t.user + t.system
        return total


def measured(server: Server, run: Any) -> Result:
    """Run one load phase and attach the server's CPU milliseconds per answered request.

    Unlike latency, CPU per request hardly depends on what else the machine runs, so it shows
    the throughput one dedicated core would reach: 1000 / (CPU ms per request). The phase's
    warm-up requests cost CPU too, so they count as answered here (not in latency or throughput).
    """
    before = server.cpu_seconds()
    result: Result = asyncio.run(run)
    spent = server.cpu_seconds() - before
    answered = len(result.latencies_ms) + sum(result.errors.values()) + result.warm_up
    result.cpu_ms_per_request = spent * 1000 / max(answered, 1)
    return result


@contextmanager
def running(name: str, command: list[str], env: dict[str, str], port: int, log: Path) -> Iterator[Server]:
    import httpx

    with log.open("wb") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    server = Server(name, f"http://127.0.0.1:{port}", process)
    try:
        deadline = time.monotonic() + 300
        while True:
            if process.poll() is not None:
                raise SystemExit(f"{name} exited with {process.returncode}; see {log}")
            try:
                if httpx.get(f"{server.url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise SystemExit(f"{name} was not ready after 300 s; see {log}")
            time.sleep(0.5)
        yield server
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def baseline_server(model_uri: str, port: int) -> None:
    """(b): a plain FastAPI handler around the same Scorer, every request scored on its own."""
    import torch
    import uvicorn
    from fastapi import FastAPI, HTTPException
    from fastapi.responses import PlainTextResponse

    from recplane.serving.config import ServingConfig
    from recplane.serving.scoring import Scorer
    from recplane.serving.validation import RequestInvalid

    torch.set_num_threads(1)
    scorer = Scorer.load(model_uri, ServingConfig())
    app = FastAPI()

    @app.get("/readyz", response_class=PlainTextResponse)
    async def readyz() -> str:
        return "ok"

    # async and inline, like the service's forward pass: a def handler would score in a thread pool
    # and lose to the GIL (see docs/serving.md), which would flatter (a).
    @app.post("/rank", response_model=RankResponse, response_model_by_alias=True)
    async def rank(request: RankRequest) -> RankResponse:
        try:
            return scorer.rank(request)
        except RequestInvalid as exc:
            raise HTTPException(status_code=400, detail=exc.errors) from None

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


# ---- the load -----------------------------------------------------------------------------
@dataclass
class Result:
    latencies_ms: list[float]
    errors: dict[int, int]
    seconds: float
    cpu_ms_per_request: float = float("nan")
    warm_up: int = 0  # requests answered before the measurement began

    @property
    def throughput(self) -> float:
        return len(self.latencies_ms) / self.seconds

    def pct(self, q: float) -> float:
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms else float("nan")


async def _post(session: Any, url: str, body: bytes, result: Result) -> None:
    started = time.perf_counter()
    async with session.post(url, data=body, headers={"content-type": "application/json"}) as response:
        await response.read()
        if response.status == 200:
            result.latencies_ms.append((time.perf_counter() - started) * 1000)
        else:
            result.errors[response.status] = result.errors.get(response.status, 0) + 1


async def closed_loop(url: str, bodies: list[bytes], concurrency: int, seconds: float, warmup: float) -> Result:
    """`concurrency` clients, each sending its next request when the previous one is answered."""
    import aiohttp

    result = Result([], {}, seconds)
    warm = Result([], {}, warmup)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        stop = time.perf_counter() + warmup
        measuring = False

        async def client(k: int) -> None:
            i = k
            while time.perf_counter() < stop:
                await _post(session, url, bodies[i % len(bodies)], result if measuring else warm)
                i += concurrency

        await asyncio.gather(*(client(k) for k in range(concurrency)))
        measuring = True
        stop = time.perf_counter() + seconds
        await asyncio.gather(*(client(k) for k in range(concurrency)))
    result.warm_up = len(warm.latencies_ms) + sum(warm.errors.values())
    return result


async def open_loop(url: str, bodies: list[bytes], rate: float, seconds: float) -> Result:
    """Requests sent at a fixed rate whatever the answers: the latency a caller sees at that load."""
    import aiohttp

    result = Result([], {}, seconds)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        warm = Result([], {}, 1)
        for i in range(int(rate)):  # warm-up second
            await _post(session, url, bodies[i % len(bodies)], warm)
        result.warm_up = len(warm.latencies_ms) + sum(warm.errors.values())
        start = time.perf_counter()
        tasks = []
        for i in range(int(rate * seconds)):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(_post(session, url, bodies[i % len(bodies)], result)))
        await asyncio.gather(*tasks)
    return result


# ---- main ---------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="model URI (default: train a DeepFM into a temporary store)")
    parser.add_argument("--candidates", type=int, default=100)
    parser.add_argument("--duration", type=float, default=6.0, help="seconds per measurement")
    parser.add_argument("--concurrency", default="1,2,4,8,16,32")
    parser.add_argument("--rate", type=float, default=50.0, help="open-loop requests per second")
    parser.add_argument("--max-latency-ms", type=int, default=1000, help="RECPLANE_SERVE_MAX_LATENCY_MS for (a)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--baseline-server", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.baseline_server:
        baseline_server(args.model, args.port)
        return

    start_load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="recplane-bench-serving-") as tmp:
        work = Path(tmp)
        if args.model is None:
            os.environ["RECPLANE_STORE"] = str(work / "store")
            print("training a DeepFM for the benchmark ...", file=sys.stderr)
            args.model = train_model(work / "store")
        os.environ.setdefault("RECPLANE_CACHE", str(work / "cache"))
        bodies = request_bodies(args.model, 64, args.candidates)
        payloads = [json.dumps(b).encode() for b in bodies]
        base = floor(args.model, bodies)
        print(
            f"in-process, {args.candidates} candidates: forward {base['forward_ms']:.2f} ms, "
            f"transform + forward {base['transform_forward_ms']:.2f} ms, "
            f"validate + transform + forward + sort + serialise {base['validate_transform_forward_ms']:.2f} ms"
        )
        recall = exact_top_k_ms()
        print(
            "in-process exact top-50 of /recall (32-dim index): "
            + ", ".join(f"{n:,} items {ms:.2f} ms" for n, ms in recall.items())
        )
        env = {**os.environ, "OMP_NUM_THREADS": "1", "BENTOML_HOME": str(work / "bentoml")}
        bento_port, fast_port = free_port(), free_port()
        bento_env = {**env, "RECPLANE_SERVE_MAX_LATENCY_MS": str(args.max_latency_ms)}
        bento_cmd = [sys.executable, "-m", "recplane.cli.serve", "--model", args.model, "--port", str(bento_port)]
        fast_cmd = [sys.executable, __file__, "--baseline-server", "--model", args.model, "--port", str(fast_port)]
        levels = [int(c) for c in args.concurrency.split(",")]
        report: dict[str, Any] = {
            "floor": base,
            "recall_top_k_ms": recall,
            "closed": {},
            "open": {},
            "candidates": args.candidates,
        }
        # The load generator shares the machine's pauses too: its heap (torch, the model of the floor,
        # the request bodies) takes a full garbage collection hundreds of milliseconds, which would stall
        # every request in flight of either server. Freeze it: nothing allocated so far is walked again.
        gc.collect()
        gc.freeze()
        with (
            running("bentoml", bento_cmd, bento_env, bento_port, work / "bentoml.log") as bento,
            running("fastapi", fast_cmd, env, fast_port, work / "fastapi.log") as fast,
        ):
            print(f"\n{'server':8} {'clients':>7} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>8} {'CPU ms':>8}  errors")
            for c in levels:
                for server in (bento, fast):  # interleaved, so drift on the machine hits both alike
                    r = measured(server, closed_loop(server.url + "/rank", payloads, c, args.duration, 1.0))
                    report["closed"].setdefault(server.name, []).append(
                        {
                            "clients": c,
                            "p50": r.pct(50),
                            "p99": r.pct(99),
                            "rps": r.throughput,
                            "cpu_ms": r.cpu_ms_per_request,
                            "errors": r.errors,
                        }
                    )
                    errors = r.errors or ""
                    print(
                        f"{server.name:8} {c:>7} {r.pct(50):8.2f} {r.pct(99):8.2f} {r.throughput:8.1f} "
                        f"{r.cpu_ms_per_request:8.2f}  {errors}"
                    )
            print(f"\nopen loop at {args.rate:g} requests/s for {args.duration:g} s")
            for server in (bento, fast):
                r = measured(server, open_loop(server.url + "/rank", payloads, args.rate, args.duration))
                report["open"][server.name] = {
                    "p50": r.pct(50),
                    "p99": r.pct(99),
                    "cpu_ms": r.cpu_ms_per_request,
                    "errors": r.errors,
                }
                print(
                    f"{server.name:8} p50 {r.pct(50):7.2f} ms  p99 {r.pct(99):7.2f} ms  "
                    f"CPU {r.cpu_ms_per_request:.2f} ms/request  {r.errors or ''}"
                )
        saturation = {name: max(x["rps"] for x in rows) or float("nan") for name, rows in report["closed"].items()}
        report["saturation_rps"] = saturation
        p50_single = report["closed"]["bentoml"][0]["p50"]
        print(
            f"\nsaturation: bentoml {saturation['bentoml']:.1f} req/s, fastapi {saturation['fastapi']:.1f} req/s "
            f"({saturation['bentoml'] / saturation['fastapi']:.2f}x; goal >= 1.5x)"
        )
        cpu = {name: min(x["cpu_ms"] for x in rows) for name, rows in report["closed"].items()}
        report["cpu_ms_per_request"] = cpu
        print(
            f"least server CPU per request: bentoml {cpu['bentoml']:.2f} ms, fastapi {cpu['fastapi']:.2f} ms "
            f"({cpu['fastapi'] / cpu['bentoml']:.2f}x the requests per CPU second)"
        )
        print(f"p99 at {args.rate:g} req/s: bentoml {report['open']['bentoml']['p99']:.2f} ms (goal <= 25 ms)")
        print(
            f"p50 with {levels[0]} client(s): {p50_single:.2f} ms = {p50_single / base['forward_ms']:.1f}x the forward "
            f"floor, {p50_single / base['transform_forward_ms']:.1f}x transform + forward (goal <= 3x)"
        )
        print(
            f"machine: {os.cpu_count()} CPUs, load average {start_load:.1f} at the start, "
            f"{os.getloadavg()[0]:.1f} at the end"
        )
        if args.json:
            args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
