"""The real BentoML server, called through BentoML's own client and plain HTTP."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import bentoml
import httpx
import numpy as np
import pyarrow as pa
import pytest
import torch
from scrape import metric_total

from recplane.data.features import FeatureProcessor
from recplane.data.samples import read_split
from recplane.data.tensors import to_torch
from recplane.store import Manifest, Store
from recplane.trainer.export import LoadedModel, load_model_version

NS = "default"
USER_COLUMNS = ("user_id", "recent_topics", "user_activity")
CONTEXT_COLUMNS = ("hour", "device", "network", "referrer")
JSON_HEADERS = {"content-type": "application/json"}


def _validation_rows(store: Store, processor: FeatureProcessor, n: int) -> list[dict[str, Any]]:
    """Raw rows as logged: the SampleSet's validation rows, input columns only."""
    samples = store.latest(NS, "sampleset", "feed")
    assert samples is not None
    return read_split(store, samples, "validation", processor.input_columns).slice(0, n).to_pylist()


def _request(rows: list[dict[str, Any]]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A /rank body for the first row's user and context over every row's item, and the rows it stands for."""
    user = {c: rows[0][c] for c in USER_COLUMNS}
    context = {c: rows[0][c] for c in CONTEXT_COLUMNS}
    shared = set(USER_COLUMNS) | set(CONTEXT_COLUMNS)
    candidates = [{k: v for k, v in row.items() if k not in shared} for row in rows]
    body = {"user": user, "context": context, "candidates": candidates, "requestId": "parity"}
    return body, [{**user, **context, **c} for c in candidates]


def _offline_scores(loaded: LoadedModel, rows: list[dict[str, Any]]) -> np.ndarray:
    """The trainer's own offline scoring (Arrow transform path) of the same raw rows."""
    return loaded.score_table(pa.Table.from_pylist(rows, schema=loaded.processor.input_schema))


def _by_index(response: dict[str, Any]) -> np.ndarray:
    scores = np.zeros(len(response["items"]), dtype=np.float64)
    for item in response["items"]:
        scores[item["index"]] = item["score"]
    return scores


@pytest.fixture(scope="module")
def ranker(servers: dict[str, str]) -> str:
    return servers["ranker"]


@pytest.fixture(scope="module")
def ranker_fp32(serving_store: Store, ranker_manifest: Manifest) -> LoadedModel:
    return load_model_version(serving_store.fetch_version(ranker_manifest), "fp32")


@pytest.mark.parametrize("variant", ["fp32", "int8"])
def test_service_scores_equal_the_trainers_offline_scores(
    servers: dict[str, str], serving_store: Store, ranker_manifest: Manifest, variant: str
) -> None:
    loaded = load_model_version(serving_store.fetch_version(ranker_manifest), variant)
    server = servers["ranker" if variant == "fp32" else "ranker-int8"]
    rows = _validation_rows(serving_store, loaded.processor, 120)
    bodies = [_request(rows[i : i + 40]) for i in range(0, 120, 40)]
    with ThreadPoolExecutor(3) as pool:  # concurrent, so some rows are scored inside merged batches
        responses = list(pool.map(lambda b: httpx.post(f"{server}/rank", json=b[0], timeout=30).json(), bodies))
    for (_, merged), response in zip(bodies, responses, strict=True):
        assert response.get("modelVersion") == ranker_manifest.version, response
        np.testing.assert_allclose(_by_index(response), _offline_scores(loaded, merged), rtol=0, atol=2e-6)


def test_rank_answers_through_bentomls_client_best_first(
    ranker: str, serving_store: Store, ranker_manifest: Manifest, ranker_fp32: LoadedModel
) -> None:
    body, _ = _request(_validation_rows(serving_store, ranker_fp32.processor, 25))
    with bentoml.SyncHTTPClient(ranker) as client:
        response = client.rank(body)
    scores = [item["score"] for item in response["items"]]
    assert scores == sorted(scores, reverse=True)
    assert sorted(item["index"] for item in response["items"]) == list(range(25))
    assert [item["itemId"] for item in response["items"]] == [
        body["candidates"][item["index"]]["item_id"] for item in response["items"]
    ]
    assert response["requestId"] == "parity"
    assert response["modelVersion"] == ranker_manifest.version


def test_a_ranking_is_sent_with_its_length_and_untraced_by_default(
    ranker: str, serving_store: Store, ranker_fp32: LoadedModel
) -> None:
    body, _ = _request(_validation_rows(serving_store, ranker_fp32.processor, 10))
    response = httpx.post(f"{ranker}/rank", json=body, timeout=30)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert int(response.headers["content-length"]) == len(response.content)
    assert "x-bentoml-request-id" not in response.headers  # RECPLANE_SERVE_TRACING is off


def test_unseen_ids_are_scored_through_the_oov_bucket(ranker: str, ranker_fp32: LoadedModel) -> None:
    body = {"user": {"user_id": "nobody-ever"}, "candidates": [{"item_id": "brand-new-post", "topic": "unheard-of"}]}
    response = httpx.post(f"{ranker}/rank", json=body, timeout=30)
    assert response.status_code == 200
    expected = _offline_scores(
        ranker_fp32, [{"user_id": "nobody-ever", "item_id": "brand-new-post", "topic": "unheard-of"}]
    )
    assert response.json()["items"][0]["score"] == pytest.approx(float(expected[0]), abs=2e-6)


def test_recall_returns_the_exact_top_k_of_the_item_index(
    servers: dict[str, str], serving_store: Store, recall_manifest: Manifest
) -> None:
    loaded = load_model_version(serving_store.fetch_version(recall_manifest), "fp32")
    row = _validation_rows(serving_store, loaded.processor, 1)[0]
    user = {c: row[c] for c in USER_COLUMNS}
    context = {c: row[c] for c in CONTEXT_COLUMNS}
    response = httpx.post(f"{servers['recall']}/recall", json={"user": user, "context": context, "k": 7}, timeout=30)
    assert response.status_code == 200, response.text
    items = response.json()["items"]

    table = pa.Table.from_pylist([{**user, **context}], schema=loaded.processor.input_schema)
    with torch.no_grad():
        embedding = loaded.user_embedding(to_torch(loaded.processor.transform(table)))
    assert loaded.item_index is not None
    scores, ids = loaded.item_index.top_k(embedding, 7)
    assert [i["itemId"] for i in items] == ids[0].tolist()
    np.testing.assert_allclose([i["score"] for i in items], scores[0].numpy(), atol=1e-5)

    excluded = [items[0]["itemId"], items[3]["itemId"]]
    again = httpx.post(
        f"{servers['recall']}/recall",
        json={"user": user, "context": context, "k": 7, "excludeItemIds": excluded},
        timeout=30,
    ).json()["items"]
    assert len(again) == 7 and not {i["itemId"] for i in again} & set(excluded)


def test_recall_on_a_ranking_model_is_a_404_that_says_why(ranker: str) -> None:
    response = httpx.post(f"{ranker}/recall", json={"user": {"user_id": "u1"}}, timeout=30)
    assert response.status_code == 404
    assert "no item index" in response.json()["error"]


def test_model_endpoint_describes_the_served_version(ranker: str, ranker_manifest: Manifest) -> None:
    info = httpx.get(f"{ranker}/model", timeout=30).json()
    assert info["modelVersion"] == ranker_manifest.version
    assert info["modelType"] == "deepfm" and info["variant"] == "fp32" and info["task"] == "ranking"
    assert info["metrics"]["auc"] == ranker_manifest.status["metrics"]["auc"]
    names = {f["name"]: f for f in info["features"]}
    assert names["item_id"]["transform"] == "vocabulary" and names["item_id"]["numEmbeddings"] > 2
    assert "hour" in info["inputColumns"]
    assert info["limits"]["maxCandidates"] == 300


def test_health_and_readiness(ranker: str) -> None:
    assert httpx.get(f"{ranker}/livez", timeout=10).status_code == 200
    assert httpx.get(f"{ranker}/readyz", timeout=10).status_code == 200


def test_concurrent_callers_share_forward_passes_and_metrics_count_them(
    ranker: str, serving_store: Store, ranker_manifest: Manifest, ranker_fp32: LoadedModel
) -> None:
    version = ranker_manifest.version
    before = httpx.get(f"{ranker}/metrics", timeout=10).text
    body, _ = _request(_validation_rows(serving_store, ranker_fp32.processor, 50))
    with ThreadPoolExecutor(16) as pool:
        codes = list(pool.map(lambda _: httpx.post(f"{ranker}/rank", json=body, timeout=60).status_code, range(48)))
    assert codes == [200] * 48
    bad = httpx.post(f"{ranker}/rank", json={"candidates": []}, timeout=30)
    assert bad.status_code == 400
    after = httpx.get(f"{ranker}/metrics", timeout=10).text

    def delta(name: str, **labels: str) -> float:
        return metric_total(after, name, **labels) - metric_total(before, name, **labels)

    assert delta("recplane_serving_requests_total", endpoint="rank", code="200", model_version=version) == 48
    assert delta("recplane_serving_requests_total", endpoint="rank", code="400", model_version=version) == 1
    assert delta("recplane_serving_request_duration_seconds_count", endpoint="rank", model_version=version) == 49
    requests_in_batches = delta("recplane_serving_batch_requests_sum", model_version=version)
    forward_passes = delta("recplane_serving_batch_requests_count", model_version=version)
    assert requests_in_batches == 48
    assert forward_passes < 48  # some callers shared a forward pass
    assert delta("recplane_serving_batch_rows_sum", model_version=version) == 48 * 50
    assert metric_total(after, "recplane_serving_model_info", model_version=version, variant="fp32") == 1


# ---- refusals: 4xx naming the field ------------------------------------------------------------------
def _post(server: str, path: str, content: bytes | str, **headers: str) -> httpx.Response:
    return httpx.post(f"{server}{path}", content=content, headers={**JSON_HEADERS, **headers}, timeout=30)


def _fields(response: httpx.Response) -> list[str]:
    return [d["field"] for d in response.json()["detail"]]


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({"user": {}}, ["candidates"]),
        ({"candidates": []}, ["candidates"]),
        ({"candidates": {"item_id": "a"}}, ["candidates"]),
        ({"candidates": [{"item_id": "a"}, "b"]}, ["candidates[1]"]),
        ({"candidates": [{"item_id": "a"}], "usr": {}}, ["usr"]),
        (
            {"candidates": [{"item_id": "a"}, {}, {"item_id": "c"}, {"topic": "t"}]},
            ["candidates[1].item_id", "candidates[3].item_id"],
        ),
        ({"candidates": [{"item_id": "a", "hour": "noon"}]}, ["candidates[0].hour"]),
        ({"user": {"recent_topics": "t1"}, "candidates": [{"item_id": "a"}]}, ["user.recent_topics"]),
        ({"context": {"colour": "red"}, "candidates": [{"item_id": "a"}]}, ["context.colour"]),
        ({"candidates": [{"item_id": str(i)} for i in range(301)]}, ["candidates"]),
        ({"candidates": [{"item_id": "a"}], "requestId": 7}, ["requestId"]),
    ],
)
def test_an_invalid_rank_body_is_a_400_naming_each_field(ranker: str, body: dict[str, Any], fields: list[str]) -> None:
    response = _post(ranker, "/rank", json.dumps(body))
    assert response.status_code == 400, response.text
    assert _fields(response) == fields
    assert all(f in response.json()["error"] for f in fields)


def test_non_finite_and_malformed_json_are_refused(ranker: str) -> None:
    nan = _post(ranker, "/rank", '{"candidates": [{"item_id": "a", "item_age_hours": NaN}]}')
    assert nan.status_code == 400 and _fields(nan) == ["candidates[0].item_age_hours"]
    broken = _post(ranker, "/rank", '{"candidates": [')
    assert broken.status_code == 400 and _fields(broken) == ["body"]


def test_a_body_over_the_size_limit_is_a_413(ranker: str) -> None:
    big = json.dumps({"candidates": [{"item_id": "x" * 1000} for _ in range(280)]})
    response = _post(ranker, "/rank", big)
    assert response.status_code == 413
    assert "RECPLANE_SERVE_MAX_BODY_BYTES" in response.json()["error"]


@pytest.mark.parametrize(
    "content_type", ["multipart/form-data; boundary=x", "application/x-www-form-urlencoded", "text/csv"]
)
def test_a_body_that_is_not_json_is_a_415(ranker: str, content_type: str) -> None:
    response = _post(ranker, "/rank", "a=b&c", **{"content-type": content_type})
    assert response.status_code == 415
    assert _fields(response) == ["Content-Type"]
