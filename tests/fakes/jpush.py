"""A fake JPush Push API v3 on loopback.

``POST /v3/push`` checks HTTP Basic ``app_key:master_secret`` (``1004`` with 401 otherwise, ``1008`` for an
unknown app key), the push object's shape (``1002``/``1003``), and answers ``{"sendno", "msg_id"}`` when
any registration id of the audience is known to the app (``registered``), ``1011`` when none is. ``errors``
scripts an answer for the next pushes.

``GET /v3/received/detail?msg_ids=a,b`` is the report API: the same Basic auth (401 ``1004`` otherwise), at
most 100 msg_ids, and one line per id with the received counters — ``jpush_received`` the number of the
message's registration ids that are known (``registered``) and not ``offline``, the other channels' counters
null — all null for an id this fake never answered.
"""

from __future__ import annotations

import base64
import secrets
from collections import deque
from typing import Any

from tests.integration.loopback import LoopbackServer, Recorded, Reply


def error(status: int, code: int, message: str, headers: dict[str, str] | None = None) -> Reply:
    return Reply(status, {"error": {"code": code, "message": message}}, headers=headers or {})


class FakeJPush:
    def __init__(
        self, app_key: str = "7d431e42dfa6a6d693ac2d04", master_secret: str = "5e987ac6d2e04d95a9d8f0d1"
    ) -> None:
        self.app_key, self.master_secret = app_key, master_secret
        self.server = LoopbackServer(handler=self._handle)
        #: registration ids this app has devices for; None: every id
        self.registered: set[str] | None = None
        #: registration ids whose devices do not receive (yet): their messages are not reported received
        self.offline: set[str] = set()
        self.errors: deque[Reply] = deque()
        self.pushes: list[dict[str, Any]] = []
        #: msg_id → the registration ids of the push it was answered for
        self.sent: dict[str, list[str]] = {}

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def requests(self) -> list[Recorded]:
        return self.server.requests

    async def __aenter__(self) -> FakeJPush:
        await self.server.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.server.__aexit__(*exc)

    def _refused(self, request: Recorded) -> Reply | None:
        """HTTP Basic ``app_key:master_secret`` checked as JPush does, or its refusal."""
        scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
        try:
            app_key, _, secret = base64.b64decode(encoded).decode().partition(":")
        except ValueError:
            app_key = secret = ""
        if scheme != "Basic":
            return error(401, 1004, "Authen failed")
        if app_key != self.app_key:
            return error(400, 1008, "app_key is invalid")
        if secret != self.master_secret:
            return error(401, 1004, "Authen failed")
        return None

    def _handle(self, request: Recorded) -> Reply:
        if request.path == "/v3/received/detail":
            return self._report(request)
        if request.path != "/v3/push":
            return Reply(404, {"error": {"code": 404, "message": "not found"}})
        if request.method != "POST":
            return error(405, 1001, "Only support HTTP Post method")
        refused = self._refused(request)
        if refused is not None:
            return refused
        body = request.json()
        ids = (body.get("audience") or {}).get("registration_id") if isinstance(body.get("audience"), dict) else None
        if not body.get("platform") or not ids or not ("notification" in body or "message" in body):
            return error(400, 1002, "Missing parameter")
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids) or len(ids) > 1000:
            return error(400, 1003, "Parameter value is invalid")
        if self.errors:
            return self.errors.popleft()
        if self.registered is not None and not set(ids) & self.registered:
            return error(400, 1011, "cannot find user by this audience")
        self.pushes.append(body)
        msg_id = str(10**16 + secrets.randbelow(10**17))
        self.sent[msg_id] = list(ids)
        return Reply(200, {"sendno": "0", "msg_id": msg_id})

    def _report(self, request: Recorded) -> Reply:
        if request.method != "GET":
            return error(405, 1001, "Only support HTTP Get method")
        refused = self._refused(request)
        if refused is not None:
            return refused
        msg_ids = [i for i in request.query.get("msg_ids", "").split(",") if i]
        if not msg_ids or len(msg_ids) > 100 or not all(i.isdigit() for i in msg_ids):
            return error(400, 1003, "msg_ids is invalid")
        return Reply(200, [self._received(msg_id) for msg_id in msg_ids])

    def _received(self, msg_id: str) -> dict[str, Any]:
        counters = ("android_pns_received", "ios_apns_received", "ios_msg_received", "quickapp_jpush_received")
        line: dict[str, Any] = {"msg_id": msg_id, "jpush_received": None, **dict.fromkeys(counters)}
        line |= {"android_pns_sent": None, "ios_apns_sent": None, "quickapp_pns_received": None}
        ids = self.sent.get(msg_id)
        if ids is not None:
            reached = [i for i in ids if (self.registered is None or i in self.registered) and i not in self.offline]
            line["jpush_received"] = len(reached)
        return line
