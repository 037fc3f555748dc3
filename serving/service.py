"""The BentoML service: one model version, scored live.

Endpoints (JSON bodies, camelCase keys; 4xx bodies name the field):

* `POST /rank`: a user, a context and candidate items -> the candidates with scores, best
  first, plus the model version. Concurrent calls are merged into shared forward passes by
  BentoML's adaptive batching dispatcher (see "Why the dispatcher is used directly" below).
* `POST /recall`: a user and a context -> the top-K items of the two-tower item index.
* `GET /model`: version, metrics, feature spec summary and limits.
* `GET /livez`, `GET /readyz` (ready once the model is loaded), `GET /metrics` (Prometheus).

Start it with `recplane serve --model <uri>` (see docs/serving.md for every setting);
`bentoml serve recplane.serving.service:RecplaneServing` with RECPLANE_MODEL_URI set
runs the same thing.

Why the dispatcher is used directly: BentoML batches a `@bentoml.api(batchable=True)`
endpoint, so `/rank` (one request with a user, a context and candidates, validated with
field-level errors) would have to call a batchable endpoint of its own service. That call
is an in-process HTTP request: the rows are serialised to JSON and parsed again, pass the
whole middleware stack twice, and (measured on this service) cost about 4 ms per request,
as much as scoring 100 candidates; under load BentoML's aiohttp ASGI connector also turned
some shed requests into 500s. `/rank` therefore submits its validated rows straight to
BentoML's `CorkDispatcher`, the adaptive batching engine behind `batchable=True`, with the
same `max_batch_size` / `max_latency_ms` semantics, and no second hop.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn, cast

import bentoml
import numpy as np
from bentoml._internal.marshal.dispatcher import CorkDispatcher
from bentoml.exceptions import NotFound, ServiceUnavailable
from pydantic import ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from .config import ServingConfig
from .follow import VersionFollower, configured_target, poll_seconds
from .http_guard import HttpGuard, error_body
from .metrics import ServingMetrics
from .schemas import ModelInfo, RankRequest, RankResponse, RecallRequest, RecallResponse
from .scoring import EndpointNotSupported, Scorer
from .validation import RequestInvalid

log = logging.getLogger("recplane.serving")
CONFIG = ServingConfig.from_env()
GUARDED_PATHS = ("/rank", "/recall")
SERVICE_NAME = "recplane-serving"


class _QuietValidationErrors(logging.Filter):
    """A refused request is the client's error, not the server's: log one line, not a traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, ValidationError):
            record.exc_info = None
            record.levelno, record.levelname = logging.INFO, "INFO"
            record.msg = f"{record.msg}: refused with 400 ({exc.error_count()} invalid field(s))"
        return True


logging.getLogger("bentoml._internal.server.http_app").addFilter(_QuietValidationErrors())


def _invalid(title: str, errors: list[dict[str, Any]]) -> ValidationError:
    """A pydantic ValidationError from our own checks, so BentoML answers 400 exactly as for schema errors."""
    details: list[InitErrorDetails] = [
        {
            "type": PydanticCustomError(
                str(e.get("type", "invalid")), str(e.get("msg", "")).replace("{", "(").replace("}", ")")
            ),
            "loc": tuple(e.get("loc") or ()),
            "input": None,
        }
        for e in errors
    ]
    return ValidationError.from_exception_data(title, details)


@dataclass(frozen=True)
class _Job:
    """One /rank request waiting for a forward pass."""

    rows: list[dict[str, Any]]
    enqueued: float  # time.perf_counter() when queued


class Overloaded(ServiceUnavailable):
    """Adaptive batching shed the request: it would have waited past RECPLANE_SERVE_MAX_LATENCY_MS."""


def _overloaded() -> NoReturn:
    raise Overloaded("overloaded: the request would wait longer than RECPLANE_SERVE_MAX_LATENCY_MS; retry later")


def _current() -> RecplaneServing | None:
    try:
        return bentoml.get_current_service()  # type: ignore[no-any-return]
    except Exception:  # not set until the worker has created the instance
        return None


def _guard_settings() -> tuple[int, str]:
    svc = _current()
    return CONFIG.max_body_bytes, (svc.model_version if svc is not None else "")


def _guard_metrics() -> ServingMetrics | None:
    svc = _current()
    return svc.metrics if svc is not None else None


async def _model_info(_: Request) -> JSONResponse:
    svc = _current()
    scorer = svc.scorer if svc is not None else None
    if scorer is None:
        return JSONResponse(
            error_body(
                [{"field": "model", "msg": "the model is not loaded yet; retry when /readyz is 200", "type": "loading"}]
            ),
            status_code=503,
        )
    info = scorer.info(CONFIG)
    return JSONResponse(info.model_dump(mode="json", by_alias=True))


_info_app = Starlette(routes=[Route("/model", _model_info, methods=["GET"])])


