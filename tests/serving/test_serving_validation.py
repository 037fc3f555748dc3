"""Request validation against the served model's feature spec: what a caller sends, what comes back."""

from __future__ import annotations

import math
import random
from typing import Any

import numpy as np
import pytest

from recplane.data.features import MISSING_ID, OOV_ID, FeatureProcessor
from recplane.serving.http_guard import field_path
from recplane.serving.schemas import RankRequest, RecallRequest
from recplane.serving.validation import RequestInvalid, RequestValidator, rules_from_features

USER = {"user_id": "u1", "recent_topics": ["t1", "t2"], "user_activity": 0.4}
CONTEXT = {"hour": 13, "device": "ios", "network": "wifi", "referrer": "feed"}


def _validator(processor: FeatureProcessor, **kw: Any) -> RequestValidator:
    return RequestValidator(rules_from_features(processor.features, processor.column_kinds), model_version="v1", **kw)


def _rank(candidates: list[dict[str, Any]], user: dict[str, Any] | None = None, **kw: Any) -> RankRequest:
    return RankRequest.model_validate(
        {"user": USER if user is None else user, "context": CONTEXT, "candidates": candidates, **kw}
    )


def _errors(validator: RequestValidator, request: RankRequest) -> dict[str, str]:
    with pytest.raises(RequestInvalid) as info:
        validator.rank_rows(request)
    return {field_path(e["loc"]): e["msg"] for e in info.value.errors}


def test_each_candidate_row_joins_user_context_and_candidate_values(processor: FeatureProcessor) -> None:
    rows = _validator(processor).rank_rows(_rank([{"item_id": "i1", "topic": "t3"}, {"item_id": "i2", "position": 4}]))
    assert rows == [
        {**USER, **CONTEXT, "item_id": "i1", "topic": "t3"},
        {**USER, **CONTEXT, "item_id": "i2", "position": 4},
    ]


def test_an_integer_id_for_a_string_column_gets_the_same_embedding_row_as_its_string(
    processor: FeatureProcessor,
) -> None:
    rows = _validator(processor).rank_rows(_rank([{"item_id": 17}, {"item_id": "17"}]))
    batch = processor.transform_rows(rows)
    ids, _ = batch.ids("item_id")
    assert rows[0]["item_id"] == "17"
    assert ids[0] == ids[1]


def test_unseen_ids_fall_into_the_oov_bucket_and_nulls_into_the_missing_id(processor: FeatureProcessor) -> None:
    rows = _validator(processor).rank_rows(
        _rank([{"item_id": "never-logged-item"}, {"item_id": "i1", "topic": None}], user={"user_id": None})
    )
    batch = processor.transform_rows(rows)
    assert batch.ids("item_id")[0][0] == OOV_ID
    assert batch.ids("user_id")[0].tolist() == [MISSING_ID, MISSING_ID]
    assert batch.ids("topic")[0][1] == MISSING_ID


def test_an_unknown_key_is_refused_naming_it_and_the_known_columns(processor: FeatureProcessor) -> None:
    errors = _errors(_validator(processor), _rank([{"item_id": "i1", "colour": "red"}]))
    assert list(errors) == ["candidates[0].colour"]
    assert "'colour' is not an input column of model version v1" in errors["candidates[0].colour"]
    assert "item_age_hours" in errors["candidates[0].colour"]


def test_unknown_keys_are_dropped_when_the_policy_is_ignore(processor: FeatureProcessor) -> None:
    rows = _validator(processor, unknown="ignore").rank_rows(_rank([{"item_id": "i1", "colour": "red", "ts": 5}]))
    assert "colour" not in rows[0] and "ts" not in rows[0]
    processor.transform_rows(rows)


@pytest.mark.parametrize(
    ("candidate", "field", "message"),
    [
        ({}, "candidates[0].item_id", "Field required"),
        ({"item_id": ["i1"]}, "candidates[0].item_id", "must be a string or an integer, got a list"),
        ({"item_id": "i1", "topic": ["t1"]}, "candidates[0].topic", "must be a string for feature topic"),
        ({"item_id": "i1", "item_age_hours": "3"}, "candidates[0].item_age_hours", "must be a finite number"),
        ({"item_id": "i1", "item_age_hours": math.inf}, "candidates[0].item_age_hours", "must be a finite number"),
        ({"item_id": "i1", "item_age_hours": True}, "candidates[0].item_age_hours", "got a boolean"),
        ({"item_id": "i1", "position": 2.5}, "candidates[0].position", "must be an integer"),
        ({"item_id": "i1", "author_followers": 2**70}, "candidates[0].author_followers", "64-bit integer range"),
        ({"item_id": "i1", "recent_topics": "t1"}, "candidates[0].recent_topics", "must be a list of ids"),
        ({"item_id": "i1", "device": "android"}, "candidates[0].device", "also given in user or context"),
    ],
)
def test_a_value_the_model_cannot_take_is_refused_naming_the_field(
    processor: FeatureProcessor, candidate: dict[str, Any], field: str, message: str
) -> None:
    errors = _errors(_validator(processor), _rank([{"item_id": "ok"}, candidate][1:]))
    assert field in errors, errors
    assert message in errors[field]


def test_an_element_of_a_multi_hot_list_is_named_by_its_position(processor: FeatureProcessor) -> None:
    errors = _errors(_validator(processor), _rank([{"item_id": "i1"}], user={"recent_topics": ["t1", {"a": 1}]}))
    assert errors == {"user.recent_topics": "element [1] must be a string for feature recent_topics, got an object"}


