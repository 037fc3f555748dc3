"""Thousands of malformed bodies against the real server: every one is a 4xx, and the server stays up."""

from __future__ import annotations

import copy
import json
import random
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

VALID = {
    "user": {"user_id": "u1", "recent_topics": ["t1", "t2"], "user_activity": 0.5},
    "context": {"hour": 13, "device": "ios", "network": "wifi", "referrer": "feed"},
    "candidates": [
        {"item_id": "i1", "topic": "t3", "author_id": "a1", "position": 1, "item_age_hours": 2.5},
        {"item_id": "i2", "topic": "t1", "author_id": "a2", "position": 2, "author_followers": 120},
        {"item_id": 3, "topic": None},
    ],
    "requestId": "fuzz",
}
# Values that are wrong for every column they are put in below (a string for numbers, a list for
# single ids, ...), and values that are wrong for any column at all.
WRONG_FOR_ANY: list[Any] = [{"a": 1}, [[1]], [{"x": 1}], float("nan"), float("inf"), [None], [1.5, "x"]]
WRONG_FOR_NUMBER: list[Any] = ["3", "", True, [], [1], 1e39, *WRONG_FOR_ANY]
WRONG_FOR_ID: list[Any] = [[], ["a"], 1.5, 2**70 + 0.5, *WRONG_FOR_ANY]
NUMBER_COLUMNS = ("user_activity", "hour", "position", "item_age_hours", "author_followers")
ID_COLUMNS = ("user_id", "device", "network", "referrer", "topic", "author_id")
Mutation = Callable[[random.Random, dict[str, Any]], Any]


def _candidate(rng: random.Random, body: dict[str, Any]) -> dict[str, Any]:
    return rng.choice(body["candidates"])  # type: ignore[no-any-return]


def wrong_number(rng: random.Random, body: dict[str, Any]) -> Any:
    column = rng.choice(NUMBER_COLUMNS)
    section = (
        body["user"] if column == "user_activity" else body["context"] if column == "hour" else _candidate(rng, body)
    )
    section[column] = rng.choice(WRONG_FOR_NUMBER)
    return body


def wrong_id(rng: random.Random, body: dict[str, Any]) -> Any:
    column = rng.choice(ID_COLUMNS)
    section = (
        body["user"]
        if column == "user_id"
        else body["context"]
        if column in ("device", "network", "referrer")
        else _candidate(rng, body)
    )
    section[column] = rng.choice(WRONG_FOR_ID)
    return body


def wrong_multi_hot(rng: random.Random, body: dict[str, Any]) -> Any:
    body["user"]["recent_topics"] = rng.choice(["t1", 3, [["t1"]], ["t1", {"a": 1}], [None], [float("nan")]])
    return body


def bad_item_id(rng: random.Random, body: dict[str, Any]) -> Any:
    candidate = _candidate(rng, body)
    if rng.random() < 0.5:
        candidate.pop("item_id")
    else:
        candidate["item_id"] = rng.choice([None, True, 1.5, ["i1"], {"id": 1}])
    return body


def unknown_key(rng: random.Random, body: dict[str, Any]) -> Any:
    section = rng.choice([body["user"], body["context"], _candidate(rng, body)])
    section[rng.choice(["colour", "User_Id", "", "ts", "label", "x" * 300, "🙂"])] = rng.choice([1, "a", None])
    return body


def duplicate_column(rng: random.Random, body: dict[str, Any]) -> Any:
    _candidate(rng, body)["device"] = "web"
    return body


def wrong_shape(rng: random.Random, body: dict[str, Any]) -> Any:
    key = rng.choice(["user", "context", "candidates", "requestId"])
    wrong: dict[str, list[Any]] = {
        "user": [[], "x", 1, True, [{"user_id": "u1"}]],
        "context": [[], "x", 1, True],
        "candidates": [None, [], {}, "x", [1], [None], [[]], 7, {"item_id": "a"}],
        "requestId": [1, [], {"a": []}, True, 1.5, "r" * 257],
    }
    body[key] = rng.choice(wrong[key])
    return body


