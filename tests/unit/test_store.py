"""The artifact store contract. The same suite runs against MinIO in tests/cluster/test_store_minio.py,
which rebinds the `store` fixture; tests named `test_local_*` are about the local backend only."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from recplane.store import (
    LocalStore,
    Manifest,
    NotFoundError,
    Store,
    StoreError,
    VersionExistsError,
    content_version,
    open_store,
)
from recplane.store.local import STAGING_DIR


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return LocalStore(tmp_path / "store")


def _stage(tmp_path: Path, files: dict[str, bytes]) -> Path:
    staging = tmp_path / f"staging-{len(list(tmp_path.iterdir()))}"
    for rel, data in files.items():
        (staging / rel).parent.mkdir(parents=True, exist_ok=True)
        (staging / rel).write_bytes(data)
    return staging


def _publish(store: Store, tmp_path: Path, version: str, files: dict[str, bytes] | None = None, **kw) -> Manifest:
    files = files if files is not None else {"train/part-00000.parquet": b"rows " + version.encode(), "a.json": b"{}"}
    manifest = Manifest(kind="sampleset", namespace="team-a", name="clicks", version=version, **kw)
    return store.publish(_stage(tmp_path, files), manifest)


def test_a_published_version_has_checksums_of_every_file_and_reads_back(store: Store, tmp_path: Path) -> None:
    stored = _publish(store, tmp_path, "v1", spec={"source": {"format": "csv"}}, status={"trainRows": 3})
    assert set(stored.files) == {"train/part-00000.parquet", "a.json"}
    assert stored.uri.endswith("/team-a/sampleset/clicks/v1/")
    again = store.manifest("team-a", "sampleset", "clicks", "v1")
    assert again is not None
    assert again.files == stored.files
    assert again.spec == {"source": {"format": "csv"}}
    assert again.status == {"trainRows": 3}
    local = store.fetch(again, "train/part-00000.parquet")
    assert local.read_bytes() == b"rows v1"
    directory = store.fetch_version(again)
    assert (directory / "a.json").read_bytes() == b"{}"


def test_a_version_is_never_overwritten(store: Store, tmp_path: Path) -> None:
    _publish(store, tmp_path, "v1")
    with pytest.raises(VersionExistsError, match="immutable"):
        _publish(store, tmp_path, "v1", files={"other": b"x"})
    m = store.manifest("team-a", "sampleset", "clicks", "v1")
    assert m is not None and "other" not in m.files


def test_latest_is_the_newest_version_and_follows_set_latest(store: Store, tmp_path: Path) -> None:
    assert store.latest("team-a", "sampleset", "clicks") is None
    _publish(store, tmp_path, "v1")
    _publish(store, tmp_path, "v2")
    assert [m.version for m in store.versions("team-a", "sampleset", "clicks")] == ["v1", "v2"]
    latest = store.latest("team-a", "sampleset", "clicks")
    assert latest is not None and latest.version == "v2"
    store.set_latest("team-a", "sampleset", "clicks", "v1")
    latest = store.latest("team-a", "sampleset", "clicks")
    assert latest is not None and latest.version == "v1"
    assert store.names("team-a", "sampleset") == ["clicks"]
    assert store.names("team-b", "sampleset") == []


def test_resolve_names_what_is_missing(store: Store, tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="team-a/clicks"):
        store.resolve("team-a", "sampleset", "clicks")
    _publish(store, tmp_path, "v1")
    with pytest.raises(NotFoundError, match="version v9"):
        store.resolve("team-a", "sampleset", "clicks", "v9")
    assert store.resolve("team-a", "sampleset", "clicks", "v1").version == "v1"


def test_a_version_without_manifest_is_invisible(store: Store, tmp_path: Path) -> None:
    # What an interrupted upload leaves behind: files, no manifest.
    store.put_bytes("team-a/sampleset/clicks/v0/train/part-00000.parquet", b"half")
    assert store.manifest("team-a", "sampleset", "clicks", "v0") is None
    assert store.versions("team-a", "sampleset", "clicks") == []
    assert store.latest("team-a", "sampleset", "clicks") is None


def test_gc_keeps_the_newest_n_and_the_current_version(store: Store, tmp_path: Path) -> None:
    for v in ("v1", "v2", "v3", "v4"):
        _publish(store, tmp_path, v)
    store.set_latest("team-a", "sampleset", "clicks", "v1")
    deleted = store.gc("team-a", "sampleset", "clicks", keep=2)
    assert sorted(deleted) == ["v2"]
    assert [m.version for m in store.versions("team-a", "sampleset", "clicks")] == ["v1", "v3", "v4"]
    assert store.list_objects("team-a/sampleset/clicks/v2/") == []
    with pytest.raises(StoreError, match="at least 1"):
        store.gc("team-a", "sampleset", "clicks", keep=0)


def test_a_failed_publish_leaves_no_version(store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # The manifest is written last; make exactly that write fail, after the data files went up.
    def disk_full(self: Manifest) -> str:
        raise OSError("No space left on device")

    monkeypatch.setattr(Manifest, "to_json", disk_full)
    with pytest.raises((OSError, StoreError), match="No space left"):
        _publish(store, tmp_path, "v1")
    monkeypatch.undo()
    assert store.manifest("team-a", "sampleset", "clicks", "v1") is None
    assert store.list_objects("team-a/sampleset/clicks/v1/") == []
    assert store.versions("team-a", "sampleset", "clicks") == []


def test_delete_all_removes_every_version(store: Store, tmp_path: Path) -> None:
    _publish(store, tmp_path, "v1")
    _publish(store, tmp_path, "v2")
    assert store.delete_all("team-a", "sampleset", "clicks") >= 4
    assert store.versions("team-a", "sampleset", "clicks") == []


def test_missing_keys_raise_not_found(store: Store) -> None:
    with pytest.raises(NotFoundError):
        store.get_bytes("team-a/nothing/here")
    assert not store.exists("team-a/nothing/here")


def test_path_segments_are_checked(store: Store) -> None:
    with pytest.raises(StoreError, match="namespace"):
        store.prefix("../etc", "sampleset", "x")
    with pytest.raises(StoreError, match="version"):
        store.prefix("ns", "sampleset", "x", ".staging")


# ---- local-only behaviour -----------------------------------------------------------------
def test_local_open_store_reads_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECPLANE_STORE", f"file://{tmp_path}/s")
    s = open_store()
    assert isinstance(s, LocalStore) and s.root == (tmp_path / "s").resolve()
    monkeypatch.delenv("RECPLANE_STORE")
    monkeypatch.chdir(tmp_path)
    default = open_store()
    assert isinstance(default, LocalStore) and default.root == (tmp_path / ".recplane" / "store").resolve()
    with pytest.raises(StoreError, match="unsupported store URI"):
        open_store("gs://bucket")


def test_local_s3_store_needs_credentials_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("RECPLANE_S3_ENDPOINT", "RECPLANE_S3_ACCESS_KEY", "RECPLANE_S3_SECRET_KEY"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(StoreError, match="RECPLANE_S3_ENDPOINT, RECPLANE_S3_ACCESS_KEY, RECPLANE_S3_SECRET_KEY"):
        open_store("s3://artifacts")


def test_local_publish_leaves_no_staging_directory(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    _publish(store, tmp_path, "v1")
    assert not (tmp_path / "store" / "team-a" / "sampleset" / "clicks" / STAGING_DIR).exists()
    manifest = json.loads((tmp_path / "store/team-a/sampleset/clicks/v1/manifest.json").read_text())
    assert manifest["version"] == "v1" and "created_at" in manifest


def test_local_gc_removes_abandoned_uploads_and_staging(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    _publish(store, tmp_path, "v1")
    store.put_bytes("team-a/sampleset/clicks/v0/train/part-00000.parquet", b"half")
    stage = tmp_path / "store/team-a/sampleset/clicks" / STAGING_DIR / "v9-dead"
    stage.mkdir(parents=True)
    fresh = tmp_path / "store/team-a/sampleset/clicks" / STAGING_DIR / "v8-writing"
    fresh.mkdir()
    long_ago = time.time() - 2 * 3600
    for p in (stage, tmp_path / "store/team-a/sampleset/clicks/v0/train/part-00000.parquet"):
        os.utime(p, (long_ago, long_ago))
    deleted = store.gc("team-a", "sampleset", "clicks", keep=1)
    assert sorted(deleted) == [f"{STAGING_DIR}/v9-dead", "v0"]
    assert fresh.exists() and store.manifest("team-a", "sampleset", "clicks", "v1") is not None


def test_local_content_version_depends_on_every_part() -> None:
    a = content_version("SampleSet", {"x": 1}, {"files": ["a"]})
    assert a == content_version("SampleSet", {"x": 1}, {"files": ["a"]})
    assert a != content_version("SampleSet", {"x": 2}, {"files": ["a"]})
    assert a != content_version("SampleSet", {"x": 1}, {"files": ["b"]})
    assert len(a) == 16
