"""Request and response bodies of the serving endpoints (camelCase on the wire).

These models check the shape of a body: its keys and that `user`, `context`
and every candidate are JSON objects. The values inside those objects are raw
feature values as logged; what each may be (is `hour` an input column of the
served model, is it numeric, does `device` take one id) depends on the model's
feature spec and is checked in `recplane.serving.validation`. Both checks
answer 400 with the same body, naming the field.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr
from pydantic.alias_generators import to_camel

# Raw feature values by column name: one id or number, a list of ids (multi-hot), or null (missing).
FeatureValues = dict[str, Any]
ItemId = StrictStr | StrictInt
ITEM_ID = "item_id"


class WireModel(BaseModel):
    """camelCase on the wire, snake_case in Python; unknown top-level keys are refused."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        serialize_by_alias=True,
        extra="forbid",
    )


class RankRequest(WireModel):
    """`POST /rank`: score `candidates` for one user in one context."""

    user: FeatureValues = Field(default_factory=dict, description="Raw user-side feature values.")
    context: FeatureValues = Field(default_factory=dict, description="Raw context feature values (hour, device, ...).")
    candidates: list[FeatureValues] = Field(
        min_length=1, description="Items to score: each an object with `item_id` and raw item-side feature values."
    )
    request_id: str | None = Field(default=None, max_length=256, description="Echoed in the response.")


class ScoredItem(WireModel):
    item_id: ItemId
    index: int = Field(description="Position of the candidate in the request.")
    score: float = Field(description="Model output: P(label) for ranking models, a similarity for recall models.")


class RankResponse(WireModel):
    model_version: str
    request_id: str | None = None
    items: list[ScoredItem] = Field(description="The candidates, best first.")


class RecallRequest(WireModel):
    """`POST /recall`: the top `k` items of the two-tower index for one user in one context."""

    user: FeatureValues = Field(default_factory=dict)
    context: FeatureValues = Field(default_factory=dict)
    k: int | None = Field(default=None, ge=1, description="How many items; default: the model's topK.")
    exclude_item_ids: list[ItemId] = Field(
        default_factory=list, max_length=10_000, description="Items never returned (e.g. already seen)."
    )
    request_id: str | None = Field(default=None, max_length=256)


class RecalledItem(WireModel):
    item_id: ItemId
    score: float


class RecallResponse(WireModel):
    model_version: str
    request_id: str | None = None
    items: list[RecalledItem]


class FeatureSummary(WireModel):
    name: str
    group: str
    type: str
    columns: list[str]
    transform: str
    num_embeddings: int | None = None
    embedding_dim: int | None = None


class ModelInfo(WireModel):
    """`GET /model`: what is being served."""

    model_version: str
    model_uri: str
    model_type: str
    task: str = Field(description="ranking or recall")
    variant: str
    endpoints: list[str]
    metrics: dict[str, Any] = Field(default_factory=dict)
    features: list[FeatureSummary] = Field(default_factory=list)
    input_columns: list[str] = Field(default_factory=list, description="Keys /rank and /recall accept.")
    item_index_size: int | None = Field(default=None, description="Items /recall chooses from (recall models).")
    limits: dict[str, Any] = Field(default_factory=dict)
