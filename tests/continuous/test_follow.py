"""Which model references a server follows, and what a follower swaps in (no server needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from recplane.serving.follow import FollowTarget, VersionFollower, follow_target
from recplane.store import LocalStore
from recplane.trainer.promotion import Verdict, record


def test_a_promoted_reference_is_followed_in_the_store_it_names() -> None:
    assert follow_target("prod/trainjob/ranker/promoted") == FollowTarget(None, "prod", "ranker", "promoted")
    assert follow_target("s3://models/prod/trainjob/ranker/promoted/") == FollowTarget(
        "s3://models", "prod", "ranker", "promoted"
    )
    assert follow_target("file:///srv/store/prod/trainjob/ranker/promoted") == FollowTarget(
        "/srv/store", "prod", "ranker", "promoted"
    )


def test_pinned_versions_and_plain_directories_are_not_followed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RECPLANE_MODEL_FOLLOW", raising=False)
    assert follow_target("prod/trainjob/ranker/1a2b3c4d") is None
    assert follow_target("/models/ranker-v3") is None
    assert follow_target("prod/trainjob/ranker/latest") is None  # latest is followed only on request
    monkeypatch.setenv("RECPLANE_MODEL_FOLLOW", "latest")
    assert follow_target("prod/trainjob/ranker/latest") == FollowTarget(None, "prod", "ranker", "latest")
    monkeypatch.setenv("RECPLANE_MODEL_POLL_SECONDS", "0")
    assert follow_target("prod/trainjob/ranker/promoted") is None


def test_a_follower_swaps_only_when_the_promotion_pointer_moves(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    serving = ["v1"]
    swapped: list[str] = []

    def swap(uri: str) -> None:
        swapped.append(uri)
        serving[0] = uri.rsplit("/", 1)[-1]

    follower = VersionFollower(FollowTarget(str(tmp_path), "ns", "tj", "promoted"), lambda: serving[0], swap, 1.0)
    assert follower.check_once() is None  # nothing promoted yet: keep serving
    record(store, "ns", "tj", Verdict("v1", True, "ok", 0.7, None, None, "s1", "t1"))
    assert follower.check_once() is None
    record(store, "ns", "tj", Verdict("v2", False, "AUC below minAuc", 0.5, "v1", 0.7, "s2", "t2"))
    assert follower.check_once() is None  # a rejected version is never swapped in
    record(store, "ns", "tj", Verdict("v3", True, "ok", 0.72, "v1", 0.7, "s3", "t3"))
    assert follower.check_once() == "v3"
    assert swapped == [f"{tmp_path}/ns/trainjob/tj/v3"]
