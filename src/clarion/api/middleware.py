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
    """Refuse request bodies over ``limit`` bytes with 413, whether or not Content-Length is declared."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    def _too_large(self) -> dict[str, Any]:
        return error_body("payload_too_large", f"request body exceeds {self.limit} bytes", {"limit": self.limit})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self.limit:
                return await _answer(send, 413, self._too_large())
        seen = 0
        refused = False

        async def limited() -> Message:
            # Over the limit mid-stream: answer 413 ourselves, tell the app the client left, drop its answer.
            nonlocal seen, refused
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit and not refused:
                    refused = True
                    await _answer(send, 413, self._too_large())
            return {"type": "http.disconnect"} if refused else message

        async def guarded_send(message: Message) -> None:
            if not refused:
                await send(message)

        await self.app(scope, limited, guarded_send)
