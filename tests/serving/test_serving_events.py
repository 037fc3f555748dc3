"""Closing the loop online: what /rank served and what /feedback reported come back from the store as
events, a followed SampleSet over them yields labelled samples, and /metrics has online CTR per version."""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from prometheus_client import CollectorRegistry
from scrape import metric_total

from recplane.api.sampleset import SampleSetSpec
from recplane.data.samples import read_split
from recplane.data.steps import materialize_sampleset
from recplane.serving.events import DEDUPE_KEYS, SCHEMA, EventLog, RequestMemory, Served, events_location
from recplane.serving.metrics import ServingMetrics
from recplane.store import LocalStore, Manifest, Store, StoreError

NS = "default"
WINDOW = 1800  # RECPLANE_EVENTS_LABEL_WINDOW_SECONDS, the default
T0 = 1_700_000_000.25
JSON_HEADERS = {"content-type": "application/json"}


# ---- helpers ---------------------------------------------------------------------------------------------
def _events(store: Store, prefix: str) -> pa.Table:
    """Every event file under `prefix`, as one table (empty when there are none yet)."""
    tables = [
        pq.read_table(store.local_path(o.key))  # type: ignore[arg-type]
        for o in store.list_objects(prefix)
        if o.key.endswith(".parquet") and not Path(o.key).name.startswith(".")
    ]
    return pa.concat_tables(tables) if tables else SCHEMA.empty_table()


def _sampleset(uri: str) -> SampleSetSpec:
    """A SampleSet over an event log as docs/serving.md shows it, without the user filters (too few events here)."""
    return SampleSetSpec.model_validate(
        {
            "source": {"format": "parquet", "uri": uri, "follow": True},
            "dedupe": {"keys": list(DEDUPE_KEYS)},
            "botFilter": {"enabled": False},
            "inactiveUsers": {"enabled": False},
            "shardRows": 1000,
        }
    )


def _samples(store: Store, manifest: Manifest) -> dict[tuple[str, str], dict[str, Any]]:
    """(request id, item id) -> sample row, over both splits."""
    rows = read_split(store, manifest, "train").to_pylist() + read_split(store, manifest, "validation").to_pylist()
    by_key = {(r["request_id"], r["item_id"]): r for r in rows}
    assert len(by_key) == len(rows), "one sample per impression"
    return by_key


def _event_log(store: Store, registry: CollectorRegistry, **settings: Any) -> EventLog:
    options = {
        "flush_seconds": 3600.0,
        "flush_records": 10_000,
        "max_buffered": 10_000,
        "label_window_seconds": WINDOW,
        **settings,
    }
    return EventLog(lambda: store, f"{NS}/events/feed", metrics=ServingMetrics(registry), **options)


