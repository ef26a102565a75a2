"""A fake DingTalk on loopback: custom robots and an internal app's work notifications (not a test module).

It speaks DingTalk's wire protocol as documented: ``POST /robot/send?access_token=&timestamp=&sign=`` with the
sign recomputed from the robot's secret (a wrong one, or a timestamp more than an hour off, is refused with
errcode 310000 as DingTalk does); ``GET /gettoken?appkey=&appsecret=`` issuing access tokens;
``POST /topapi/message/corpconversation/asyncsend_v2`` and ``getsendresult`` checking the token (40014 unknown,
42001 expired) and keeping each task's user in DingTalk's lists. Tests script errcodes with ``fail_next``,
expire tokens with ``expire_tokens``, and make a user read a task with ``read``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import secrets
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import orjson

from tests.integration.loopback import LoopbackServer, Recorded, Reply

ROBOT_TOKEN = "robot-access-token-0123456789"
ROBOT_SECRET = "SEC-test-robot-secret-0123456789abcdef"
APP_KEY = "ding-test-app-key"
APP_SECRET = "ding-test-app-secret-0123456789"
AGENT_ID = 4711


def robot_sign(secret: str, timestamp: str) -> str:
    """The sign DingTalk expects, computed here independently of Clarion's code."""
    mac = hmac.new(secret.encode("utf-8"), (timestamp + "\n" + secret).encode("utf-8"), hashlib.sha256)
    return base64.b64encode(mac.digest()).decode("ascii")


@dataclass
class Task:
    userid: str
    msg: dict[str, Any]
    state: str = "unread"  # unread, read, or one of DingTalk's failure lists: invalid, forbidden, failed