def test_an_integral_float_is_accepted_for_an_integer_column(processor: FeatureProcessor) -> None:
    rows = _validator(processor).rank_rows(_rank([{"item_id": "i1", "position": 3.0}]))
    assert rows[0]["position"] == 3 and isinstance(rows[0]["position"], int)


def test_more_candidates_than_the_limit_are_refused_with_the_limit_named(processor: FeatureProcessor) -> None:
    errors = _errors(_validator(processor, max_candidates=3), _rank([{"item_id": str(i)} for i in range(4)]))
    assert list(errors) == ["candidates"]
    assert "limit of 3" in errors["candidates"] and "RECPLANE_SERVE_MAX_CANDIDATES" in errors["candidates"]


def test_a_recall_k_over_the_limit_is_refused(processor: FeatureProcessor) -> None:
    request = RecallRequest.model_validate({"user": USER, "context": CONTEXT, "k": 11})
    with pytest.raises(RequestInvalid) as info:
        _validator(processor, max_recall_k=10).recall_row(request)
    assert [field_path(e["loc"]) for e in info.value.errors] == ["k"]


def test_a_body_with_thousands_of_bad_values_reports_a_bounded_number_of_errors(processor: FeatureProcessor) -> None:
    errors = _errors(_validator(processor), _rank([{"item_id": "i", "position": "x"} for _ in range(500)]))
    assert len(errors) == 50


_ODD_VALUES: list[Any] = [
    None, "", "x", "ios", "7", 0, 1, -3, 2**40, 2**63, -(2**63) - 1, 2**80, 0.5, 3.0, -1e300, math.nan, math.inf,
    True, False, [], ["a"], [1, 2], [None], [["a"]], [1.5], {}, {"a": 1}, "é" * 300,
]  # fmt: skip


def test_whatever_passes_validation_transforms_without_error(processor: FeatureProcessor) -> None:
    """The promise behind "no input yields a 5xx": a validated row never makes the transforms fail."""
    rng = random.Random(0)
    validator = _validator(processor)
    columns = [c for c in processor.input_columns if c != "item_id"]
    accepted = 0
    for _ in range(400):
        user_column, item_column = rng.sample(columns, 2)
        user = {user_column: rng.choice(_ODD_VALUES)}
        candidates = [{"item_id": rng.choice(["i1", 5, 2**70]), item_column: rng.choice(_ODD_VALUES)}]
        try:
            rows = validator.rank_rows(RankRequest.model_validate({"user": user, "candidates": candidates}))
        except RequestInvalid:
            continue
        accepted += 1
        batch = processor.transform_rows(rows)
        assert np.isfinite(batch.dense).all()
    assert accepted > 40  # the sample exercised the accepting path, not only refusals


def _present(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if v is not None}  # a null and an absent key are both missing


def test_the_column_wise_checks_accept_refuse_and_convert_as_the_value_by_value_ones(
    processor: FeatureProcessor,
) -> None:
    """`rank_block` checks the common request a column at a time; whatever it sends in must be what
    `rank_rows` would, and what it refuses must carry the same errors."""
    rng = random.Random(1)
    validator = _validator(processor)
    columns = [c for c in processor.input_columns if c not in USER and c not in CONTEXT]
    outcomes = {"accepted": 0, "refused": 0}
    for _ in range(400):
        picked = rng.sample(columns, 2)
        candidates = []
        for _ in range(rng.randint(1, 4)):
            candidate: dict[str, Any] = {"item_id": rng.choice(["i1", "i2", 5, 2**70, None, True])}
            for column in picked:
                if rng.random() < 0.8:  # the same column, some candidates without it
                    odd = rng.random() < 0.3
                    candidate[column] = rng.choice(_ODD_VALUES) if odd else rng.choice(["t1", 3, 2.5, None])
            candidates.append(candidate)
        request = _rank(candidates)
        try:
            rows = validator.rank_rows(request)
        except RequestInvalid as refused:
            with pytest.raises(RequestInvalid) as again:
                validator.rank_block(request)
            assert again.value.errors == refused.errors
            outcomes["refused"] += 1
            continue
        block = validator.rank_block(request)
        assert block.size == len(rows)
        expanded = [{**block.shared, **{c: v[i] for c, v in block.columns.items()}} for i in range(block.size)]
        expected = [_present({k: v for k, v in r.items() if k in validator.rules}) for r in rows]
        assert [_present(r) for r in expanded] == expected
        outcomes["accepted"] += 1
    assert min(outcomes.values()) > 40, outcomes


@pytest.mark.parametrize(
    ("column", "value", "accepted"),
    [
        ("author_followers", 2**63 - 1, True),  # an integer column takes the whole int64 range ...
        ("author_followers", 2**63, False),  # ... and no more
        ("author_followers", -(2**63), True),
        ("author_followers", True, False),  # a boolean is no number
        ("item_age_hours", 7, True),  # an integer for a float column stays an integer
        ("item_age_hours", 3.4028234663852886e38, True),  # the float32 range, up to its edge ...
        ("item_age_hours", -3.5e38, False),  # ... and not beyond
        ("item_age_hours", math.nan, False),
        ("hour", 13, True),
        ("hour", 2**63, False),
    ],
)
def test_a_number_at_the_edge_of_its_column_is_accepted_or_refused_as_the_column_says(
    processor: FeatureProcessor, column: str, value: Any, accepted: bool
) -> None:
    validator = _validator(processor)
    request = _rank([{"item_id": "i1", column: value}], user={}, context={})
    if accepted:
        row = validator.rank_rows(request)[0]
        assert row[column] == value and type(row[column]) is type(value)
    else:
        assert list(_errors(validator, request)) == [f"candidates[0].{column}"]
