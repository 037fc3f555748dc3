"""Following a TrainJob: swap in each newly promoted (or latest) version without a failed request.

A server started with a model reference whose version is `promoted`
(`<ns>/trainjob/<name>/promoted`, also as `s3://…` or `file://…`) polls the TrainJob's promotion
pointer every RECPLANE_MODEL_POLL_SECONDS (default 5; 0 turns following off) and, when it names
another version, loads that version completely and only then replaces the scorer reference. A
request holds the scorer it started with, so in-flight requests finish on the old version and
new ones go to the new one; a version that fails to load is logged and the old one keeps serving.
`latest` is followed too when RECPLANE_MODEL_FOLLOW=latest (every stored version, promoted or not).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass

from recplane.store import Store, open_store
from recplane.trainer.promotion import promoted_version

from .model_source import KIND, LATEST, PROMOTED

log = logging.getLogger("recplane.serving")
POLL_ENV = "RECPLANE_MODEL_POLL_SECONDS"
FOLLOW_ENV = "RECPLANE_MODEL_FOLLOW"
# `recplane serve` pins RECPLANE_MODEL_URI to the version it resolved (every worker starts on the same
# one) and keeps the reference the user gave here, for the workers to follow.
FOLLOW_URI_ENV = "RECPLANE_MODEL_FOLLOW_URI"
DEFAULT_POLL_SECONDS = 5.0


@dataclass(frozen=True)
class FollowTarget:
    """What a server follows: the TrainJob `namespace/name` in the store `store_uri` (None = RECPLANE_STORE)."""

    store_uri: str | None
    namespace: str
    name: str
    follow: str  # promoted | latest

    def version(self, store: Store) -> str | None:
        """The version the server should serve now, or None when there is none yet."""
        if self.follow == PROMOTED:
            return promoted_version(store, self.namespace, self.name)
        latest = store.latest(self.namespace, KIND, self.name)
        return latest.version if latest else None

    def uri(self, version: str) -> str:
        ref = f"{self.namespace}/{KIND}/{self.name}/{version}"
        return f"{self.store_uri.rstrip('/')}/{ref}" if self.store_uri else ref


def follow_target(model_uri: str) -> FollowTarget | None:
    """The TrainJob `model_uri` follows, or None when it names a fixed version (or following is off)."""
    text = model_uri.strip().rstrip("/")
    parts = text.split("/")
    if len(parts) < 4 or parts[-3] != KIND:
        return None
    follow = parts[-1]
    if follow == LATEST and os.environ.get(FOLLOW_ENV, "") != LATEST:
        return None
    if follow not in (PROMOTED, LATEST) or poll_seconds() <= 0:
        return None
    store_part = "/".join(parts[:-4])
    if store_part.startswith("file://"):
        store_part = store_part[len("file://") :]
    return FollowTarget(store_part or None, parts[-4], parts[-2], follow)


def configured_target(model_uri: str) -> FollowTarget | None:
    """The target of this server: RECPLANE_MODEL_FOLLOW_URI when `recplane serve` set it, else `model_uri`."""
    return follow_target(os.environ.get(FOLLOW_URI_ENV) or model_uri)


def poll_seconds() -> float:
    raw = os.environ.get(POLL_ENV, "")
    try:
        return float(raw) if raw else DEFAULT_POLL_SECONDS
    except ValueError:
        raise ValueError(f"{POLL_ENV}={raw!r} is not a number of seconds (0 turns following off)") from None


class VersionFollower:
    """Polls `target` and calls `swap(uri)` when it names a version other than `current()`."""

    def __init__(
        self, target: FollowTarget, current: Callable[[], str], swap: Callable[[str], None], every: float
    ) -> None:
        self.target = target
        self.current = current
        self.swap = swap
        self.every = every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="recplane-model-follow", daemon=True)

    def check_once(self) -> str | None:
        """Swap when the target moved; returns the version swapped in, or None."""
        version = self.target.version(open_store(self.target.store_uri))
        if version is None or version == self.current():
            return None
        self.swap(self.target.uri(version))
        return version

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            try:
                swapped = self.check_once()
            except Exception as exc:  # any failure keeps the current version serving; the thread must live on
                log.error("following %s/%s failed, retrying: %s", self.target.namespace, self.target.name, exc)
                continue
            if swapped:
                log.info("now serving %s version %s of TrainJob %s", self.target.follow, swapped, self.target.name)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
