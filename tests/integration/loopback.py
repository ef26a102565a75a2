"""A scripted HTTP server on 127.0.0.1 for integration tests (not a test module).

Tests talk to a real socket instead of mocking the HTTP client, so headers, bodies, timeouts and status
handling are exercised exactly as in production. Usage::

    from tests.integration.loopback import LoopbackServer, Reply

    async with LoopbackServer(Reply(503, headers={"Retry-After": "7"}), Reply(200, {"id": "x"})) as server:
        ...  # call server.url + "/path"; inspect server.requests afterwards

Replies are served in order; once the script runs out, ``default`` answers. For replies that depend on
the request (concurrent senders, signature checks) pass ``handler``: it gets the ``Recorded`` request and
returns a ``Reply`` (or ``None`` to fall back to the script).
"""

from __future__ import annotations

import asyncio
import inspect
import socket
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web
from multidict import CIMultiDict


@dataclass(frozen=True)
class Reply:
    status: int = 200
    json: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None  # raw body, used instead of ``json`` when given
    delay: float = 0.0  # seconds to wait before answering (for client timeouts)


@dataclass(frozen=True)
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    headers: CIMultiDict[str]  # case-insensitive lookups
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


Handler = Callable[[Recorded], Reply | Awaitable[Reply | None] | None]


class LoopbackServer:
    def __init__(self, *replies: Reply, default: Reply | None = None, handler: Handler | None = None) -> None:
        self.script: deque[Reply] = deque(replies)
        self.default = default or Reply(200, {"ok": True})
        self.handler = handler
        self.requests: list[Recorded] = []
        self.port = 0
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def add(self, *replies: Reply) -> None:
        """Append replies to the script."""
        self.script.extend(replies)

    async def _serve(self, request: web.Request) -> web.StreamResponse:
        recorded = Recorded(
            method=request.method,
            path=request.path,
            query=dict(request.query),
            headers=CIMultiDict(request.headers),
            body=await request.read(),
        )
        self.requests.append(recorded)
        reply = None
        if self.handler is not None:
            reply = self.handler(recorded)
            if inspect.isawaitable(reply):
                reply = await reply
        if reply is None:
            reply = self.script.popleft() if self.script else self.default
        if reply.delay:
            await asyncio.sleep(reply.delay)
        if reply.body is not None:
            return web.Response(status=reply.status, body=reply.body, headers=reply.headers)
        body = b"" if reply.json is None else orjson.dumps(reply.json)
        headers = {"Content-Type": "application/json", **reply.headers}
        return web.Response(status=reply.status, body=body, headers=headers)

    async def __aenter__(self) -> LoopbackServer:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._serve)
        self._runner = web.AppRunner(app, shutdown_timeout=0.5, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (for servers that need one up front)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
