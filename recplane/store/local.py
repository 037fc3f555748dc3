"""The embedded store: a directory on the local file system."""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from datetime import UTC, datetime
from pathlib import Path

from .base import STALE_UPLOAD_AGE, NotFoundError, ObjectInfo, Store, StoreError
from .manifest import MANIFEST_FILE, Manifest

STAGING_DIR = ".staging"


class LocalStore(Store):
    """Artifacts under a local directory. A version appears by one atomic rename, manifest included."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).expanduser().resolve()

    def __repr__(self) -> str:
        return f"LocalStore({str(self.root)!r})"

    @property
    def uri(self) -> str:
        return str(self.root)

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if path != self.root and self.root not in path.parents:
            raise StoreError(f"key {key!r} points outside the store root {self.root}")
        return path

    def local_path(self, key: str) -> Path | None:
        return self._path(key)

    def put_file(self, key: str, path: Path) -> None:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.part")
        shutil.copyfile(path, tmp)
        tmp.replace(target)

    def put_bytes(self, key: str, data: bytes) -> None:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.part")
        tmp.write_bytes(data)
        tmp.replace(target)

    def get_bytes(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise NotFoundError(f"{self.uri}/{key} does not exist") from None

    def get_file(self, key: str, path: Path) -> None:
        source = self._path(key)
        if not source.is_file():
            raise NotFoundError(f"{self.uri}/{key} does not exist")
        shutil.copyfile(source, path)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list_objects(self, prefix: str) -> list[ObjectInfo]:
        base = self._path(prefix)
        if not base.is_dir():
            return []
        out = []
        for p in sorted(base.rglob("*")):
            if p.is_file():
                st = p.stat()
                out.append(
                    ObjectInfo(
                        key=p.relative_to(self.root).as_posix(),
                        size=st.st_size,
                        modified=datetime.fromtimestamp(st.st_mtime, UTC),
                    )
                )
        return out

    def list_children(self, prefix: str) -> list[str]:
        base = self._path(prefix)
        if not base.is_dir():
            return []
        return sorted(p.name for p in base.iterdir() if p.is_dir() and not p.name.startswith("."))

    def delete_prefix(self, prefix: str) -> int:
        base = self._path(prefix)
        if not base.exists():
            return 0
        count = sum(1 for p in base.rglob("*") if p.is_file())
        # Rename first so a reader never sees a half-deleted version as complete.
        doomed = base.with_name(f".deleting-{base.name}-{uuid.uuid4().hex}")
        base.rename(doomed)
        shutil.rmtree(doomed, ignore_errors=True)
        return count

    def gc(self, namespace: str, kind: str, name: str, keep: int) -> list[str]:
        deleted = super().gc(namespace, kind, name, keep)
        # Staging directories of writers that died before their rename.
        staging = self._path(self.prefix(namespace, kind, name)) / STAGING_DIR
        if staging.is_dir():
            now = datetime.now(UTC)
            for stage in staging.iterdir():
                if now - datetime.fromtimestamp(stage.stat().st_mtime, UTC) > STALE_UPLOAD_AGE:
                    shutil.rmtree(stage, ignore_errors=True)
                    deleted.append(f"{STAGING_DIR}/{stage.name}")
        return deleted

    def _publish_staged(self, prefix: str, staging: Path, manifest: Manifest) -> None:
        target = self._path(prefix)
        stage = target.parent / STAGING_DIR / f"{target.name}-{uuid.uuid4().hex}"
        try:
            shutil.copytree(staging, stage, ignore=shutil.ignore_patterns(MANIFEST_FILE))
            (stage / MANIFEST_FILE).write_text(manifest.to_json())
            os.rename(stage, target)
        except OSError as e:
            if target.is_dir() and (target / MANIFEST_FILE).exists():
                # Another writer published the same content-addressed version first.
                return
            raise StoreError(f"cannot write {target}: {e}") from e
        finally:
            if stage.exists():
                shutil.rmtree(stage, ignore_errors=True)
            with contextlib.suppress(OSError):
                stage.parent.rmdir()
