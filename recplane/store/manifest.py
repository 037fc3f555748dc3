"""The manifest of one stored version: what it holds, where it came from, its checksums.

A version directory is complete exactly when its `manifest.json` exists: stores
write it last, and readers ignore version directories without one.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

MANIFEST_FILE = "manifest.json"
FORMAT_VERSION = 1


class FileEntry(BaseModel):
    """One file of a version, relative to the version directory."""

    model_config = ConfigDict(extra="forbid")

    sha256: str
    size: int


class Manifest(BaseModel):
    """What a step produced: files with checksums, the spec and inputs behind it, and its status.

    `status` uses the camelCase keys of the kind's status model in `recplane.api`, so
    the operator copies it into the resource status unchanged.
    """

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    format_version: int = FORMAT_VERSION
    kind: str = Field(description="Lower-case singular kind: sampleset, featureset, trainjob.")
    namespace: str
    name: str
    version: str
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    uri: str = Field(default="", description="Where the version lives, e.g. s3://bucket/ns/kind/name/version/.")
    spec: dict[str, Any] = Field(default_factory=dict, description="The spec (wire format) that produced it.")
    inputs: dict[str, Any] = Field(
        default_factory=dict, description="Identity of the inputs (upstream versions, files)."
    )
    files: dict[str, FileEntry] = Field(default_factory=dict)
    schema_: list[dict[str, Any]] = Field(default_factory=list, alias="schema")
    row_counts: dict[str, int] = Field(default_factory=dict)
    status: dict[str, Any] = Field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(self.model_dump(mode="json", by_alias=True), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> Manifest:
        return cls.model_validate_json(text)


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def file_entries(directory: Path) -> dict[str, FileEntry]:
    """Checksums of every file under `directory` (the staged version), keyed by POSIX relative path."""
    out: dict[str, FileEntry] = {}
    for p in sorted(directory.rglob("*")):
        if p.is_file() and p.name != MANIFEST_FILE:
            out[p.relative_to(directory).as_posix()] = FileEntry(sha256=sha256_file(p), size=p.stat().st_size)
    return out


def content_version(*parts: Any, length: int = 16) -> str:
    """A version id: the hash of the canonical JSON of `parts` (spec, input identities, ...)."""
    blob = json.dumps(parts, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:length]
