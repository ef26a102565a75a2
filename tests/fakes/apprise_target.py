"""A service Apprise notifies, on loopback: Apprise's JSON notification (``json://user:password@host:port/path``).

It speaks what Apprise's ``json://`` plugin sends: a POST of ``{"version": "1.0", "title", "message", "type",
"attachments"}`` as ``application/json``, with HTTP Basic credentials from the URL's userinfo. It refuses a
missing or wrong password with 401, as a real receiver would, so the credentials in the account's URL are proven
to arrive; it can be told to fail (``status``) or to answer late (``delay``). Every request is recorded.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

USER = "clarion"
PASSWORD = "apprise-target-password-0123"


@dataclass
class FakeAppriseTarget:
    user: str = USER
    password: str = PASSWORD
    #: the HTTP status it answers an authenticated notification with
    status: int = 200
    delay: float = 0.0
    #: the raw (still percent-encoded) path of every request, whatever the answer
    requests: list[str] = field(default_factory=list)
    notifications: list[dict[str, Any]] = field(default_factory=list)
    port: int = 0
    _runner: web.AppRunner | None = None

    def url(self, path: str = "/hook", *, password: str | None = None) -> str:
        """The Apprise URL of this target (the account's ``url``)."""
        return f"json://{self.user}:{password or self.password}@127.0.0.1:{self.port}{path}"

    async def __aenter__(self) -> FakeAppriseTarget:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, shutdown_timeout=0.5, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.port = self._runner.addresses[0][1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _handle(self, request: web.Request) -> web.Response:
        self.requests.append(request.raw_path)
        expected = "Basic " + base64.b64encode(f"{self.user}:{self.password}".encode()).decode()
        given = request.headers.get("Authorization", "")
        if not hmac.compare_digest(expected.encode(), given.encode()):
            return web.json_response({"error": "unauthorized"}, status=401)
        if request.method != "POST" or request.content_type != "application/json":
            return web.json_response({"error": "a JSON POST is expected"}, status=415)
        document = orjson.loads(await request.read())
        if document.get("version") != "1.0" or not isinstance(document.get("message"), str):
            return web.json_response({"error": "not an Apprise JSON notification"}, status=400)
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.status >= 300:
            return web.json_response({"error": "scripted failure"}, status=self.status)
        self.notifications.append({"path": request.raw_path, **document})
        return web.json_response({"ok": True})