def _count(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


def _until(condition: Callable[[], bool], what: str, seconds: float = 60.0) -> None:
    """Poll `condition` until it holds; the event log writes on its own thread."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not seen within {seconds:.0f} s")
        time.sleep(0.05)


# ---- the event log on its own ----------------------------------------------------------------------------
def test_served_and_reported_events_become_one_labelled_sample_per_impression(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    registry = CollectorRegistry()
    events = _event_log(store, registry)
    events.log_impressions("r1", "u1", "v1", T0, ["a", "b", "c"], [0.9, 0.5, 0.1])
    events.log_impressions("r2", "u2", "v2", T0 + 1, ["a", "d"], [0.8, 0.2])
    events.log_feedback("r1", "b", True, 12.0, "u1", "v1", T0, T0 + 30)  # a click with a long dwell
    events.log_feedback("r2", "a", True, 1.0, "u2", "v2", None, T0 + 40)  # a click, too short for the label
    events.log_feedback("r1", "c", True, 9.0, "u1", "v1", T0, T0 + WINDOW + 60)  # after the window
    assert events.flush() == 8
    assert len(store.list_objects(f"{NS}/events/feed")) == 1
    assert _count(registry, "recplane_serving_events_written_total", event="impression") == 5
    assert _count(registry, "recplane_serving_events_written_total", event="feedback") == 3

    source = f"{store.uri}/{NS}/events/feed"
    first = materialize_sampleset(_sampleset(source), store, NS, "online")
    samples = _samples(store, first)
    assert {key: row["label"] for key, row in samples.items()} == {
        ("r1", "a"): 0.0,
        ("r1", "b"): 1.0,
        ("r1", "c"): 0.0,
        ("r2", "a"): 0.0,
        ("r2", "d"): 0.0,
    }
    assert samples[("r2", "a")]["event"] == "feedback" and samples[("r2", "a")]["clicked"] == 1
    assert samples[("r1", "c")]["event"] == "impression"  # the late click did not replace it
    assert samples[("r1", "a")]["position"] == 0 and samples[("r1", "a")]["model_version"] == "v1"

    # The source is followed: the next file becomes the next version, with only its events.
    events.log_impressions("r3", "u1", "v2", T0 + 100, ["e", "f"], [0.7, 0.3])
    events.log_feedback("r3", "f", True, 20.0, None, None, None, T0 + 130)
    assert events.flush() == 3
    second = materialize_sampleset(_sampleset(source), store, NS, "online")
    assert second.version != first.version
    assert {key: row["label"] for key, row in _samples(store, second).items()} == {("r3", "e"): 0.0, ("r3", "f"): 1.0}


class _Unreachable(LocalStore):
    """A store that refuses writes while `down` is set."""

    down = True

    def put_bytes(self, key: str, data: bytes) -> None:
        if self.down:
            raise StoreError("cannot reach the object store at minio:9000")
        super().put_bytes(key, data)


def test_a_store_that_cannot_be_written_loses_no_event_and_is_retried(tmp_path: Path) -> None:
    store = _Unreachable(tmp_path / "store")
    registry = CollectorRegistry()
    events = _event_log(store, registry)
    events.log_impressions("r1", "u1", "v1", T0, ["a", "b", "c"], [0.9, 0.5, 0.1])
    assert events.flush() == 0  # no exception: logged and counted
    assert _count(registry, "recplane_serving_event_write_errors_total") == 1
    assert events.buffered == 3
    events.log_feedback("r1", "a", True, 4.0, "u1", "v1", T0, T0 + 5)
    store.down = False
    assert events.flush() == 4
    assert events.buffered == 0
    table = _events(store, f"{NS}/events/feed")
    assert table.column("event").to_pylist() == ["impression"] * 3 + ["feedback"]


def test_a_full_buffer_drops_new_events_and_counts_them(tmp_path: Path) -> None:
    store = _Unreachable(tmp_path / "store")
    registry = CollectorRegistry()
    events = _event_log(store, registry, max_buffered=4)
    events.log_impressions("r1", "u1", "v1", T0, ["a", "b", "c"], [0.9, 0.5, 0.1])
    assert events.flush() == 0
    events.log_impressions("r2", "u1", "v1", T0, ["a", "b"], [0.9, 0.5])  # 3 + 2 > 4
    assert events.log_feedback("r1", "a", True, 4.0, "u1", "v1", T0, T0 + 5)
    assert not events.log_feedback("r1", "b", True, 4.0, "u1", "v1", T0, T0 + 6)
    assert _count(registry, "recplane_serving_events_dropped_total", event="impression") == 2
    assert _count(registry, "recplane_serving_events_dropped_total", event="feedback") == 1
    assert events.buffered == 4


def test_events_are_written_once_enough_are_buffered_and_at_shutdown(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    events = _event_log(store, CollectorRegistry(), flush_records=4).start()
    prefix = f"{NS}/events/feed"
    events.log_impressions("r1", "u1", "v1", T0, ["a", "b"], [0.9, 0.5])
    assert events.buffered == 2 and not store.list_objects(prefix)  # below the record limit, long interval
    events.log_impressions("r2", "u1", "v1", T0, ["a", "b", "c"], [0.9, 0.5, 0.1])
    _until(lambda: _events(store, prefix).num_rows == 5, "a flush after 4 buffered events")
    events.log_feedback("r2", "c", True, 4.0, "u1", "v1", T0, T0 + 5)
    assert events.close() == 1  # the shutdown flush
    assert _events(store, prefix).num_rows == 6
    assert len(store.list_objects(prefix)) == 2


def test_request_memory_forgets_the_oldest_requests_first() -> None:
    memory = RequestMemory(capacity=2)
    for i in range(3):
        memory.remember(f"r{i}", Served.of(f"v{i}", T0 + i, None))
    assert memory.get("r0") is None and len(memory) == 2
    assert memory.get("r2") == Served("v2", T0 + 2, None)


def test_request_memory_knows_positions_and_scores_within_an_item_budget() -> None:
    memory = RequestMemory(capacity=100, max_items=5)
    memory.remember("r1", Served.of("v1", T0, "u1", ["a", "b", "c"], [0.9, 0.5, 0.1]))
    served = memory.get("r1")
    assert served is not None
    assert served.position("c") == (2, pytest.approx(0.1))
    assert served.position("z") == (None, None)
    memory.remember("r2", Served.of("v1", T0, "u1", ["d", "e", "f"], [0.9, 0.5, 0.1]))  # 6 items > 5
    assert memory.get("r1") is None and memory.get("r2") is not None


def test_the_events_uri_is_a_prefix_in_the_store_or_a_location_of_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path.resolve()
    monkeypatch.setenv("RECPLANE_STORE", str(root / "store"))
    opener, prefix = events_location("default/events/feed-ranker/")
    assert opener().uri == str(root / "store") and prefix == "default/events/feed-ranker"
    opener, prefix = events_location(f"file://{root}/elsewhere")
    assert opener().uri == str(root / "elsewhere") and prefix == ""


# ---- the running service ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def logging_server(events_server: tuple[str, str]) -> str:
    return events_server[0]


@pytest.fixture(scope="module")
def events_prefix(events_server: tuple[str, str]) -> str:
    return events_server[1]


def _rank(server: str, request_id: str | None, user: str, n: int) -> dict[str, Any]:
    body: dict[str, Any] = {
        "user": {"user_id": user},
        "context": {"hour": 9, "device": "ios"},
        "candidates": [{"item_id": f"i{k}"} for k in range(n)],
    }
    if request_id is not None:
        body["requestId"] = request_id
    response = httpx.post(f"{server}/rank", json=body, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()  # type: ignore[no-any-return]


def _feedback(server: str, **body: Any) -> httpx.Response:
    return httpx.post(f"{server}/feedback", json=body, timeout=30)


def _rows_of(store: Store, prefix: str, request_id: str, event: str) -> list[dict[str, Any]]:
    table = _events(store, prefix)
    return [r for r in table.to_pylist() if r["request_id"] == request_id and r["event"] == event]


def test_rank_logs_every_returned_item_with_its_position_score_and_version(
    logging_server: str, events_prefix: str, serving_store: Store, ranker_manifest: Manifest
) -> None:
    started = time.time()
    response = _rank(logging_server, "ev-rank", "u-rank", 6)
    _until(lambda: len(_rows_of(serving_store, events_prefix, "ev-rank", "impression")) == 6, "the impressions")
    rows = sorted(_rows_of(serving_store, events_prefix, "ev-rank", "impression"), key=lambda r: r["position"])
    assert [r["position"] for r in rows] == list(range(6))
    assert [r["item_id"] for r in rows] == [item["itemId"] for item in response["items"]]
    assert [r["score"] for r in rows] == pytest.approx([item["score"] for item in response["items"]], abs=1e-6)
    assert {r["model_version"] for r in rows} == {ranker_manifest.version}
    assert {r["user_id"] for r in rows} == {"u-rank"}
    assert {r["clicked"] for r in rows} == {0}
    served_at = rows[0]["served_at"]
    assert started - 1 <= served_at <= time.time() + 1
    assert {r["ts"] for r in rows} == {int(served_at) + WINDOW}

    # A request without an id gets one, so that feedback can name it.
    anonymous = _rank(logging_server, None, "u-rank", 2)
    assert anonymous["requestId"]
    _until(lambda: len(_rows_of(serving_store, events_prefix, anonymous["requestId"], "impression")) == 2, "ids")


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({}, ["requestId", "itemId", "click", "dwellSeconds"]),
        ({"requestId": "r", "itemId": "a", "click": "yes", "dwellSeconds": 3}, ["click"]),
        ({"requestId": "r", "itemId": "a", "click": True, "dwellSeconds": -1}, ["dwellSeconds"]),
        ({"requestId": "r", "itemId": "a", "click": True, "dwellSeconds": "3"}, ["dwellSeconds"]),
        ({"requestId": "r", "itemId": ["a"], "click": True, "dwellSeconds": 3}, ["itemId"]),
        ({"requestId": "", "itemId": "a", "click": True, "dwellSeconds": 3}, ["requestId"]),
        ({"requestId": "r", "itemId": "a", "click": True, "dwellSeconds": 3, "modelVersion": "../x"}, ["modelVersion"]),
        ({"requestId": "r", "itemId": "a", "click": True, "dwellSeconds": 3, "userId": {"id": 1}}, ["userId"]),
        ({"requestId": "r", "itemId": "a", "click": True, "dwellSeconds": 3, "clicked": True}, ["clicked"]),
        ({"requestId": "r", "itemId": "a", "click": True, "dwellSeconds": 3, "position": -1}, ["position"]),
    ],
)
def test_an_invalid_feedback_body_is_a_400_naming_each_field(
    logging_server: str, body: dict[str, Any], fields: list[str]
) -> None:
    response = httpx.post(f"{logging_server}/feedback", content=json.dumps(body), headers=JSON_HEADERS, timeout=30)
    assert response.status_code == 400, response.text
    assert [d["field"] for d in response.json()["detail"]] == fields
    assert all(f in response.json()["error"] for f in fields)


def test_a_non_finite_dwell_time_is_refused(logging_server: str) -> None:
    raw = '{"requestId": "r", "itemId": "a", "click": true, "dwellSeconds": NaN}'
    response = httpx.post(f"{logging_server}/feedback", content=raw, headers=JSON_HEADERS, timeout=30)
    assert response.status_code == 400
    assert [d["field"] for d in response.json()["detail"]] == ["dwellSeconds"]


def test_feedback_counts_clicks_for_the_version_that_served_the_impression(
    logging_server: str, ranker_manifest: Manifest
) -> None:
    version = ranker_manifest.version
    before = httpx.get(f"{logging_server}/metrics", timeout=10).text
    items = [item["itemId"] for item in _rank(logging_server, "ev-ctr", "u-ctr", 5)["items"]]
    clicked = _feedback(logging_server, requestId="ev-ctr", itemId=items[0], click=True, dwellSeconds=8.5)
    assert clicked.status_code == 200, clicked.text
    assert clicked.json() == {"requestId": "ev-ctr", "itemId": items[0], "modelVersion": version, "logged": True}
    skipped = _feedback(logging_server, requestId="ev-ctr", itemId=items[1], click=False, dwellSeconds=0)
    assert skipped.status_code == 200
    # Served by a replica that is gone: nobody knows the version ...
    orphan = _feedback(logging_server, requestId="ev-elsewhere", itemId="i3", click=True, dwellSeconds=2)
    assert orphan.json()["modelVersion"] == "unknown"
    # ... unless the client sends back the modelVersion of the /rank response (here: a canary's).
    canary = _feedback(
        logging_server, requestId="ev-canary", itemId="i3", click=True, dwellSeconds=2, modelVersion="canary01"
    )
    assert canary.json()["modelVersion"] == "canary01"
    after = httpx.get(f"{logging_server}/metrics", timeout=10).text

    def delta(name: str, **labels: str) -> float:
        return metric_total(after, name, **labels) - metric_total(before, name, **labels)

    assert delta("recplane_serving_impressions_total", model_version=version) == 5
    assert delta("recplane_serving_clicks_total", model_version=version) == 1
    assert delta("recplane_serving_clicks_total", model_version="unknown") == 1
    assert delta("recplane_serving_clicks_total", model_version="canary01") == 1
    assert delta("recplane_serving_requests_total", endpoint="feedback", code="200") == 4


def test_logged_events_become_labelled_samples_of_a_followed_sampleset(
    logging_server: str, events_prefix: str, serving_store: Store, ranker_manifest: Manifest
) -> None:
    first = [item["itemId"] for item in _rank(logging_server, "ev-s1", "u-s1", 4)["items"]]
    second = [item["itemId"] for item in _rank(logging_server, "ev-s2", "u-s2", 4)["items"]]
    assert _feedback(logging_server, requestId="ev-s1", itemId=first[0], click=True, dwellSeconds=30).is_success
    # Too short a dwell for the label; no userId: the replica remembers whom it served.
    assert _feedback(logging_server, requestId="ev-s2", itemId=second[1], click=True, dwellSeconds=1).is_success
    _until(lambda: bool(_rows_of(serving_store, events_prefix, "ev-s2", "feedback")), "the feedback events")

    manifest = materialize_sampleset(
        _sampleset(f"{serving_store.uri}/{events_prefix}"), serving_store, NS, "feed-online"
    )
    samples = {key: row for key, row in _samples(serving_store, manifest).items() if key[0] in ("ev-s1", "ev-s2")}
    assert len(samples) == 8  # one per impression
    positives = [key for key, row in samples.items() if row["label"] == 1.0]
    assert positives == [("ev-s1", first[0])]
    short = samples[("ev-s2", second[1])]
    assert short["event"] == "feedback" and short["clicked"] == 1 and short["label"] == 0.0
    # The feedback row that stands for the impression carries what the impression row did.
    assert short["user_id"] == "u-s2" and short["model_version"] == ranker_manifest.version
    assert short["position"] == 1 and short["score"] is not None and short["served_at"] is not None


def test_malformed_feedback_never_gets_a_5xx(logging_server: str) -> None:
    rng = random.Random(11)
    valid: dict[str, Any] = {"requestId": "r", "itemId": "a", "click": True, "dwellSeconds": 3.0, "userId": "u"}
    odd_values: list[Any] = [None, "", "x" * 300, -1, 10**30, 1.5, True, [], [1], {}, {"a": None}, "NaN"]
    bodies: list[str] = ['{"requestId": ', "[]", "null", '"feedback"', "{}" * 3, '{"click": true}\x00']
    for _ in range(120):
        body = dict(valid)
        for key in rng.sample(sorted(valid), rng.randint(1, 3)):
            if rng.random() < 0.3:
                body.pop(key)
            else:
                body[key] = rng.choice(odd_values)
        bodies.append(json.dumps(body))
    with httpx.Client(base_url=logging_server, headers=JSON_HEADERS, timeout=30) as client:
        codes = {body: client.post("/feedback", content=body).status_code for body in bodies}
        assert client.post("/feedback", json=valid).status_code == 200
    assert not {b: c for b, c in codes.items() if not 200 <= c < 500}


def test_events_still_buffered_are_written_when_the_server_shuts_down(
    buffering_events_server: tuple[Any, str], serving_store: Store
) -> None:
    server, prefix = buffering_events_server
    _rank(server.url, "ev-shutdown", "u-shutdown", 3)
    assert _feedback(server.url, requestId="ev-shutdown", itemId="i0", click=True, dwellSeconds=5).is_success
    assert _events(serving_store, prefix).num_rows == 0  # an hour's flush interval: nothing written yet
    server.stop()  # SIGTERM, as Kubernetes stops a pod
    table = _events(serving_store, prefix)
    assert sorted(table.column("event").to_pylist()) == ["feedback"] + ["impression"] * 3
    assert set(table.column("request_id").to_pylist()) == {"ev-shutdown"}
