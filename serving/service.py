"""The BentoML service: one model version, scored live.

Endpoints (JSON bodies, camelCase keys; 4xx bodies name the field):

* `POST /rank`: a user, a context and candidate items -> the candidates with scores, best
  first, plus the model version. Concurrent calls are merged into shared forward passes by
  BentoML's adaptive batching dispatcher (see "Why the dispatcher is used directly" below).
* `POST /recall`: a user and a context -> the top-K items of the two-tower item index.
* `POST /feedback`: a click (or none) and the dwell time on one item a /rank response returned;
  counted per model version for online CTR and, like every ranked impression, written to the
  event log when RECPLANE_EVENTS_URI is set (see recplane.serving.events).
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

import gc
import logging
import re
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn, cast

import bentoml
import numpy as np
from bentoml._internal.marshal.dispatcher import CorkDispatcher, Optimizer
from bentoml.exceptions import NotFound, ServiceUnavailable
from pydantic import ValidationError
from pydantic_core import InitErrorDetails, PydanticCustomError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from recplane.data.row_transform import RowBlock

from .config import ServingConfig
from .events import UNKNOWN_VERSION, RequestMemory, Served, event_log_from_config, id_string
from .follow import VersionFollower, configured_target, poll_seconds
from .http_guard import HttpGuard, error_body
from .metrics import ServingMetrics
from .schemas import (
    USER_ID,
    FeedbackRequest,
    FeedbackResponse,
    ModelInfo,
    RankRequest,
    RankResponse,
    RecallRequest,
    RecallResponse,
)
from .scoring import EndpointNotSupported, Ranking, Scorer
from .validation import RequestInvalid

log = logging.getLogger("recplane.serving")
CONFIG = ServingConfig.from_env()
GUARDED_PATHS = ("/rank", "/recall", "/feedback")
# Full URLs (scheme://host/path) of the scoring endpoints, for OpenTelemetry's exclusion list (RECPLANE_SERVE_TRACING).
UNTRACED_URLS = [f"^[a-z]+://[^/]*{re.escape(path)}$" for path in GUARDED_PATHS]
# Distinct model versions one worker labels click counts with; feedback naming further ones counts as unknown.
MAX_VERSION_LABELS = 64
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

    scorer: Scorer  # the version that validated the rows scores them, even if a newer one is swapped in
    block: RowBlock  # the candidates' rows
    enqueued: float  # time.perf_counter() when queued


class _NoIdleWait(Optimizer):
    """BentoML's batching cost model with its deliberate waiting turned off.

    CORK holds a request back while the recent average wait says more requests will come. Here
    the forward pass runs on the event loop and passes never overlap, so requests that arrive
    during one pass form the next batch anyway; waiting on top of that only adds latency, and it
    feeds itself (a longer wait raises the average that sets the next wait): at 50 requests/s it
    raised p50 from 14 to 96 ms. The cost model still drives load shedding past the deadline.
    """

    def trigger_refresh(self) -> None:
        super().trigger_refresh()
        self.wait = 0


def _freeze_heap() -> None:
    """Take every object alive now (modules, the model, its feature spec) out of the cyclic collector's sight.

    The collector's full pass walks every container object in the process: with torch, BentoML and a
    model loaded, half a million of them, 0.2-1 s with the event loop stopped. Under load such passes
    came every few seconds (rows of requests in flight outlive two young collections and count towards
    the next full one), and each stopped every request for as long: the open-loop latency tail. Frozen
    objects are never walked again, so a full pass walks what serving allocated since. They are still
    freed by reference counting: a Scorer holds no reference cycle, so a swapped-out version is released.
    """
    gc.collect()  # walks only what is not frozen yet: everything at start-up, the new version after a swap
    gc.freeze()


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
    tracing={} if CONFIG.tracing else {"excluded_urls": UNTRACED_URLS},
)
class RecplaneServing:
    """Serves the model version named by RECPLANE_MODEL_URI."""

    def __init__(self) -> None:
        self.config = CONFIG
        self.metrics = ServingMetrics()
        self.scorer: Scorer | None = None
        self.load_error: str | None = None
        self._dispatch: Callable[[_Job], Awaitable[np.ndarray | None]] | None = None
        # Online feedback: which version served a request id (for feedback that does not say), and the log.
        self.served = RequestMemory(self.config.events_tracked_requests)
        self._version_labels: set[str] = set()
        self.events = event_log_from_config(self.config, self.metrics)
        if self.events is not None:
            log.info("logging impressions and feedback to %s", self.config.events_uri)
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
        _freeze_heap()  # before /readyz turns 200, so no request waits for it
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
        del old
        _freeze_heap()

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
        """BentoML's adaptive batching dispatcher over `_score_blocks`, created on first use (in the event loop)."""
        if self._dispatch is None:
            dispatcher: CorkDispatcher[_Job, np.ndarray] = CorkDispatcher(
                max_latency_in_ms=self.config.max_latency_ms,
                max_batch_size=self.config.max_batch_size,
                fallback=_overloaded,
                get_batch_size=lambda _: 1,  # one request is one unit of the batch
            )
            dispatcher.optimizer = _NoIdleWait(dispatcher.max_latency)
            self._dispatch = dispatcher(self._score_blocks)
        return self._dispatch

    async def _score_blocks(self, jobs: Sequence[_Job]) -> list[np.ndarray]:
        """One forward pass over the rows of every merged request, on the event loop thread.

        Deliberately not in a worker thread: transform and forward are many short native calls that
        each release and re-take the GIL, and a thread competing with a busy event loop waits up to
        the 5 ms switch interval for every one of them (measured: 3 ms of work took 200 ms). The
        loop is blocked for one forward pass instead; requests arriving meanwhile join the next batch.
        """
        scores: dict[int, np.ndarray] = {}
        # One pass per model version: a single one, except while a new version is being swapped in.
        for scorer in {id(job.scorer): job.scorer for job in jobs}.values():
            own = [i for i, job in enumerate(jobs) if job.scorer is scorer]
            started = time.perf_counter()
            version = scorer.version
            for i in own:
                self.metrics.batch_wait_seconds.labels(version).observe(started - jobs[i].enqueued)
            for i, result in zip(own, scorer.score_blocks([jobs[i].block for i in own]), strict=True):
                scores[i] = result
            self.metrics.batch_requests.labels(version).observe(len(own))
            self.metrics.batch_rows.labels(version).observe(sum(jobs[i].block.size for i in own))
            self.metrics.forward_seconds.labels(version).observe(time.perf_counter() - started)
        return [scores[i] for i in range(len(jobs))]

    @bentoml.api(output_spec=RankResponse)
    async def rank(self, request: RankRequest, /) -> Response:
        """Score `candidates` for `user` in `context`; items come back best first (a RankResponse).

        The body is serialised here, not by BentoML from a RankResponse: the same bytes, without a model
        per item, sent with a Content-Length rather than in chunks.
        """
        scorer = self._ready_scorer()
        try:
            block = scorer.rank_block(request)
        except RequestInvalid as exc:
            raise _invalid("RankRequest", exc.errors) from None
        self.metrics.candidates.labels(scorer.version).observe(block.size)
        scores = await self._batcher()(_Job(scorer, block, time.perf_counter()))
        if scores is None:  # the dispatcher gave up on the request (its fallback raises; this is belt and braces)
            _overloaded()
        if not request.request_id:  # feedback names the impression by it
            request.request_id = uuid.uuid4().hex
        ranking = scorer.ranking(request, scores)
        self._record_impressions(request, ranking)
        return Response(ranking.json(), media_type="application/json")

    def _record_impressions(self, request: RankRequest, ranking: Ranking) -> None:
        """Count the returned items per version, remember the request, buffer the impression events.

        Appends only (the event log writes on its own thread); nothing here may fail the request.
        """
        try:
            shown = self.config.events_top_k or None
            version = ranking.model_version
            request_id = cast(str, ranking.request_id)
            served_at = time.time()
            user_id = id_string(request.user.get(USER_ID))
            self.metrics.impressions.labels(version).inc(len(ranking.indices[:shown]))
            self._version_labels.add(version)
            if self.events is None:
                self.served.remember(request_id, Served.of(version, served_at, user_id))
                return
            item_ids = [str(item) for item in ranking.item_ids[:shown]]
            scores = ranking.scores[:shown]
            # Remembered with positions and scores, so a feedback row matches its impression row.
            self.served.remember(request_id, Served.of(version, served_at, user_id, item_ids, scores))
            self.events.log_impressions(request_id, user_id, version, served_at, item_ids, scores)
        except Exception:  # a bug here must cost the log an event, never the client its ranking
            log.exception("could not record the impressions of request %s", ranking.request_id)

    @bentoml.api
    async def feedback(self, request: FeedbackRequest, /) -> FeedbackResponse:
        """What the user did with one ranked item: a click per model version, and a feedback event.

        Attributed to `modelVersion` when the client sends it (from the /rank response), else to the
        version this worker served the request id with, else to `unknown`. Works before the model is
        loaded: feedback for impressions an earlier pod served is not lost.
        """
        arrived = time.time()
        served = self.served.get(request.request_id)
        version = request.model_version or (served.model_version if served is not None else None)
        label = self._version_label(version)
        if request.click:
            self.metrics.clicks.labels(label).inc()
        logged = False
        if self.events is not None:
            item_id = str(request.item_id)
            user_id = id_string(request.user_id)
            position, score = served.position(item_id) if served is not None else (None, None)
            if user_id is None and served is not None:
                user_id = served.user_id
            logged = self.events.log_feedback(
                request.request_id,
                item_id,
                request.click,
                request.dwell_seconds,
                user_id,
                version,
                served.served_at if served is not None else None,
                arrived,
                position=request.position if request.position is not None else position,
                score=score,
            )
        return FeedbackResponse(
            request_id=request.request_id, item_id=request.item_id, model_version=label, logged=logged
        )

    def _version_label(self, version: str | None) -> str:
        """The metric label of `version`: itself, or `unknown` (none given, or past MAX_VERSION_LABELS)."""
        if version is None:
            return UNKNOWN_VERSION
        if version not in self._version_labels:
            if len(self._version_labels) >= MAX_VERSION_LABELS:
                return UNKNOWN_VERSION
            self._version_labels.add(version)
        return version

    @bentoml.on_shutdown
    def close_event_log(self) -> None:
        """Write the buffered events before the worker exits."""
        if self.events is not None:
            written = self.events.close()
            log.info("event log closed: %d events written at shutdown", written)

    @bentoml.api
    async def recall(self, request: RecallRequest, /) -> RecallResponse:
        """The top `k` items of the item index for `user` in `context` (inline, for the reason in _score_blocks)."""
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
