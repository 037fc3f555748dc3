"""Types shared by every recplane resource: base model, references, conditions."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

GROUP = "recplane.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"

# Kubernetes object names (RFC 1123 subdomain); references must be valid names.
NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
# Go-style durations limited to what a schedule needs: "90s", "5m", "1h30m".
DURATION_PATTERN = r"^([0-9]+(s|m|h))+$"
QUANTITY_PATTERN = r"^[0-9]+(\.[0-9]+)?(m|k|Ki|Mi|Gi|Ti|M|G|T)?$"


def cel(rule: str, message: str, field_path: str | None = None) -> dict[str, str]:
    """One `x-kubernetes-validations` entry; `message` must name the field and the fix."""
    entry = {"rule": rule, "message": message}
    if field_path:
        entry["fieldPath"] = field_path
    return entry


def validations(*rules: dict[str, str]) -> ConfigDict:
    """Model config carrying CEL rules; pydantic merges it with the parent's config."""
    return ConfigDict(json_schema_extra={"x-kubernetes-validations": [dict(r) for r in rules]})  # type: ignore[misc]


class ApiModel(BaseModel):
    """Base of every spec and status part: camelCase on the wire, unknown fields refused."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        use_enum_values=True,
    )

    @model_validator(mode="after")
    def _check_cel_rules(self) -> ApiModel:
        extra = self.model_config.get("json_schema_extra")
        rules = extra.get("x-kubernetes-validations") if isinstance(extra, dict) else None
        if rules:
            from .rules import violations

            broken = violations(rules, self.to_wire())  # type: ignore[arg-type]
            if broken:
                raise ValueError("; ".join(r["message"] for r in broken))
        return self

    def to_wire(self) -> dict[str, Any]:
        """The JSON-ready camelCase dict, without unset optional fields."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


class LocalRef(ApiModel):
    """A reference to another recplane resource in the same namespace."""

    name: str = Field(max_length=253, pattern=NAME_PATTERN, description="Name of the referenced resource.")
    version: str | None = Field(
        default=None,
        max_length=64,
        description="Pin one version of the referenced resource; omit to follow its latest version.",
    )


ConditionStatus = Literal["True", "False", "Unknown"]


class Condition(ApiModel):
    """A status condition, shaped like Kubernetes' metav1.Condition."""

    type: str = Field(description="Condition type: Ready, Progressing or Failed.")
    status: ConditionStatus
    reason: str = Field(description="CamelCase machine-readable reason.")
    message: str = Field(default="", description="Human-readable explanation.")
    last_transition_time: datetime | None = None
    observed_generation: int | None = None


Phase = Literal["Pending", "Waiting", "Running", "Succeeded", "Failed", "Ready"]


class BaseStatus(ApiModel):
    """Status fields every kind carries."""

    model_config = ConfigDict(extra="allow")

    phase: Phase | None = None
    observed_generation: int | None = None
    conditions: list[Condition] = Field(default_factory=list)


class Resources(ApiModel):
    """Compute resources of the pods a resource runs (Kubernetes quantities)."""

    cpu: str = Field(default="1", pattern=QUANTITY_PATTERN, description="CPU request and limit, e.g. 500m or 2.")
    memory: str = Field(default="2Gi", pattern=QUANTITY_PATTERN, description="Memory request and limit, e.g. 4Gi.")
    gpu: int = Field(default=0, ge=0, le=16, description="NVIDIA GPUs per pod (nvidia.com/gpu).")


class Toleration(ApiModel):
    """A pod toleration, passed through unchanged."""

    key: str | None = None
    operator: Literal["Exists", "Equal"] = "Equal"
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None


class Scheduling(ApiModel):
    """Where the pods may run."""

    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[Toleration] = Field(default_factory=list)
    priority_class_name: str | None = Field(default=None, pattern=NAME_PATTERN)


DeletionPolicy = Literal["Retain", "Delete"]
