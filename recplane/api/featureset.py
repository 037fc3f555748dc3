"""FeatureSet: the feature catalog over a SampleSet."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from .common import ApiModel, BaseStatus, DeletionPolicy, LocalRef, Resources, cel, validations

FeatureGroup = Literal["id", "reader", "author", "context", "environment", "material"]
FeatureType = Literal["sparse", "multi_hot", "dense"]
TransformType = Literal["hash", "vocabulary", "bucketize", "quantile", "log1p", "standardize", "cross", "identity"]

SPARSE_TRANSFORMS = ("hash", "vocabulary", "bucketize", "quantile", "cross")
DENSE_TRANSFORMS = ("log1p", "standardize", "identity")


class Transform(ApiModel):
    """How a raw column becomes model input."""

    model_config = validations(
        cel(
            "self.type != 'hash' && self.type != 'cross' || has(self.buckets)",
            "transform.buckets is required for hash and cross transforms",
            ".buckets",
        ),
        cel(
            "self.type != 'bucketize' || (has(self.boundaries) && size(self.boundaries) > 0)",
            "transform.boundaries must list at least one boundary for bucketize",
            ".boundaries",
        ),
        cel(
            "!has(self.boundaries) || self.boundaries.isSorted()",
            "transform.boundaries must be sorted in ascending order",
            ".boundaries",
        ),
    )

    type: TransformType = Field(
        description="hash | vocabulary | bucketize | quantile | log1p | standardize | cross | identity"
    )
    buckets: int | None = Field(default=None, ge=2, le=2_000_000_000, description="Hash buckets (hash, cross).")
    min_count: int = Field(default=1, ge=1, description="Vocabulary: ids seen fewer times map to OOV.")
    max_size: int = Field(
        default=1_000_000,
        ge=1,
        description="Vocabulary: most frequent ids kept; the rest map to OOV. Over a SampleSet that follows its "
        "source, the vocabulary grows across FeatureSet versions up to maxSize (earlier ids keep their index) "
        "and its embedding table has maxSize + 2 rows from the first version on.",
    )
    boundaries: list[float] | None = Field(default=None, max_length=1_000, description="Bucketize: sorted boundaries.")
    num_quantiles: int = Field(default=16, ge=2, le=1024, description="Quantile: number of equal-frequency buckets.")


class Feature(ApiModel):
    """One feature: its group, type, source columns, transform and embedding."""

    model_config = validations(
        cel(
            "self.type == 'dense' ? self.transform.type in ['log1p', 'standardize', 'identity'] "
            ": self.transform.type in ['hash', 'vocabulary', 'bucketize', 'quantile', 'cross']",
            "transform.type does not fit the feature type: dense features take log1p, standardize or identity; "
            "sparse and multi_hot features take hash, vocabulary, bucketize, quantile or cross",
            ".transform.type",
        ),
        cel(
            "self.transform.type != 'cross' || size(self.columns) >= 2",
            "a cross transform needs at least two columns",
            ".columns",
        ),
        cel(
            "self.transform.type == 'cross' || size(self.columns) == 1",
            "only a cross transform takes several columns; list exactly one column",
            ".columns",
        ),
        cel(
            "!has(self.allowedNamespaces) || size(self.allowedNamespaces) == 0 || self.sensitive",
            "allowedNamespaces only applies to sensitive features; set sensitive: true",
            ".allowedNamespaces",
        ),
    )

    name: str = Field(max_length=63, pattern=r"^[a-z][a-z0-9_]*$", description="Feature name (snake_case).")
    group: FeatureGroup = Field(description="id | reader | author | context | environment | material")
    type: FeatureType = Field(description="sparse (one id) | multi_hot (a list of ids) | dense (a number)")
    columns: list[str] = Field(min_length=1, max_length=8, description="Source column(s) in the samples.")
    transform: Transform
    embedding_dim: int | None = Field(
        default=None, ge=1, le=1024, description="Embedding size; defaults to the TrainJob's model.embeddingDim."
    )
    pooling: Literal["sum", "mean"] = Field(default="sum", description="Pooling of multi_hot ids.")
    sensitive: bool = Field(default=False, description="Sensitive features are usable only from allowedNamespaces.")
    allowed_namespaces: list[str] = Field(default_factory=list)


class FeatureSetSpec(ApiModel):
    """Declares the features computed over a SampleSet."""

    sample_set_ref: LocalRef = Field(description="The SampleSet these features are computed over.")
    features: list[Feature] = Field(
        min_length=1,
        max_length=1000,
        # A list-map keyed by name: the API server refuses duplicate feature names.
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )

    @field_validator("features")
    @classmethod
    def _unique_names(cls, features: list[Feature]) -> list[Feature]:
        seen: set[str] = set()
        for f in features:
            if f.name in seen:
                raise ValueError(f"features[].name must be unique: {f.name!r} appears twice")
            seen.add(f.name)
        return features

    label_column: str = Field(default="label", description="Label column written by the SampleSet.")
    weight_column: str = Field(default="weight", description="Importance-weight column written by the SampleSet.")
    resources: Resources = Field(default_factory=Resources)
    deletion_policy: DeletionPolicy = "Retain"


class FeatureStats(ApiModel):
    name: str
    cardinality: int | None = None
    null_rate: float | None = None
    oov_rate: float | None = None
    mean: float | None = None
    std: float | None = None


class FeatureSetStatus(BaseStatus):
    version: str | None = None
    sample_set_version: str | None = None
    spec_uri: str | None = None
    features: list[FeatureStats] = Field(default_factory=list)
    versions: list[str] = Field(default_factory=list)
