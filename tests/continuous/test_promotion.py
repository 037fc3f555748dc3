"""The promotion rule and its record in the store: what may serve, and the reason a user reads."""

from __future__ import annotations

from pathlib import Path

import pytest

from recplane.api.trainjob import PromotionRule
from recplane.store import LocalStore
from recplane.trainer.promotion import Verdict, decide, history, promoted_version, record

RULE = PromotionRule(min_auc=0.6, max_auc_drop=0.02)


def test_the_first_version_passing_min_auc_is_promoted() -> None:
    d = decide(0.7, None, RULE)
    assert d.promoted and "first promoted" in d.reason


def test_a_version_below_min_auc_is_rejected_and_the_reason_names_the_field() -> None:
    d = decide(0.55, None, RULE)
    assert not d.promoted
    assert "promoteIf.minAuc 0.6" in d.reason and "0.5500" in d.reason


def test_a_version_that_drops_more_than_allowed_below_the_serving_one_is_rejected() -> None:
    d = decide(0.67, 0.70, RULE)
    assert not d.promoted
    assert "promoteIf.maxAucDrop 0.02" in d.reason and "0.7000" in d.reason


@pytest.mark.parametrize("auc", [0.685, 0.70, 0.75])
def test_a_version_within_the_allowed_drop_or_better_is_promoted(auc: float) -> None:
    assert decide(auc, 0.70, RULE).promoted


def test_an_empty_rule_promotes_any_measured_version_but_never_one_without_auc() -> None:
    assert decide(0.51, 0.9, PromotionRule()).promoted
    missing = decide(None, 0.7, PromotionRule())
    assert not missing.promoted and "no AUC" in missing.reason


def _verdict(version: str, promoted: bool) -> Verdict:
    return Verdict(version, promoted, "why", 0.7, None, None, "ss1", "2026-01-01T00:00:00+00:00")


def test_the_pointer_moves_only_on_promotion_and_the_history_keeps_every_verdict(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    assert promoted_version(store, "ns", "tj") is None
    record(store, "ns", "tj", _verdict("v1", True))
    record(store, "ns", "tj", _verdict("v2", False))
    assert promoted_version(store, "ns", "tj") == "v1"
    assert [(v.version, v.promoted) for v in history(store, "ns", "tj")] == [("v1", True), ("v2", False)]
    record(store, "ns", "tj", _verdict("v2", False))  # a repeated round records once
    assert len(history(store, "ns", "tj")) == 2
    # The pointer file sits beside the versions without being taken for one.
    assert store.versions("ns", "trainjob", "tj") == []
