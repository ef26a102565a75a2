"""Pure-ASGI guards that run before FastAPI parses anything: authentication and the body-size limit.

Authentication runs first so that a caller without a valid key learns nothing else (not even how its JSON is
malformed); both answer with the API's JSON error body."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from clarion.api.problems import error_body
from clarion.api.responses import JSON


async def _disconnected() -> Message:
    return {"type": "http.disconnect"}


async def _answer(send: Send, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
    await JSON(body, status_code=status, headers=headers)({"type": "http"}, _disconnected, send)


class Authenticate:
    """Every ``/v1/`` request needs ``Authorization: Bearer <key>``; the caller is put in ``request.state``."""

    def __init__(self, app: ASGIApp, services: Callable[[], Any], prefix: str = "/v1/") -> None:
        self.app = app
        self.services = services
        self.prefix = prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(self.prefix):
            return await self.app(scope, receive, send)
        token = ""
        for name, value in scope["headers"]:
            if name == b"authorization":
                scheme, _, token = value.decode("latin-1").partition(" ")
                token = token.strip() if scheme.lower() == "bearer" else ""
                break
        challenge = {"WWW-Authenticate": "Bearer"}
        if not token:
            message = "missing API key: send 'Authorization: Bearer <key>'"
            return await _answer(send, 401, error_body("unauthorized", message), challenge)
        caller = await self.services().keys.verify(token)
        if caller is None:
            return await _answer(send, 401, error_body("unauthorized", "invalid API key"), challenge)
        scope.setdefault("state", {})["caller"] = caller
        await self.app(scope, receive, send)


class BodyLimit:
    """Refuse request bodies over ``limit`` bytes with 413, whether or not Content-Length is declared. The bulk
    paths in ``uploads`` (user batches, events, ID-list files) have their own, larger limit."""

    def __init__(self, app: ASGIApp, limit: int, *, uploads: frozenset[str] = frozenset(), upload_limit: int = 0):
        self.app = app
        self.limit = limit
        self.uploads = uploads
        self.upload_limit = max(upload_limit, limit)

    @staticmethod
    def _too_large(limit: int) -> dict[str, Any]:
        return error_body("payload_too_large", f"request body exceeds {limit} bytes", {"limit": limit})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self.upload_limit if scope["path"] in self.uploads else self.limit
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > limit:
                return await _answer(send, 413, self._too_large(limit))
        seen = 0
        refused = False

        async def limited() -> Message:
            # Over the limit mid-stream: answer 413 ourselves, tell the app the client left, drop its answer.
            nonlocal seen, refused
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit and not refused:
                    refused = True
                    await _answer(send, 413, self._too_large(limit))
            return {"type": "http.disconnect"} if refused else message

        async def guarded_send(message: Message) -> None:
            if not refused:
                await send(message)

        await self.app(scope, limited, guarded_send)
