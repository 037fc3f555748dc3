"""The cluster store: a bucket on MinIO (or any S3 API), through the `minio` SDK.

Credentials come from the environment (in pods: a Kubernetes Secret through
secretKeyRef), never from a spec.
"""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

from minio import Minio
from minio.deleteobjects import DeleteObject
from minio.error import S3Error

from .base import NotFoundError, ObjectInfo, Store, StoreError
from .manifest import MANIFEST_FILE, Manifest

ENDPOINT_ENV = "RECPLANE_S3_ENDPOINT"
ACCESS_KEY_ENV = "RECPLANE_S3_ACCESS_KEY"
SECRET_KEY_ENV = "RECPLANE_S3_SECRET_KEY"
SECURE_ENV = "RECPLANE_S3_SECURE"

_MISSING = ("NoSuchKey", "NoSuchObject", "NoSuchBucket")


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """`s3://bucket/some/prefix` -> ("bucket", "some/prefix/")."""
    if not uri.startswith("s3://"):
        raise StoreError(f"{uri!r} is not an s3:// URI")
    bucket, _, prefix = uri[len("s3://") :].partition("/")
    if not bucket:
        raise StoreError(f"{uri!r} names no bucket: use s3://<bucket>[/prefix]")
    prefix = prefix.strip("/")
    return bucket, f"{prefix}/" if prefix else ""


class S3Store(Store):
    """Artifacts in an S3 bucket. The manifest is uploaded last; a failed upload deletes what it wrote."""

    def __init__(self, client: Minio, bucket: str, prefix: str = "", endpoint: str = "") -> None:
        self.client = client
        self.bucket = bucket
        self.base = prefix
        self.endpoint = endpoint
        self._bucket_checked = False

    def __repr__(self) -> str:
        return f"S3Store({self.uri!r}, endpoint={self.endpoint!r})"

    @classmethod
    def from_env(cls, uri: str) -> S3Store:
        """An S3Store for `s3://bucket[/prefix]` with endpoint and credentials from RECPLANE_S3_*."""
        bucket, prefix = parse_s3_uri(uri)
        missing = [v for v in (ENDPOINT_ENV, ACCESS_KEY_ENV, SECRET_KEY_ENV) if not os.environ.get(v)]
        if missing:
            raise StoreError(
                f"store {uri} needs {', '.join(missing)} in the environment "
                f"(in a pod they come from the store Secret); credentials never go in a spec"
            )
        endpoint = os.environ[ENDPOINT_ENV]
        endpoint = endpoint.removeprefix("http://").removeprefix("https://").rstrip("/")
        secure = os.environ.get(SECURE_ENV, "false").strip().lower() in ("1", "true", "yes")
        client = Minio(
            endpoint, access_key=os.environ[ACCESS_KEY_ENV], secret_key=os.environ[SECRET_KEY_ENV], secure=secure
        )
        return cls(client, bucket, prefix, endpoint)

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.base}".rstrip("/")

    def _key(self, key: str) -> str:
        return self.base + key

    def _ensure_bucket(self) -> None:
        if self._bucket_checked:
            return
        try:
            if not self.client.bucket_exists(self.bucket):
                self.client.make_bucket(self.bucket)
        except S3Error as e:
            if e.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                raise StoreError(f"cannot use bucket {self.bucket} at {self.endpoint}: {e.code}: {e.message}") from e
        except Exception as e:  # urllib3 connection errors carry no S3 code
            raise StoreError(f"cannot reach the object store at {self.endpoint}: {e}") from e
        self._bucket_checked = True

    def put_file(self, key: str, path: Path) -> None:
        self._ensure_bucket()
        self.client.fput_object(self.bucket, self._key(key), str(path))

    def put_bytes(self, key: str, data: bytes) -> None:
        self._ensure_bucket()
        self.client.put_object(self.bucket, self._key(key), io.BytesIO(data), len(data))

    def get_bytes(self, key: str) -> bytes:
        self._ensure_bucket()
        try:
            response = self.client.get_object(self.bucket, self._key(key))
        except S3Error as e:
            if e.code in _MISSING:
                raise NotFoundError(f"{self.uri}/{key} does not exist") from None
            raise
        try:
            return response.read()
        finally:
            response.close()
            response.release_conn()

    def get_file(self, key: str, path: Path) -> None:
        self._ensure_bucket()
        try:
            self.client.fget_object(self.bucket, self._key(key), str(path))
        except S3Error as e:
            if e.code in _MISSING:
                raise NotFoundError(f"{self.uri}/{key} does not exist") from None
            raise

    def exists(self, key: str) -> bool:
        self._ensure_bucket()
        try:
            self.client.stat_object(self.bucket, self._key(key))
        except S3Error as e:
            if e.code in _MISSING:
                return False
            raise
        return True

    def list_objects(self, prefix: str) -> list[ObjectInfo]:
        self._ensure_bucket()
        out = []
        for obj in self.client.list_objects(self.bucket, prefix=self._key(prefix), recursive=True):
            if obj.is_dir or obj.object_name is None:
                continue
            out.append(
                ObjectInfo(key=obj.object_name[len(self.base) :], size=obj.size or 0, modified=obj.last_modified)
            )
        return sorted(out, key=lambda o: o.key)

    def list_children(self, prefix: str) -> list[str]:
        self._ensure_bucket()
        full = self._key(prefix)
        names = set()
        for obj in self.client.list_objects(self.bucket, prefix=full, recursive=False):
            if obj.is_dir and obj.object_name:
                names.add(obj.object_name[len(full) :].strip("/"))
        return sorted(n for n in names if n and not n.startswith("."))

    def delete_prefix(self, prefix: str) -> int:
        self._ensure_bucket()
        keys = [self._key(o.key) for o in self.list_objects(prefix)]
        # The manifest goes first, so a partly deleted version is never seen as complete.
        keys.sort(key=lambda k: not k.endswith("/" + MANIFEST_FILE))
        manifests = [k for k in keys if k.endswith("/" + MANIFEST_FILE)]
        for k in manifests:
            self.client.remove_object(self.bucket, k)
        rest = [DeleteObject(k) for k in keys if k not in set(manifests)]
        errors = list(self.client.remove_objects(self.bucket, rest)) if rest else []
        if errors:
            raise StoreError(f"could not delete {len(errors)} objects under {self.uri}/{prefix}: {errors[0]}")
        return len(keys)

    def _publish_staged(self, prefix: str, staging: Path, manifest: Manifest) -> None:
        written: list[str] = []
        try:
            for rel in manifest.files:
                self.put_file(prefix + rel, staging / rel)
                written.append(prefix + rel)
            self.put_bytes(prefix + MANIFEST_FILE, manifest.to_json().encode())
        except BaseException:
            for key in written:
                with contextlib.suppress(Exception):  # best effort: gc removes what is left
                    self.client.remove_object(self.bucket, self._key(key))
            raise
