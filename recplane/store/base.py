"""The artifact store interface: immutable, versioned artifacts under
`<root>/<namespace>/<kind>/<name>/<version>/`.

Backends implement a handful of object operations; everything about versions
(publishing with the manifest last, listing, latest, garbage collection) is
written once here on top of them.
"""

from __future__ import annotations

import json
import os
from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from .manifest import MANIFEST_FILE, Manifest, file_entries, sha256_file

LATEST_FILE = "latest.json"
# Continuous training's verdicts, next to a TrainJob's versions (written by the trainer, read by
# the operator and serving): the promoted version's pointer, and every verdict oldest first.
PROMOTED_FILE = "promoted.json"
PROMOTIONS_FILE = "promotions.json"
# Version directories without a manifest older than this are abandoned uploads.
STALE_UPLOAD_AGE = timedelta(hours=1)


class StoreError(RuntimeError):
    """The store cannot do what was asked; the message says what and how to fix it."""


class NotFoundError(StoreError):
    """A key, version or resource does not exist in the store."""


class VersionExistsError(StoreError):
    """A version is immutable: publishing it a second time is refused."""


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    modified: datetime | None = None


def _check_segment(what: str, value: str) -> str:
    if not value or "/" in value or value in (".", "..") or value.startswith("."):
        raise StoreError(f"{what} {value!r} is not a valid store path segment")
    return value


