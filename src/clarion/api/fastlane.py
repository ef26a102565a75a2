"""The send endpoints without the framework's per-request machinery.

``POST /v1/messages`` and ``POST /v1/events`` carry nearly all of Clarion's traffic, and FastAPI's routing,
dependency solving and body handling cost more than Clarion's own work on them. This middleware serves those
two paths itself — the same request models (validated by pydantic straight from the JSON bytes), the same
route functions, the same answers and errors — and passes every other request on to FastAPI. It sits outside
the FastAPI application (see ``app.create_app``), so none of the framework's own middleware runs for a send.
The routes stay declared in FastAPI, so they are documented in OpenAPI like the rest."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import pydantic
import pydantic_core
from starlette.types import ASGIApp, Receive, Scope, Send

from clarion.api import problems, schemas
from clarion.api.responses import JSON
from clarion.api.routes import messages
from clarion.domain import approval, errors

log = logging.getLogger(__name__)
Handler = Callable[[Any, Any], Awaitable[Any]]
ROUTES: dict[str, tuple[type[pydantic.BaseModel], Handler]] = {
    "/v1/messages": (schemas.SendIn, messages.send),
    "/v1/events": (schemas.EventIn, messages.event),
}


#: bodies larger than this are parsed and validated on a thread (see ``_validated``)
LARGE_BODY = 64 * 1024


async def _validated(model: type[pydantic.BaseModel], raw: bytes) -> pydantic.BaseModel:
    """The request model read from ``raw``. A large body (up to the 1 MiB limit, some 200,000 values) takes tens
    of milliseconds to parse and check; on the event loop that would stall every other request for as long. On a
    thread, the checks written in Python give the loop its turn every few milliseconds, and only the parse itself
    holds it, once. Parsed as the validator would (exact big integers, no NaN), then validated the same way."""
    if len(raw) <= LARGE_BODY:
        return model.model_validate_json(raw)

    def validate() -> pydantic.BaseModel:
        try:
            document = pydantic_core.from_json(raw, allow_inf_nan=False)
        except ValueError as exc:
            error = {
                "type": "json_invalid",
                "loc": (),
                "msg": "invalid JSON",
                "input": None,
                "ctx": {"error": str(exc)},
            }
            raise pydantic.ValidationError.from_exception_data(model.__name__, [error]) from None  # type: ignore[list-item]
        return model.model_validate(document)

    return await asyncio.to_thread(validate)


class FastLane:
    def __init__(self, app: ASGIApp, services: Callable[[], Any]) -> None:
        self.app = app
        self.services = services

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = ROUTES.get(scope["path"]) if scope["type"] == "http" and scope["method"] == "POST" else None
        if route is None:
            return await self.app(scope, receive, send)
        chunks = []
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client left (or BodyLimit already answered 413)
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        model, handler = route
        try:
            approval.require(scope["state"]["caller"].roles, approval.SEND)  # a key that may send
            body = await _validated(model, b"".join(chunks))
            response = await handler(body, self.services())
        except pydantic.ValidationError as exc:
            response = problems.validation_failed([{**e, "loc": ("body", *e["loc"])} for e in exc.errors()])
        except errors.InvalidInput as exc:
            response = problems.invalid_input(exc)
        except Exception:
            log.exception("%s failed", scope["path"])
            response = JSON(problems.error_body("internal_error", "internal error; it was logged"), status_code=500)
        await response(scope, receive, send)
