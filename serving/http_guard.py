"""ASGI middleware in front of the scoring endpoints: refuse what BentoML would turn into a 5xx, count the rest.

BentoML parses a body by its Content-Type; a malformed multipart or form body
raises inside its handler and comes back as 500, and it reads bodies of any size.
This guard answers those itself with 4xx before BentoML sees them: a body over the
configured limit gets 413, a Content-Type other than JSON gets 415. It also gives
every 4xx one shape, `{"error": "...", "detail": [{"field": "candidates[3].item_id",
"loc": [...], "msg": ..., "type": ...}]}` (BentoML's own 4xx bodies are rewritten
into it), and records request counts and latency per endpoint.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

JSON_MEDIA_TYPES = ("application/json", "")
_CHECKED_HEADERS = (b"content-type", b"content-length")


def field_path(loc: Sequence[Any]) -> str:
    """`["candidates", 3, "item_id"]` -> `candidates[3].item_id`; the empty path is the body itself."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "body"


def error_body(errors: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """The 4xx body: a one-line summary naming each field, and the errors one by one."""
    detail = []
    for e in errors:
        loc = list(e.get("loc") or [])
        detail.append(
            {
                "field": e.get("field") or field_path(loc),
                "loc": loc,
                "msg": str(e.get("msg", "")),
                "type": str(e.get("type", "invalid")),
            }
        )
    summary = "; ".join(f"{d['field']}: {d['msg']}" for d in detail[:5])
    if len(detail) > 5:
        summary += f"; and {len(detail) - 5} more"
    return {"error": summary, "detail": detail}


def _reshape(status: int, raw: bytes) -> bytes:
    """Rewrite one of BentoML's 4xx bodies into the guard's shape."""
    try:
        doc = json.loads(raw) if raw else {}
    except ValueError:
        doc = {"error": raw.decode("utf-8", "replace")}
    if isinstance(doc, list):  # BentoML answers some 4xx with a one-element list
        doc = doc[0] if doc and isinstance(doc[0], dict) else {"error": str(doc)}
    if not isinstance(doc, dict):
        doc = {"error": str(doc)}
    errors = doc.get("detail")
    if not isinstance(errors, list) or not errors:
        where = "path" if status in (404, 405) else "body"
        errors = [
            {"field": where, "loc": [], "msg": str(doc.get("error") or f"HTTP {status}"), "type": f"http_{status}"}
        ]
    return json.dumps(error_body([e if isinstance(e, dict) else {"msg": str(e)} for e in errors])).encode()


class HttpGuard:
    """Pure ASGI middleware for the POST endpoints in `guarded`; other paths pass straight through.

    `settings()` returns (max body bytes, model version) when called per request, so the limit and
    the metrics label follow the loaded model; `metrics()` returns the ServingMetrics or None.
    """

    def __init__(
        self,
        app: ASGIApp,
        guarded: Sequence[str],
        settings: Callable[[], tuple[int, str]],
        metrics: Callable[[], Any],
    ) -> None:
        self.app = app
        self.guarded = frozenset(guarded)
        self.settings = settings
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] != "http" or path not in self.guarded:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        max_bytes, version = self.settings()
        # One wrapper around `send`: it notes the status for the metrics and reshapes 4xx and 503 bodies.
        reply = _ErrorReshaper(send, loaded=bool(version))
        try:
            refusal = self._check_headers(scope, max_bytes)
            if refusal is None and scope.get("method") == "POST":
                body, outcome = await _read_body(receive, max_bytes)
                if outcome == "disconnected":
                    reply.status = 499  # the client went away before sending its body; nobody to answer
                    return
                if outcome == "too_big":
                    refusal = (413, _too_large(max_bytes))
                else:
                    receive = _replay(body, receive)
            if refusal is not None:
                await _send_json(reply.passthrough, *refusal)
            else:
                await self.app(scope, receive, reply)
        finally:
            registry = self.metrics()
            if registry is not None:
                endpoint = path.strip("/") or "root"
                registry.requests.labels(endpoint, str(reply.status), version).inc()
                registry.latency.labels(endpoint, version).observe(time.perf_counter() - started)

    @staticmethod
    def _check_headers(scope: Scope, max_bytes: int) -> tuple[int, dict[str, Any]] | None:
        headers = {}
        for key, value in scope.get("headers", ()):
            name = key.lower()
            if name in _CHECKED_HEADERS:
                headers[name] = value.decode("latin-1")
        media_type = headers.get(b"content-type", "").split(";")[0].strip().lower()
        if media_type not in JSON_MEDIA_TYPES:
            return 415, error_body(
                [
                    {
                        "field": "Content-Type",
                        "msg": f"{media_type!r} is not accepted; send the body as application/json",
                        "type": "unsupported_media_type",
                    }
                ]
            )
        length = headers.get(b"content-length")
        if length is not None:
            if not length.isdigit():
                return 400, error_body(
                    [{"field": "Content-Length", "msg": "must be a byte count", "type": "invalid_header"}]
                )
            if int(length) > max_bytes:
                return 413, _too_large(max_bytes)
        return None