class Store(ABC):
    """One artifact store. Keys are POSIX paths relative to the store root."""

    # ---- object operations (backends) -------------------------------------------------
    @property
    @abstractmethod
    def uri(self) -> str:
        """The store URI (`/abs/dir` or `s3://bucket[/prefix]`)."""

    @abstractmethod
    def put_file(self, key: str, path: Path) -> None: ...

    @abstractmethod
    def put_bytes(self, key: str, data: bytes) -> None: ...

    @abstractmethod
    def get_bytes(self, key: str) -> bytes:
        """Raises NotFoundError when `key` does not exist."""

    @abstractmethod
    def get_file(self, key: str, path: Path) -> None:
        """Copy `key` to `path`; raises NotFoundError when it does not exist."""

    @abstractmethod
    def list_objects(self, prefix: str) -> list[ObjectInfo]:
        """Every object under `prefix` (a directory-like prefix ending in '/'), recursively."""

    @abstractmethod
    def list_children(self, prefix: str) -> list[str]:
        """Names of the immediate 'sub-directories' under `prefix` (ending in '/')."""

    @abstractmethod
    def delete_prefix(self, prefix: str) -> int:
        """Delete every object under `prefix`; returns how many were deleted."""

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    def local_path(self, key: str) -> Path | None:
        """A path readable in place, when the backend is a local directory."""
        return None

    @abstractmethod
    def _publish_staged(self, prefix: str, staging: Path, manifest: Manifest) -> None:
        """Upload the staged files under `prefix`, the manifest last; leave nothing behind on failure."""

    # ---- versions ---------------------------------------------------------------------
    @staticmethod
    def prefix(namespace: str, kind: str, name: str | None = None, version: str | None = None) -> str:
        parts = [_check_segment("namespace", namespace), _check_segment("kind", kind.lower())]
        if name is not None:
            parts.append(_check_segment("name", name))
            if version is not None:
                parts.append(_check_segment("version", version))
        return "/".join(parts) + "/"

    def version_uri(self, namespace: str, kind: str, name: str, version: str) -> str:
        return f"{self.uri.rstrip('/')}/{self.prefix(namespace, kind, name, version)}"

    def manifest(self, namespace: str, kind: str, name: str, version: str) -> Manifest | None:
        """The manifest of one version, or None when the version does not exist (or is incomplete)."""
        try:
            raw = self.get_bytes(self.prefix(namespace, kind, name, version) + MANIFEST_FILE)
        except NotFoundError:
            return None
        return Manifest.from_json(raw)

    def publish(self, staging: Path, manifest: Manifest) -> Manifest:
        """Store the files in `staging` as `manifest`'s version, with checksums and the manifest last.

        Returns the stored manifest (files, uri filled in). An existing version is never
        overwritten: VersionExistsError.
        """
        ns, kind, name, version = manifest.namespace, manifest.kind, manifest.name, manifest.version
        if self.manifest(ns, kind, name, version) is not None:
            raise VersionExistsError(f"{kind}/{ns}/{name} version {version} already exists; versions are immutable")
        manifest = manifest.model_copy(
            update={"files": file_entries(staging), "uri": self.version_uri(ns, kind, name, version)}
        )
        self._publish_staged(self.prefix(ns, kind, name, version), staging, manifest)
        self.set_latest(ns, kind, name, version)
        return manifest

    def set_latest(self, namespace: str, kind: str, name: str, version: str) -> None:
        """Point `latest` at an existing version (a re-run of an older spec makes it current again)."""
        doc = {"version": version, "updated_at": datetime.now(UTC).isoformat()}
        self.put_bytes(self.prefix(namespace, kind, name) + LATEST_FILE, json.dumps(doc).encode())

    def versions(self, namespace: str, kind: str, name: str) -> list[Manifest]:
        """Complete versions, oldest first."""
        out = []
        for version in self.list_children(self.prefix(namespace, kind, name)):
            if version.startswith("."):
                continue
            m = self.manifest(namespace, kind, name, version)
            if m is not None:
                out.append(m)
        return sorted(out, key=lambda m: (m.created_at, m.version))

    def latest(self, namespace: str, kind: str, name: str) -> Manifest | None:
        """The current version: the one `latest` points at, else the newest complete one."""
        try:
            pointed = json.loads(self.get_bytes(self.prefix(namespace, kind, name) + LATEST_FILE))["version"]
        except (NotFoundError, ValueError, KeyError, TypeError):
            pointed = None
        if pointed:
            m = self.manifest(namespace, kind, name, pointed)
            if m is not None:
                return m
        all_versions = self.versions(namespace, kind, name)
        return all_versions[-1] if all_versions else None

    def resolve(self, namespace: str, kind: str, name: str, version: str | None = None) -> Manifest:
        """A pinned version, or the latest; NotFoundError says which and where."""
        m = self.manifest(namespace, kind, name, version) if version else self.latest(namespace, kind, name)
        if m is None:
            what = f"version {version} of " if version else "any version of "
            raise NotFoundError(f"the store {self.uri} has no {what}{kind} {namespace}/{name}")
        return m

    def names(self, namespace: str, kind: str) -> list[str]:
        """Names of the resources of `kind` with anything stored."""
        return sorted(self.list_children(self.prefix(namespace, kind)))

    def fetch(self, manifest: Manifest, relpath: str) -> Path:
        """A local, checksum-verified path of one file of a version (downloaded once, then cached)."""
        entry = manifest.files.get(relpath)
        if entry is None:
            raise NotFoundError(f"{manifest.uri} has no file {relpath!r}")
        key = self.prefix(manifest.namespace, manifest.kind, manifest.name, manifest.version) + relpath
        in_place = self.local_path(key)
        if in_place is not None:
            if not in_place.exists():
                raise NotFoundError(f"{manifest.uri}{relpath} is listed in the manifest but missing")
            return in_place
        target = _cache_dir() / _cache_name(self.uri) / key
        if target.exists() and target.stat().st_size == entry.size:
            return target
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.part")
        try:
            self.get_file(key, tmp)
            if sha256_file(tmp) != entry.sha256:
                raise StoreError(f"{manifest.uri}{relpath}: checksum mismatch; the stored file is corrupt")
            tmp.replace(target)
        finally:
            tmp.unlink(missing_ok=True)
        return target

    def fetch_version(self, manifest: Manifest) -> Path:
        """A local directory holding all of the version's files (in place, or a verified cached copy)."""
        key = self.prefix(manifest.namespace, manifest.kind, manifest.name, manifest.version)
        in_place = self.local_path(key)
        if in_place is not None:
            return in_place
        for rel in manifest.files:
            self.fetch(manifest, rel)
        return _cache_dir() / _cache_name(self.uri) / key

    def gc(self, namespace: str, kind: str, name: str, keep: int) -> list[str]:
        """Delete all but the newest `keep` versions (never the `latest` one) and abandoned uploads.

        Returns the deleted version ids.
        """
        if keep < 1:
            raise StoreError(f"gc keep must be at least 1, got {keep}")
        complete = self.versions(namespace, kind, name)
        current = self.latest(namespace, kind, name)
        keep_ids = {m.version for m in complete[-keep:]} | ({current.version} if current else set())
        deleted = []
        for m in complete:
            if m.version not in keep_ids:
                self.delete_prefix(self.prefix(namespace, kind, name, m.version))
                deleted.append(m.version)
        done = {m.version for m in complete}
        now = datetime.now(UTC)
        for child in self.list_children(self.prefix(namespace, kind, name)):
            if child in done:
                continue
            prefix = self.prefix(namespace, kind, name) + child + "/"
            objects = self.list_objects(prefix)
            newest = max((o.modified for o in objects if o.modified), default=None)
            if newest is None or now - newest > STALE_UPLOAD_AGE:
                self.delete_prefix(prefix)
                deleted.append(child)
        return deleted

    def delete_all(self, namespace: str, kind: str, name: str) -> int:
        """Delete every version of one resource (deletionPolicy: Delete)."""
        return self.delete_prefix(self.prefix(namespace, kind, name))


def _cache_dir() -> Path:
    return Path(os.environ.get("RECPLANE_CACHE") or Path.home() / ".cache" / "recplane") / "store"


def _cache_name(uri: str) -> str:
    return uri.replace("://", "_").replace("/", "_").strip("_")
