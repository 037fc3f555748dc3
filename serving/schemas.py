"""Request and response bodies of the serving endpoints (camelCase on the wire).

These models check the shape of a body: its keys and that `user`, `context`
and every candidate are JSON objects. The values inside those objects are raw
feature values as logged; what each may be (is `hour` an input column of the
served model, is it numeric, does `device` take one id) depends on the model's
feature spec and is checked in `recplane.serving.validation`. Both checks
answer 400 with the same body, naming the field.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, PlainValidator, StrictBool, StrictInt, StrictStr, WithJsonSchema
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

# Raw feature values by column name: one id or number, a list of ids (multi-hot), or null (missing).
FeatureValues = dict[str, Any]
ItemId = StrictStr | StrictInt
ITEM_ID = "item_id"
USER_ID = "user_id"  # the user's id in a request's `user` (the SampleSet's default user column)
# Model versions are content hashes or directory names; the pattern keeps metric labels and logs clean.
MODEL_VERSION_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
MAX_DWELL_SECONDS = 86_400.0


def _one_id(value: Any) -> str | int:
    """An id in a request body: a string or an integer (one error naming the field, not one per union member)."""
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise PydanticCustomError("id_type", "must be a string or an integer")
    return value


IdInput = Annotated[
    str | int, PlainValidator(_one_id), WithJsonSchema({"anyOf": [{"type": "string"}, {"type": "integer"}]})
]


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
    request_id: str | None = Field(
        default=None,
        max_length=256,
        description="Echoed in the response; generated when absent, so that /feedback can name the impression.",
    )


class ScoredItem(WireModel):
    item_id: ItemId
    index: int = Field(description="Position of the candidate in the request.")
    score: float = Field(description="Model output: P(label) for ranking models, a similarity for recall models.")


class RankResponse(WireModel):
    model_version: str
    request_id: str | None = None
    items: list[ScoredItem] = Field(description="The candidates, best first.")


class FeedbackRequest(WireModel):
    """`POST /feedback`: what the user did with one item a /rank response returned."""

    request_id: str = Field(min_length=1, max_length=256, description="The `requestId` of the /rank response.")
    item_id: IdInput = Field(description="The item, as in the /rank response.")
    click: StrictBool = Field(description="Whether the user clicked the item.")
    dwell_seconds: float = Field(
        strict=True,
        ge=0.0,
        le=MAX_DWELL_SECONDS,
        allow_inf_nan=False,
        description="Seconds the user spent on the item (0 without a click).",
    )
    user_id: IdInput | None = Field(
        default=None, description="The user; default: the `user_id` of the /rank request, when this replica served it."
    )
    model_version: str | None = Field(
        default=None,
        pattern=MODEL_VERSION_PATTERN,
        description="The `modelVersion` of the /rank response; default: the version this replica served it with.",
    )
    position: int | None = Field(
        default=None,
        strict=True,
        ge=0,
        le=1_000_000,
        description="Where the client showed the item (0 = first); default: its position in the /rank response, "
        "when this replica served it.",
    )


class FeedbackResponse(WireModel):
    request_id: str
    item_id: ItemId
    model_version: str = Field(description="The version the feedback is attributed to (`unknown` when not known).")
    logged: bool = Field(description="Buffered for the event log (false when RECPLANE_EVENTS_URI is unset).")


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
