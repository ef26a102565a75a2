"""The segment holder: the one process of a deployment that builds and follows the segment index, and answers the
others (``segments.remote``) over a small internal HTTP app.

Every call is a signed POST with a JSON object body: ``X-Clarion-Signature`` is the HMAC-SHA256
(``remote.signature``) of ``X-Clarion-Timestamp``, the method, the path and the body, under a key derived from the
deployment's ``CLARION_SECRET_KEY``, compared in constant time; a wrong one, or a timestamp more than
``remote.MAX_SKEW_SECONDS`` from this clock, is a 401. The server listens only once the index is built (the
app's lifespan builds it), so a caller meanwhile finds nothing listening rather than an empty index.

    POST /count           {"conditions": TREE, "now": ISO 8601 | null}  -> {"count": N}
    POST /sample          {"conditions": TREE, "n": 1..10000, "seed": INT | null}  -> {"user_ids": [...]}
    POST /audience        {"audience": SPEC}  -> the sorted user ids, one per line, streamed; X-Clarion-Audience-Size
    POST /audience:count  {"audience": SPEC}  -> {"count": N}
    POST /users:changed   {"user_ids": [...]}  -> {}   (re-read these users now)
    POST /events:tracked  {}  -> {}                     (catch up with events now)
    POST /lists:changed   {}  -> {}                     (reload changed ID lists now)
    GET  /healthz         -> {"status": "ok"} once the index is built (unsigned; says nothing of the users)

Bad input is a 4xx ``{"error": {"code", "message", "details"}}`` naming the field, the same body the public API
gives, so the asking process raises the same error and its API answers as the embedded one would.
"""

from __future__ import annotations

import contextlib
import hmac
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import datetime
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from clarion.domain import errors
from clarion.segments import query, remote
from clarion.segments import service as local

MAX_SAMPLE = 10_000
MAX_HINTED_USERS = 1_000_000
MAX_BODY_BYTES = 64 * 1_048_576
LINES_PER_CHUNK = 10_000

Handler = Callable[[dict[str, Any]], Awaitable[Response]]


