"""recplane's API: pydantic models of every spec and status, the single source of truth.

CRDs (`crds/`), the CLI's validation, the docs' reference tables and the local
runner all derive from the models registered in `KINDS`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from .common import API_VERSION, GROUP, VERSION, BaseStatus, Condition, LocalRef
from .featureset import FeatureSetSpec, FeatureSetStatus
from .modeldeployment import ModelDeploymentSpec, ModelDeploymentStatus
from .sampleset import SampleSetSpec, SampleSetStatus
from .trainjob import TrainJobSpec, TrainJobStatus


@dataclass(frozen=True)
class PrinterColumn:
    name: str
    json_path: str
    type: str = "string"
    priority: int = 0
    description: str = ""


@dataclass(frozen=True)
class Kind:
    """Everything recplane knows about one resource kind."""

    kind: str
    plural: str
    short: str
    spec: type[BaseModel]
    status: type[BaseStatus]
    description: str
    columns: tuple[PrinterColumn, ...] = field(default_factory=tuple)

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def crd_name(self) -> str:
        return f"{self.plural}.{GROUP}"


_PHASE = PrinterColumn("Phase", ".status.phase", description="Lifecycle phase.")
_READY = PrinterColumn("Ready", '.status.conditions[?(@.type=="Ready")].status', description="Ready condition.")
_AGE = PrinterColumn("Age", ".metadata.creationTimestamp", type="date")

KINDS: dict[str, Kind] = {
    k.kind: k
    for k in (
        Kind(
            kind="SampleSet",
            plural="samplesets",
            short="ss",
            spec=SampleSetSpec,
            status=SampleSetStatus,
            description="Behaviour events turned into versioned training samples.",
            columns=(
                _PHASE,
                _READY,
                PrinterColumn("Version", ".status.version"),
                PrinterColumn("Rows", ".status.trainRows", type="integer", description="Training rows."),
                PrinterColumn("PosRate", ".status.positiveRate", type="number", description="Positive rate."),
                _AGE,
            ),
        ),
        Kind(
            kind="FeatureSet",
            plural="featuresets",
            short="fs",
            spec=FeatureSetSpec,
            status=FeatureSetStatus,
            description="A feature catalog computed over a SampleSet.",
            columns=(
                _PHASE,
                _READY,
                PrinterColumn("Version", ".status.version"),
                PrinterColumn("SampleSet", ".spec.sampleSetRef.name"),
                _AGE,
            ),
        ),
        Kind(
            kind="TrainJob",
            plural="trainjobs",
            short="tj",
            spec=TrainJobSpec,
            status=TrainJobStatus,
            description="A sharded-embedding model trained over a FeatureSet.",
            columns=(
                _PHASE,
                _READY,
                PrinterColumn("Model", ".spec.model.type"),
                PrinterColumn("Version", ".status.latestVersion"),
                PrinterColumn("AUC", ".status.metrics.auc", type="number", description="Latest validation AUC."),
                PrinterColumn("Step", ".status.step", type="integer", priority=1),
                PrinterColumn("Restarts", ".status.restarts", type="integer", priority=1),
                _AGE,
            ),
        ),
        Kind(
            kind="ModelDeployment",
            plural="modeldeployments",
            short="md",
            spec=ModelDeploymentSpec,
            status=ModelDeploymentStatus,
            description="An autoscaled serving endpoint for a model version.",
            columns=(
                _PHASE,
                _READY,
                PrinterColumn("Version", ".status.currentVersion"),
                PrinterColumn("Canary", ".status.canaryVersion"),
                PrinterColumn("Replicas", ".status.readyReplicas", type="integer", description="Ready replicas."),
                PrinterColumn("Endpoint", ".status.endpoint", priority=1),
                _AGE,
            ),
        ),
    )
}

# Order in which a pipeline's resources depend on each other.
PIPELINE_ORDER = ("SampleSet", "FeatureSet", "TrainJob", "ModelDeployment")


def kind_of(name: str) -> Kind:
    """Look a kind up by kind, plural, singular or short name, as kubectl does."""
    lowered = name.lower()
    for k in KINDS.values():
        if lowered in (k.kind.lower(), k.plural, k.singular, k.short):
            return k
    known = ", ".join(f"{k.kind} ({k.short})" for k in KINDS.values())
    raise KeyError(f"unknown kind {name!r}: expected one of {known}")


def parse_spec(kind: str, spec: dict[str, Any]) -> BaseModel:
    """Validate a wire-format spec (camelCase) into its model."""
    return kind_of(kind).spec.model_validate(spec)


__all__ = [
    "API_VERSION",
    "GROUP",
    "KINDS",
    "PIPELINE_ORDER",
    "VERSION",
    "Condition",
    "Kind",
    "LocalRef",
    "PrinterColumn",
    "kind_of",
    "parse_spec",
]