def extra_top_level(rng: random.Random, body: dict[str, Any]) -> Any:
    body[rng.choice(["candidate", "usr", "model", "k"])] = {}
    return body


def not_an_object(rng: random.Random, body: dict[str, Any]) -> Any:
    return rng.choice([[], [body], "rank", 1, None, True])


def too_many_candidates(rng: random.Random, body: dict[str, Any]) -> Any:
    body["candidates"] = [{"item_id": str(i)} for i in range(rng.randint(301, 400))]
    return body


MUTATIONS: list[Mutation] = [
    wrong_number,
    wrong_id,
    wrong_multi_hot,
    bad_item_id,
    unknown_key,
    duplicate_column,
    wrong_shape,
    extra_top_level,
    not_an_object,
    too_many_candidates,
]


def _raw_bodies(rng: random.Random) -> list[tuple[bytes, dict[str, str]]]:
    """Bodies that are not valid JSON, or not JSON at all."""
    valid = json.dumps(VALID).encode()
    out: list[tuple[bytes, dict[str, str]]] = []
    for _ in range(300):
        choice = rng.randrange(6)
        if choice == 0:  # truncated
            out.append((valid[: rng.randrange(len(valid))], {"content-type": "application/json"}))
        elif choice == 1:  # random bytes
            out.append((rng.randbytes(rng.randrange(1, 400)), {"content-type": "application/json"}))
        elif choice == 2:  # one structural character replaced by another: never valid JSON
            b = bytearray(valid)
            at = rng.choice([i for i, c in enumerate(b) if c in b'{}[]:,"'])
            b[at] = rng.choice([c for c in b'{}[]:,"\x00' if c != b[at]])
            out.append((bytes(b), {"content-type": "application/json"}))
        elif choice == 3:  # deeply nested
            depth = rng.randrange(200, 3000)
            out.append((b'{"user": ' + b"[" * depth + b"]" * depth + b"}", {"content-type": "application/json"}))
        elif choice == 4:  # not JSON by content type
            ctype = rng.choice(
                [
                    "multipart/form-data; boundary=zz",
                    "application/x-www-form-urlencoded",
                    "text/plain",
                    "application/xml",
                ]
            )
            out.append((valid, {"content-type": ctype}))
        else:  # empty
            out.append((b"", {"content-type": "application/json"}))
    return out


def _json(body: Any) -> bytes:
    # NaN and Infinity become JSON literals, as a careless client library would send them.
    return json.dumps(body, allow_nan=True).encode()


def test_thousands_of_malformed_bodies_get_4xx_and_the_server_stays_up(servers: dict[str, str]) -> None:
    rng = random.Random(20241128)
    json_headers = {"content-type": "application/json"}
    cases: list[tuple[str, str, bytes, dict[str, str]]] = []
    for _ in range(1700):
        mutation = rng.choice(MUTATIONS)
        cases.append((mutation.__name__, "/rank", _json(mutation(rng, copy.deepcopy(VALID))), json_headers))
    for content, headers in _raw_bodies(rng):
        cases.append(("raw", rng.choice(["/rank", "/rank", "/recall"]), content, headers))
    oversized = b'{"candidates": [' + b'{"item_id": "x"},' * 20_000 + b"{}]}"
    cases.append(("oversized", "/rank", oversized, json_headers))
    assert len(cases) >= 2000

    with httpx.Client(base_url=servers["ranker"], timeout=60) as client:

        def send(case: tuple[str, str, bytes, dict[str, str]]) -> tuple[str, int, str]:
            name, path, content, headers = case
            response = client.post(path, content=content, headers=headers)
            return name, response.status_code, response.text

        with ThreadPoolExecutor(8) as pool:  # concurrent: malformed requests share batches with each other
            results = list(pool.map(send, cases))

        not_4xx = [(name, code, text[:200]) for name, code, text in results if not 400 <= code < 500]
        assert not not_4xx, not_4xx[:10]
        assert client.get("/livez").status_code == 200
        assert client.get("/readyz").status_code == 200
        ok = client.post("/rank", json=VALID)
        assert ok.status_code == 200, ok.text
        assert sorted(i["index"] for i in ok.json()["items"]) == [0, 1, 2]
