"""A WeCom (企业微信) API on loopback: ``gettoken``, application ``message/send`` and the group robot webhook.

It checks what WeCom checks: the corpid and the application's secret before issuing a token (40013 / 40001),
a known, unexpired token on every send (41001 missing, 40014 invalid, 42001 expired), the agentid against the
application the token belongs to (301002), and the robot's key (93000). Members are known userids; an unknown
one is listed in ``invaliduser`` (errcode 81013 when no recipient is valid). Errcodes are scripted per userid
(``fail``) and for the next robot posts (``robot_busy``).
"""

from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field
from typing import Any

from tests.integration.loopback import LoopbackServer, Recorded, Reply

CORP_ID = "ww0123456789abcdef"
CORP_SECRET = "app-secret-of-the-clarion-application"
AGENT_ID = 1000002
ROBOT_KEY = "693a91f6-7xxx-4bc4-97a0-0ec2sifa5aaa"


@dataclass
class FakeWecom:
    corp_id: str = CORP_ID
    corp_secret: str = CORP_SECRET
    agent_id: int = AGENT_ID
    robot_key: str = ROBOT_KEY
    members: set[str] = field(default_factory=lambda: {"zhangsan", "lisi"})
    expires_in: int = 7200
    tokens: dict[str, float] = field(default_factory=dict)
    token_requests: list[Recorded] = field(default_factory=list)
    issued_with: dict[str, str] = field(default_factory=dict)  # token → the corpsecret that got it
    sends: list[dict[str, Any]] = field(default_factory=list)  # accepted application messages
    posts: list[dict[str, Any]] = field(default_factory=list)  # accepted robot posts
    robot_requests: list[Recorded] = field(default_factory=list)
    failures: dict[str, tuple[int, str]] = field(default_factory=dict)
    busy: list[tuple[int, str]] = field(default_factory=list)  # errcodes for the next application sends
    robot_busy: list[tuple[int, str]] = field(default_factory=list)
    #: userids answered errcode 0 yet listed in ``invaliduser`` (as WeCom does for a recipient it drops)
    dropped: set[str] = field(default_factory=set)
    server: LoopbackServer = field(init=False)

    def __post_init__(self) -> None:
        self.server = LoopbackServer(handler=self._handle)

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def robot_url(self) -> str:
        return f"{self.server.url}/cgi-bin/webhook/send?key={self.robot_key}"

    async def __aenter__(self) -> FakeWecom:
        await self.server.__aenter__()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.server.__aexit__(*exc_info)

    def fail(self, userid: str, errcode: int, errmsg: str = "scripted") -> None:
        self.failures[userid] = (errcode, errmsg)

    def expire(self) -> None:
        for token in self.tokens:
            self.tokens[token] = 0.0

    def _handle(self, request: Recorded) -> Reply:
        if request.path == "/cgi-bin/gettoken" and request.method == "GET":
            return self._gettoken(request)
        if request.path == "/cgi-bin/message/send" and request.method == "POST":
            return self._send(request)
        if request.path == "/cgi-bin/webhook/send" and request.method == "POST":
            return self._robot(request)
        return Reply(404, body=b"not found")

    def _gettoken(self, request: Recorded) -> Reply:
        self.token_requests.append(request)
        if request.query.get("corpid") != self.corp_id:
            return Reply(200, {"errcode": 40013, "errmsg": "invalid corpid"})
        if request.query.get("corpsecret") != self.corp_secret:
            return Reply(200, {"errcode": 40001, "errmsg": "invalid credential"})
        token = "WECOM_" + secrets.token_urlsafe(24)
        self.tokens[token] = time.time() + self.expires_in
        self.issued_with[token] = self.corp_secret
        return Reply(200, {"errcode": 0, "errmsg": "ok", "access_token": token, "expires_in": self.expires_in})

    def _send(self, request: Recorded) -> Reply:
        token = request.query.get("access_token")
        if not token:
            return Reply(200, {"errcode": 41001, "errmsg": "access_token missing"})
        if token not in self.tokens:
            return Reply(200, {"errcode": 40014, "errmsg": "invalid access_token"})
        if self.tokens[token] <= time.time():
            return Reply(200, {"errcode": 42001, "errmsg": "access_token expired"})
        body = request.json()
        if body.get("agentid") != self.agent_id:
            return Reply(200, {"errcode": 301002, "errmsg": "not allow operate another agent with this accesstoken"})
        msgtype = body.get("msgtype")
        if msgtype not in ("text", "markdown", "textcard") or not isinstance(body.get(msgtype), dict):
            return Reply(200, {"errcode": 40008, "errmsg": "invalid message type"})
        scripted = self.busy.pop(0) if self.busy else self.failures.get(body.get("touser", ""))
        if scripted is not None:
            return Reply(200, {"errcode": scripted[0], "errmsg": scripted[1]})
        users = str(body.get("touser", "")).split("|")
        if set(users) <= self.dropped:
            return Reply(200, {"errcode": 0, "errmsg": "ok", "invaliduser": "|".join(users), "msgid": "dropped"})
        invalid = [u for u in users if u not in self.members]
        if len(invalid) == len(users):
            return Reply(
                200, {"errcode": 81013, "errmsg": "user & party & tag all invalid", "invaliduser": "|".join(invalid)}
            )
        self.sends.append(body)
        answer = {"errcode": 0, "errmsg": "ok", "invaliduser": "|".join(invalid), "msgid": f"msg{len(self.sends)}"}
        return Reply(200, answer)

    def _robot(self, request: Recorded) -> Reply:
        self.robot_requests.append(request)
        if request.query.get("key") != self.robot_key:
            return Reply(200, {"errcode": 93000, "errmsg": "invalid webhook url"})
        if self.robot_busy:
            errcode, errmsg = self.robot_busy.pop(0)
            return Reply(200, {"errcode": errcode, "errmsg": errmsg})
        body = request.json()
        msgtype = body.get("msgtype")
        if msgtype not in ("text", "markdown") or not isinstance(body.get(msgtype), dict):
            return Reply(200, {"errcode": 40008, "errmsg": "invalid message type"})
        if not body[msgtype].get("content"):
            return Reply(200, {"errcode": 44004, "errmsg": "empty content"})
        self.posts.append(body)
        return Reply(200, {"errcode": 0, "errmsg": "ok"})
