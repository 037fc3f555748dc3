"""Where the served model version comes from: a URI resolved to a local, verified directory.

Accepted forms (the same in `recplane serve --model` and RECPLANE_MODEL_URI):

* a model version directory: `/abs/dir`, `rel/dir` or `file:///abs/dir`;
* a version in a store: `s3://bucket[/prefix]/<ns>/trainjob/<name>/<version>` or
  `file:///store/<ns>/trainjob/<name>/<version>` (`latest` instead of a version
  follows the TrainJob's current version);
* a store reference `<ns>/trainjob/<name>/<version|latest>`, resolved against
  RECPLANE_STORE (or the store URI given).

Remote versions are downloaded once into the store's checksum-verified cache
(RECPLANE_CACHE), so a restarted pod on the same volume starts without a download.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from recplane.store import MANIFEST_FILE, Manifest, NotFoundError, StoreError, open_store
from recplane.trainer.promotion import promoted_version

KIND = "trainjob"
LATEST = "latest"
PROMOTED = "promoted"  # the version the TrainJob's promotion pointer names (continuous training)


class ModelSourceError(ValueError):
    """The model URI names nothing that can be served; the message says what was tried and the fix."""


@dataclass(frozen=True)
class ModelLocation:
    """A model version on local disk.

    `uri` is where it came from; `pinned_uri` names the same version even when `uri` says `latest`.
    """

    local_dir: Path
    uri: str
    version: str
    pinned_uri: str
    manifest: Manifest | None = None


@dataclass(frozen=True)
class _StoreRef:
    namespace: str
    name: str
    version: str


def _split_ref(path: str) -> tuple[str, _StoreRef] | None:
    """(store part, reference) when `path` ends in `<ns>/trainjob/<name>/<version>`, else None."""
    parts = path.rstrip("/").split("/")
    if len(parts) < 4 or parts[-3] != KIND or not all(parts[-4:]):
        return None
    store_part = "/".join(parts[:-4]) or ("/" if path.startswith("/") else "")
    return store_part, _StoreRef(parts[-4], parts[-2], parts[-1])


def _from_store(store_uri: str | None, ref: _StoreRef, original: str) -> ModelLocation:
    try:
        store = open_store(store_uri)
        version = None if ref.version == LATEST else ref.version
        if ref.version == PROMOTED:
            version = promoted_version(store, ref.namespace, ref.name)
            if version is None:
                raise NotFoundError(f"TrainJob {ref.namespace}/{ref.name} has no promoted version yet")
        manifest = store.resolve(ref.namespace, KIND, ref.name, version)
        local = store.fetch_version(manifest)
    except NotFoundError as exc:
        raise ModelSourceError(
            f"model {original!r}: {exc}; check the TrainJob name and namespace, or pin an existing version"
        ) from None
    except StoreError as exc:
        raise ModelSourceError(f"model {original!r}: {exc}") from None
    pinned = original.rstrip("/")
    if ref.version in (LATEST, PROMOTED):
        pinned = pinned[: -len(ref.version)] + manifest.version
    return ModelLocation(
        local_dir=local, uri=manifest.uri or original, version=manifest.version, pinned_uri=pinned, manifest=manifest
    )


def _from_directory(directory: Path, original: str) -> ModelLocation:
    manifest_path = directory / MANIFEST_FILE
    manifest = Manifest.from_json(manifest_path.read_bytes()) if manifest_path.is_file() else None
    version = manifest.version if manifest else directory.resolve().name
    return ModelLocation(
        local_dir=directory, uri=original, version=version, pinned_uri=str(directory.resolve()), manifest=manifest
    )


def resolve_model(uri: str, store_uri: str | None = None) -> ModelLocation:
    """The local directory of the model version `uri` names (downloaded when remote).

    `store_uri` resolves bare `<ns>/trainjob/<name>/<version>` references (default: RECPLANE_STORE).
    """
    text = uri.strip()
    if not text:
        raise ModelSourceError("the model URI is empty: name a model version directory or <ns>/trainjob/<name>/latest")
    if text.startswith("s3://"):
        split = _split_ref(text[len("s3://") :])
        if split is None or not split[0]:
            raise ModelSourceError(
                f"model {uri!r}: an s3 URI must name a version, s3://<bucket>/<ns>/trainjob/<name>/<version|latest>"
            )
        return _from_store("s3://" + split[0], split[1], uri)
    if text.startswith("file://"):
        text = text[len("file://") :]
    elif "://" in text:
        raise ModelSourceError(f"model {uri!r}: unsupported scheme; use a directory, file:///..., or s3://...")
    path = Path(text)
    if path.is_dir():
        return _from_directory(path, uri)
    split = _split_ref(text)
    if split is None:
        raise ModelSourceError(
            f"model {uri!r}: no such directory, and not a store reference <ns>/trainjob/<name>/<version|latest>"
        )
    store_part, ref = split
    # A path with a leading store directory names that store; a bare reference uses the configured one.
    return _from_store(store_part or store_uri, ref, uri)