def _too_large(max_bytes: int) -> dict[str, Any]:
    return error_body(
        [
            {
                "field": "body",
                "msg": f"the request body is larger than {max_bytes} bytes (RECPLANE_SERVE_MAX_BODY_BYTES); "
                "send fewer candidates per call",
                "type": "body_too_large",
            }
        ]
    )


async def _read_body(receive: Receive, max_bytes: int) -> tuple[bytes, str]:
    """(body, "complete"), or stop early with "too_big" past `max_bytes` or "disconnected"."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return b"", "disconnected"
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > max_bytes:
            return b"", "too_big"
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks), "complete"


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive channel that gives the buffered body first, then the client's own events (its disconnect)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _send_json(send: Send, status: int, doc: dict[str, Any]) -> None:
    payload = json.dumps(doc).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": payload, "more_body": False})


def _unavailable(loaded: bool) -> bytes:
    """BentoML hides the reason of every 5xx; a 503 here has one of two causes, both worth saying."""
    if loaded:
        msg = (
            "the server is overloaded: the request would wait longer than RECPLANE_SERVE_MAX_LATENCY_MS "
            "for a forward pass; retry with backoff, or add replicas"
        )
        error = {"field": "server", "loc": [], "msg": msg, "type": "overloaded"}
    else:
        msg = "the model is not loaded yet; retry when /readyz answers 200"
        error = {"field": "model", "loc": [], "msg": msg, "type": "loading"}
    return json.dumps(error_body([error])).encode()


class _ErrorReshaper:
    """Passes 2xx/3xx and most 5xx through; buffers a 4xx or 503 body and rewrites it into the guard's shape.

    `status` is the status code sent (500 until a response starts).
    """

    def __init__(self, send: Send, loaded: bool) -> None:
        self.send = send
        self.loaded = loaded
        self.status = 500
        self.start: Message | None = None
        self.chunks: list[bytes] = []

    async def passthrough(self, message: Message) -> None:
        """Send a response of the guard's own unchanged, noting its status."""
        if message["type"] == "http.response.start":
            self.status = int(message["status"])
        await self.send(message)

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            status = int(message["status"])
            if 400 <= status < 500 or status == 503:
                self.start = message
                return
            self.status = status
            await self.send(message)
            return
        if self.start is None or message["type"] != "http.response.body":
            await self.send(message)
            return
        self.chunks.append(message.get("body", b""))
        if message.get("more_body", False):
            return
        status = int(self.start["status"])
        payload = _unavailable(self.loaded) if status == 503 else _reshape(status, b"".join(self.chunks))
        headers = [
            (k, v) for k, v in self.start.get("headers", []) if k.lower() not in (b"content-length", b"content-type")
        ]
        headers += [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
        if status == 503:
            headers.append((b"retry-after", b"1"))
        self.status = status
        await self.send({"type": "http.response.start", "status": status, "headers": headers})
        await self.send({"type": "http.response.body", "body": payload, "more_body": False})