@bentoml.asgi_app(_info_app, path="/", name="model-info")
@bentoml.service(
    name=SERVICE_NAME,
    workers=CONFIG.workers,
    logging={"access": {"enabled": CONFIG.access_log}},
    traffic={
        "timeout": CONFIG.timeout_s,
        **({"max_concurrency": CONFIG.max_concurrency} if CONFIG.max_concurrency else {}),
    },
)
class RecplaneServing:
    """Serves the model version named by RECPLANE_MODEL_URI."""

    def __init__(self) -> None:
        self.config = CONFIG
        self.metrics = ServingMetrics()
        self.scorer: Scorer | None = None
        self.load_error: str | None = None
        self._dispatch: Callable[[_Job], Awaitable[np.ndarray | None]] | None = None
        # Load in the background: /livez answers at once, /readyz turns 200 when the model is in.
        self._loader = threading.Thread(target=self._load, name="recplane-model-load", daemon=True)
        self._loader.start()

    def _load(self) -> None:
        started = time.perf_counter()
        try:
            scorer = Scorer.load(self.config.require_model_uri(), self.config)
        except Exception as exc:  # reported on /livez and in the log; the pod restarts
            self.load_error = f"{type(exc).__name__}: {exc}"
            log.error("cannot load model %s: %s", self.config.model_uri, self.load_error)
            return
        self.metrics.model_info.labels(scorer.version, scorer.model_type, scorer.variant).set(1)
        self.scorer = scorer
        log.info(
            "serving model version %s (%s, %s) from %s, loaded in %.1fs",
            scorer.version,
            scorer.model_type,
            scorer.variant,
            scorer.uri,
            time.perf_counter() - started,
        )
        target = configured_target(self.config.require_model_uri())
        if target is not None:  # continuous training: swap in each new promoted version
            VersionFollower(target, lambda: self.model_version, self._swap, poll_seconds()).start()

    def _swap(self, uri: str) -> None:
        """Load `uri` completely, then replace the scorer; requests in flight keep the one they hold."""
        scorer = Scorer.load(uri, self.config)
        self.metrics.model_info.labels(scorer.version, scorer.model_type, scorer.variant).set(1)
        old, self.scorer = self.scorer, scorer
        if old is not None:
            self.metrics.model_info.labels(old.version, old.model_type, old.variant).set(0)

    @property
    def model_version(self) -> str:
        return self.scorer.version if self.scorer is not None else ""

    def __is_ready__(self) -> bool:
        return self.scorer is not None

    def __is_alive__(self) -> bool:
        return self.load_error is None

    def _ready_scorer(self) -> Scorer:
        if self.scorer is None:
            raise ServiceUnavailable(self.load_error or "the model is still loading; retry when /readyz is 200")
        return self.scorer

    def _batcher(self) -> Callable[[_Job], Awaitable[np.ndarray | None]]:
        """BentoML's adaptive batching dispatcher over `_score_groups`, created on first use (in the event loop)."""
        if self._dispatch is None:
            dispatcher: CorkDispatcher[_Job, np.ndarray] = CorkDispatcher(
                max_latency_in_ms=self.config.max_latency_ms,
                max_batch_size=self.config.max_batch_size,
                fallback=_overloaded,
                get_batch_size=lambda _: 1,  # one request is one unit of the batch
            )
            self._dispatch = dispatcher(self._score_groups)
        return self._dispatch

    async def _score_groups(self, jobs: Sequence[_Job]) -> list[np.ndarray]:
        """One forward pass over the rows of every merged request, on the event loop thread.

        Deliberately not in a worker thread: transform and forward are many short native calls that
        each release and re-take the GIL, and a thread competing with a busy event loop waits up to
        the 5 ms switch interval for every one of them (measured: 3 ms of work took 200 ms). The
        loop is blocked for one forward pass instead; requests arriving meanwhile join the next batch.
        """
        scorer = self._ready_scorer()
        started = time.perf_counter()
        version = scorer.version
        for job in jobs:
            self.metrics.batch_wait_seconds.labels(version).observe(started - job.enqueued)
        scores = scorer.score_groups([job.rows for job in jobs])
        self.metrics.batch_requests.labels(version).observe(len(jobs))
        self.metrics.batch_rows.labels(version).observe(sum(len(job.rows) for job in jobs))
        self.metrics.forward_seconds.labels(version).observe(time.perf_counter() - started)
        return scores

    @bentoml.api
    async def rank(self, request: RankRequest, /) -> RankResponse:
        """Score `candidates` for `user` in `context`; items come back best first."""
        scorer = self._ready_scorer()
        try:
            rows = scorer.rank_rows(request)
        except RequestInvalid as exc:
            raise _invalid("RankRequest", exc.errors) from None
        self.metrics.candidates.labels(scorer.version).observe(len(rows))
        scores = await self._batcher()(_Job(rows, time.perf_counter()))
        if scores is None:  # the dispatcher gave up on the request (its fallback raises; this is belt and braces)
            _overloaded()
        return scorer.ranked(request, scores)

    @bentoml.api
    async def recall(self, request: RecallRequest, /) -> RecallResponse:
        """The top `k` items of the item index for `user` in `context` (inline, for the reason in _score_groups)."""
        scorer = self._ready_scorer()
        try:
            return scorer.recall(request)
        except RequestInvalid as exc:
            raise _invalid("RecallRequest", exc.errors) from None
        except EndpointNotSupported as exc:
            raise NotFound(str(exc)) from None

    def info(self) -> ModelInfo:
        return self._ready_scorer().info(self.config)


cast("bentoml.Service[RecplaneServing]", RecplaneServing).add_asgi_middleware(
    HttpGuard, guarded=GUARDED_PATHS, settings=_guard_settings, metrics=_guard_metrics
)
