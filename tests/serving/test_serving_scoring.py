"""The in-process scorer: the /rank body it writes, and what the service's heap freezing relies on."""

from __future__ import annotations

import gc
import json
import math
import weakref

import numpy as np
import pytest

from recplane.serving.config import ServingConfig
from recplane.serving.schemas import RankRequest, RankResponse
from recplane.serving.scoring import Ranking, Scorer
from recplane.store import Manifest, Store


def _ranking(item_ids: list[str | int], scores: list[float], request_id: str | None = "r-1") -> Ranking:
    return Ranking(
        model_version="v1", request_id=request_id, item_ids=item_ids, indices=list(range(len(scores))), scores=scores
    )


@pytest.mark.parametrize(
    ("item_ids", "scores", "request_id"),
    [
        (["i1", "i2", "i3"], [0.75, 0.1234567, 1e-8], "r-1"),
        ([17, 2**70, -3], [1.0, 0.0, 5e-324], None),
        (["é", 'quote"d', "back\\slash"], [float("nan"), float("inf"), -float("inf")], "ünïcode"),
        ([], [], "empty"),
    ],
)
def test_the_response_body_is_byte_for_byte_what_the_response_model_serialises(
    item_ids: list[str | int], scores: list[float], request_id: str | None
) -> None:
    ranking = _ranking(item_ids, scores, request_id)
    assert ranking.json() == ranking.response().model_dump_json().encode()
    if all(math.isfinite(s) for s in scores):  # (a non-finite score is sent as null, see below)
        assert RankResponse.model_validate_json(ranking.json()) == ranking.response()


def test_a_non_finite_score_is_sent_as_null_as_the_models_send_it() -> None:
    body = json.loads(_ranking(["a"], [math.nan]).json())
    assert body == {"modelVersion": "v1", "requestId": "r-1", "items": [{"itemId": "a", "index": 0, "score": None}]}


def test_candidates_come_back_best_first_with_ties_in_request_order(
    serving_store: Store, ranker_manifest: Manifest
) -> None:
    scorer = Scorer.load(str(serving_store.fetch_version(ranker_manifest)), ServingConfig())
    request = RankRequest.model_validate({"candidates": [{"item_id": i} for i in ("a", "b", "c", "d")]})
    ranking = scorer.ranking(request, np.array([0.2, 0.9, 0.2, 0.5], dtype=np.float32))
    assert ranking.item_ids == ["b", "d", "a", "c"] and ranking.indices == [1, 3, 0, 2]
    assert ranking.scores == [float(np.float32(s)) for s in (0.9, 0.5, 0.2, 0.2)]
    assert scorer.ranked(request, np.array([0.2, 0.9, 0.2, 0.5], dtype=np.float32)) == ranking.response()


def test_a_swapped_out_version_is_freed_without_the_cyclic_collector(
    serving_store: Store, ranker_manifest: Manifest
) -> None:
    """The service freezes its heap after each load (no full collection walks the model again); that is
    only safe because a Scorer holds no reference cycle, so dropping the last reference frees it."""
    gc.collect()
    gc.disable()
    try:
        scorer = Scorer.load(str(serving_store.fetch_version(ranker_manifest)), ServingConfig())
        model, processor = weakref.ref(scorer.loaded.model), weakref.ref(scorer.loaded.processor)
        table = weakref.ref(next(iter(scorer.loaded.model.parameters())))
        del scorer
        assert model() is None and processor() is None and table() is None
    finally:
        gc.enable()