@dataclass
class FakeDingTalk:
    robots: dict[str, str | None] = field(default_factory=lambda: {ROBOT_TOKEN: ROBOT_SECRET})
    apps: dict[str, str] = field(default_factory=lambda: {APP_KEY: APP_SECRET})
    agent_id: int = AGENT_ID
    #: userids of the organisation; a work notification to anyone else lands in ``invalid_user_id_list``
    users: set[str] = field(default_factory=lambda: {"zhangsan", "lisi"})
    #: errcodes to answer the next robot posts / server-API calls with, in order: (errcode, errmsg)
    robot_failures: deque[tuple[int, str]] = field(default_factory=deque)
    api_failures: deque[tuple[int, str, dict[str, Any]]] = field(default_factory=deque)
    tokens: dict[str, float] = field(default_factory=dict)  # access token → expiry (unix time)
    tokens_issued: int = 0
    issued_with: dict[str, str] = field(default_factory=dict)  # access token → the appsecret that got it
    tasks: dict[int, Task] = field(default_factory=dict)
    robot_posts: list[dict[str, Any]] = field(default_factory=list)
    server: LoopbackServer | None = None
    _task_ids: itertools.count[int] = field(default_factory=lambda: itertools.count(900001))

    @property
    def url(self) -> str:
        assert self.server is not None
        return self.server.url

    @property
    def requests(self) -> list[Recorded]:
        assert self.server is not None
        return self.server.requests

    async def __aenter__(self) -> FakeDingTalk:
        self.server = LoopbackServer(handler=self.handle)
        await self.server.__aenter__()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self.server is not None
        await self.server.__aexit__(*exc_info)

    # -- what tests script ------------------------------------------------------------------------------

    def fail_next_robot(self, errcode: int, errmsg: str = "scripted") -> None:
        self.robot_failures.append((errcode, errmsg))

    def fail_next_api(self, errcode: int, errmsg: str = "scripted", **extra: Any) -> None:
        """The next server-API call (after its token is checked) answers ``errcode`` (and ``extra``: a sub_code)."""
        self.api_failures.append((errcode, errmsg, extra))

    def expire_tokens(self) -> None:
        """Every token issued so far has expired (DingTalk then answers 42001)."""
        for token in self.tokens:
            self.tokens[token] = 0.0

    def read(self, task_id: int | str) -> None:
        self.tasks[int(task_id)].state = "read"

    # -- the protocol -----------------------------------------------------------------------------------

    def handle(self, request: Recorded) -> Reply:
        if request.method == "POST" and request.path == "/robot/send":
            return self._robot(request)
        if request.method == "GET" and request.path == "/gettoken":
            return self._gettoken(request)
        if request.method == "POST" and request.path == "/topapi/message/corpconversation/asyncsend_v2":
            return self._with_token(request, self._asyncsend)
        if request.method == "POST" and request.path == "/topapi/message/corpconversation/getsendresult":
            return self._with_token(request, self._getsendresult)
        return Reply(404, {"errcode": 404, "errmsg": "not found"})

    @staticmethod
    def _answer(errcode: int, errmsg: str, **extra: Any) -> Reply:
        return Reply(200, {"errcode": errcode, "errmsg": errmsg, **extra})

    def _robot(self, request: Recorded) -> Reply:
        token = request.query.get("access_token", "")
        if token not in self.robots:
            return self._answer(300001, "token is not exist")
        secret = self.robots[token]
        if secret is not None:
            timestamp, given = request.query.get("timestamp", ""), request.query.get("sign", "")
            if not timestamp.isdigit() or abs(time.time() * 1000 - int(timestamp)) > 3600 * 1000:
                return self._answer(310000, "invalid timestamp")
            if not hmac.compare_digest(robot_sign(secret, timestamp), given):
                return self._answer(310000, "sign not match")
        try:
            body = request.json()
        except orjson.JSONDecodeError:
            return self._answer(40035, "缺少参数 json")
        markdown = body.get("markdown") if isinstance(body, dict) else None
        if body.get("msgtype") != "markdown" or not isinstance(markdown, dict):
            return self._answer(40035, "缺少参数 msgtype")
        if not markdown.get("title") or not markdown.get("text"):
            return self._answer(40035, "缺少参数 markdown.title/markdown.text")
        if self.robot_failures:
            return self._answer(*self.robot_failures.popleft())
        self.robot_posts.append(body)
        return self._answer(0, "ok")

    def _gettoken(self, request: Recorded) -> Reply:
        key, secret = request.query.get("appkey", ""), request.query.get("appsecret", "")
        if key not in self.apps or not hmac.compare_digest(self.apps[key], secret):
            return self._answer(40089, "不合法的appKey或appSecret")
        token = "ding-token-" + secrets.token_hex(8)
        self.tokens[token] = time.time() + 7200
        self.tokens_issued += 1
        self.issued_with[token] = secret
        return self._answer(0, "ok", access_token=token, expires_in=7200)

    def _with_token(self, request: Recorded, then: Any) -> Reply:
        token = request.query.get("access_token", "")
        if token not in self.tokens:
            return self._answer(40014, "不合法的access_token")
        if self.tokens[token] < time.time():
            return self._answer(42001, "access_token超时")
        if self.api_failures:
            errcode, errmsg, extra = self.api_failures.popleft()
            return self._answer(errcode, errmsg, **extra)
        try:
            body = request.json()
        except orjson.JSONDecodeError:
            return self._answer(40035, "不合法的参数")
        if not isinstance(body, dict) or body.get("agent_id") != self.agent_id:
            return self._answer(40000, "不合法的agent_id")
        return then(body)

    def _asyncsend(self, body: dict[str, Any]) -> Reply:
        userids, msg = body.get("userid_list"), body.get("msg")
        if not isinstance(userids, str) or not userids or not isinstance(msg, dict):
            return self._answer(40035, "缺少参数 userid_list/msg")
        markdown = msg.get("markdown")
        if msg.get("msgtype") != "markdown" or not isinstance(markdown, dict) or not markdown.get("text"):
            return self._answer(40035, "不合法的msg")
        if not markdown.get("title"):
            return self._answer(40035, "缺少参数 markdown.title")
        task_id = next(self._task_ids)
        self.tasks[task_id] = Task(userids, msg, "unread" if userids in self.users else "invalid")
        return self._answer(0, "ok", task_id=task_id, request_id=secrets.token_hex(6))

    def _getsendresult(self, body: dict[str, Any]) -> Reply:
        task = self.tasks.get(body.get("task_id"))  # type: ignore[arg-type]
        if task is None:
            return self._answer(40035, "不合法的task_id")
        lists: dict[str, Any] = {
            f"{state}_user_id_list": [] for state in ("read", "unread", "invalid", "forbidden", "failed")
        }
        lists[f"{task.state}_user_id_list"] = [task.userid]
        lists |= {"invalid_dept_id_list": [], "forbidden_list": []}
        return self._answer(0, "ok", send_result=lists, request_id=secrets.token_hex(6))
