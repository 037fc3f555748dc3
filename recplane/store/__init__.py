"""The artifact store: a local directory (the embedded default) or MinIO, one interface.

Layout: `<root-or-bucket>/<namespace>/<kind>/<name>/<version>/` with a
`manifest.json` written last; versions are content hashes and never overwritten.
"""

from __future__ import annotations

import os
from pathlib import Path

from .base import NotFoundError, ObjectInfo, Store, StoreError, VersionExistsError
from .local import LocalStore
from .manifest import MANIFEST_FILE, FileEntry, Manifest, content_version, sha256_file

STORE_ENV = "RECPLANE_STORE"
DEFAULT_LOCAL_STORE = Path(".recplane") / "store"


def open_store(uri: str | None = None) -> Store:
    """The store named by `uri`, else by $RECPLANE_STORE, else `.recplane/store` under the current directory.

    `uri` is a directory path, `file:///abs/path`, or `s3://<bucket>[/prefix]` (MinIO; endpoint and
    credentials from RECPLANE_S3_ENDPOINT, RECPLANE_S3_ACCESS_KEY, RECPLANE_S3_SECRET_KEY, RECPLANE_S3_SECURE).
    """
    uri = uri or os.environ.get(STORE_ENV) or str(DEFAULT_LOCAL_STORE)
    if uri.startswith("s3://"):
        from .s3 import S3Store

        return S3Store.from_env(uri)
    if uri.startswith("file://"):
        uri = uri[len("file://") :]
    elif "://" in uri:
        raise StoreError(f"unsupported store URI {uri!r}: use a directory, file:///abs/path or s3://bucket")
    return LocalStore(Path(uri))


__all__ = [
    "MANIFEST_FILE",
    "STORE_ENV",
    "FileEntry",
    "LocalStore",
    "Manifest",
    "NotFoundError",
    "ObjectInfo",
    "Store",
    "StoreError",
    "VersionExistsError",
    "content_version",
    "open_store",
    "sha256_file",
]