def _json(body: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def _error(status: int, code: str, message: str, details: Any = None) -> Response:
    return _json({"error": {"code": code, "message": message, "details": details}}, status)


def _bad(field: str, message: str) -> errors.InvalidInput:
    return errors.InvalidInput(f"{field}: {message}", code="invalid_request", details={"field": field})


def _fields(body: dict[str, Any], allowed: set[str], required: set[str]) -> None:
    for name in body:
        if name not in allowed:
            raise _bad(name, "unknown field")
    for name in required - set(body):
        raise _bad(name, "is required")


def _int(body: dict[str, Any], name: str, low: int, high: int) -> int:
    value = body.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise _bad(name, f"must be an integer from {low} to {high}")
    return value


def _now(body: dict[str, Any]) -> datetime | None:
    value = body.get("now")
    if value is None:
        return None
    try:
        at = datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        at = None
    if at is None or at.tzinfo is None:
        raise _bad("now", "must be an ISO 8601 date-time with its offset")
    return at


def _lines(ids: list[str]) -> Iterator[bytes]:
    """The ids as newline-terminated UTF-8 lines, :data:`LINES_PER_CHUNK` to a chunk of the stream."""
    for start in range(0, len(ids), LINES_PER_CHUNK):
        yield ("\n".join(ids[start : start + LINES_PER_CHUNK]) + "\n").encode()


def create_app(
    segments: local.SegmentService,
    secret_key: str,
    *,
    on_start: Callable[[], Awaitable[None]],
    on_stop: Callable[[], Awaitable[None]],
) -> Starlette:
    """The holder's app over a running ``segments`` service; ``on_start`` builds the index before the first
    request is served, ``on_stop`` releases what the process holds."""
    key = remote.holder_key(secret_key)

    async def count(body: dict[str, Any]) -> Response:
        _fields(body, {"conditions", "now"}, {"conditions"})
        node = query.parse(body["conditions"])
        return _json({"count": await segments.count(node, _now(body))})

    async def sample(body: dict[str, Any]) -> Response:
        _fields(body, {"conditions", "n", "seed"}, {"conditions", "n"})
        node = query.parse(body["conditions"])
        seed = body.get("seed")
        if seed is not None:
            seed = _int(body, "seed", 0, 2**63 - 1)
        return _json({"user_ids": await segments.sample(node, _int(body, "n", 1, MAX_SAMPLE), seed)})

    async def audience(body: dict[str, Any]) -> Response:
        _fields(body, {"audience"}, {"audience"})
        ids = await segments.audience(body["audience"])
        return StreamingResponse(
            _lines(ids), media_type="text/plain; charset=utf-8", headers={remote.SIZE_HEADER: str(len(ids))}
        )

    async def count_audience(body: dict[str, Any]) -> Response:
        _fields(body, {"audience"}, {"audience"})
        return _json({"count": await segments.count_audience(body["audience"])})

    async def users_changed(body: dict[str, Any]) -> Response:
        _fields(body, {"user_ids"}, {"user_ids"})
        user_ids = body["user_ids"]
        if not isinstance(user_ids, list) or not all(isinstance(u, str) for u in user_ids):
            raise _bad("user_ids", "must be a list of user ids")
        if len(user_ids) > MAX_HINTED_USERS:
            raise _bad("user_ids", f"at most {MAX_HINTED_USERS} at once")
        await segments.users_changed(user_ids)
        return _json({})

    async def events_tracked(body: dict[str, Any]) -> Response:
        _fields(body, set(), set())
        await segments.events_tracked()
        return _json({})

    async def lists_changed(body: dict[str, Any]) -> Response:
        _fields(body, set(), set())
        await segments.lists_changed()
        return _json({})

    def signed(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            declared = request.headers.get("content-length", "0")
            if not declared.isdigit() or int(declared) > MAX_BODY_BYTES:
                return _error(413, "too_large", f"request bodies are at most {MAX_BODY_BYTES} bytes")
            payload = await request.body()
            if len(payload) > MAX_BODY_BYTES:
                return _error(413, "too_large", f"request bodies are at most {MAX_BODY_BYTES} bytes")
            stamp = request.headers.get(remote.TIMESTAMP_HEADER, "")
            given = request.headers.get(remote.SIGNATURE_HEADER, "")
            expected = remote.signature(key, stamp, request.method, request.url.path, payload)
            fresh = stamp.isdigit() and abs(time.time() - int(stamp)) <= remote.MAX_SKEW_SECONDS
            if not (fresh and hmac.compare_digest(given.encode(), expected.encode())):
                return _error(401, "unauthorized", "a segment holder call must be signed with this deployment's key")
            try:
                body = orjson.loads(payload)
            except orjson.JSONDecodeError as exc:
                return _error(422, "invalid_request", f"malformed JSON: {exc}", {"field": "body"})
            if not isinstance(body, dict):
                return _error(422, "invalid_request", "body: must be a JSON object", {"field": "body"})
            try:
                return await handler(body)
            except errors.InvalidInput as exc:
                return _error(exc.status, exc.code, exc.message, exc.details)

        return endpoint

    async def healthz(_: Request) -> Response:
        return _json({"status": "ok"})

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        await on_start()
        try:
            yield
        finally:
            await on_stop()

    routes = [Route("/healthz", healthz, methods=["GET"])]
    for path, handler in (
        ("/count", count),
        ("/sample", sample),
        ("/audience", audience),
        ("/audience:count", count_audience),
        ("/users:changed", users_changed),
        ("/events:tracked", events_tracked),
        ("/lists:changed", lists_changed),
    ):
        routes.append(Route(path, signed(handler), methods=["POST"]))
    return Starlette(routes=routes, lifespan=lifespan)
