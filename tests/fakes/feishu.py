"""A fake Feishu (Lark) on loopback: custom bots, an app's messages, and its signed events (not a test module).

It speaks Feishu's wire protocol as documented: ``POST /open-apis/bot/v2/hook/{token}`` with the body's
``sign`` recomputed from the bot's secret (wrong, or a timestamp more than an hour off: code 19021);
``POST /open-apis/auth/v3/tenant_access_token/internal`` issuing tenant tokens; ``POST /open-apis/im/v1/messages``
checking the Bearer token (99991661 missing, 99991663 unknown or expired) and the card. ``event`` builds the
callback Feishu's event subscription posts, signed (and encrypted) the way Feishu does it. Tests script codes
with ``fail_next_*`` and expire tokens with ``expire_tokens``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import orjson
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from tests.integration.loopback import LoopbackServer, Recorded, Reply

BOT_TOKEN = "0d4e5f6a-feishu-bot-token"
BOT_SECRET = "feishu-bot-secret-0123456789"
APP_ID = "cli_test_app_0123"
APP_SECRET = "feishu-app-secret-0123456789"
VERIFICATION_TOKEN = "feishu-verification-token-0123"
ENCRYPT_KEY = "feishu-encrypt-key-0123456789"


def bot_sign(secret: str, timestamp: str) -> str:
    """Feishu's bot sign, computed here independently of Clarion's code: the key is "{timestamp}\\n{secret}"."""
    mac = hmac.new((timestamp + "\n" + secret).encode("utf-8"), digestmod=hashlib.sha256)
    return base64.b64encode(mac.digest()).decode("ascii")


def encrypt(key: str, plain: bytes) -> str:
    """An event body as Feishu encrypts it: AES-256-CBC under SHA-256(key), a random IV before the ciphertext."""
    iv = os.urandom(16)
    padder = padding.PKCS7(128).padder()
    padded = padder.update(plain) + padder.finalize()
    encryptor = Cipher(algorithms.AES(hashlib.sha256(key.encode()).digest()), modes.CBC(iv)).encryptor()
    return base64.b64encode(iv + encryptor.update(padded) + encryptor.finalize()).decode()


def event(
    document: dict[str, Any], *, encrypt_key: str | None = ENCRYPT_KEY, encrypted: bool = False
) -> dict[str, Any]:
    """``httpx`` keyword arguments for an event callback as Feishu posts it: the body (encrypted when asked) and
    the X-Lark headers, signed with ``encrypt_key`` when there is one."""
    body = orjson.dumps(document)
    if encrypted:
        assert encrypt_key is not None
        body = orjson.dumps({"encrypt": encrypt(encrypt_key, body)})
    headers = {"Content-Type": "application/json"}
    if encrypt_key is not None:
        timestamp, nonce = str(int(time.time())), secrets.token_hex(8)
        digest = hashlib.sha256((timestamp + nonce + encrypt_key).encode() + body).hexdigest()
        headers |= {"X-Lark-Request-Timestamp": timestamp, "X-Lark-Request-Nonce": nonce, "X-Lark-Signature": digest}
    return {"content": body, "headers": headers}


def read_event(message_ids: list[str], token: str = VERIFICATION_TOKEN, open_id: str = "ou_reader") -> dict[str, Any]:
    """The ``im.message.message_read_v1`` event (schema 2.0) for ``message_ids``."""
    return {
        "schema": "2.0",
        "header": {
            "event_id": secrets.token_hex(16),
            "token": token,
            "create_time": str(int(time.time() * 1000)),
            "event_type": "im.message.message_read_v1",
            "tenant_key": "tenant-test",
            "app_id": APP_ID,
        },
        "event": {
            "reader": {"reader_id": {"open_id": open_id}, "read_time": str(int(time.time() * 1000))},
            "message_id_list": message_ids,
        },
    }


@dataclass
class FakeFeishu:
    bots: dict[str, str | None] = field(default_factory=lambda: {BOT_TOKEN: BOT_SECRET})
    apps: dict[str, str] = field(default_factory=lambda: {APP_ID: APP_SECRET})
    #: codes to answer the next bot posts / message sends with, in order: (code, msg)
    bot_failures: deque[tuple[int, str]] = field(default_factory=deque)
    send_failures: deque[tuple[int, str]] = field(default_factory=deque)
    tokens: dict[str, float] = field(default_factory=dict)  # tenant token → expiry (unix time)
    tokens_issued: int = 0
    issued_with: dict[str, str] = field(default_factory=dict)  # tenant token → the app_secret that got it
    bot_posts: list[dict[str, Any]] = field(default_factory=list)
    #: what the app sent: message_id → (open_id, the card as sent)
    messages: dict[str, tuple[str, dict[str, Any]]] = field(default_factory=dict)
    server: LoopbackServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return self.server.url

    @property
    def requests(self) -> list[Recorded]:
        assert self.server is not None
        return self.server.requests

    async def __aenter__(self) -> FakeFeishu:
        self.server = LoopbackServer(handler=self.handle)
        await self.server.__aenter__()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self.server is not None
        await self.server.__aexit__(*exc_info)

    def fail_next_bot(self, code: int, msg: str = "scripted") -> None:
        self.bot_failures.append((code, msg))

    def fail_next_send(self, code: int, msg: str = "scripted") -> None:
        self.send_failures.append((code, msg))

    def expire_tokens(self) -> None:
        for token in self.tokens:
            self.tokens[token] = 0.0

    # -- the protocol -----------------------------------------------------------------------------------

    def handle(self, request: Recorded) -> Reply:
        if request.method == "POST" and request.path.startswith("/open-apis/bot/v2/hook/"):
            return self._bot(request, request.path.removeprefix("/open-apis/bot/v2/hook/"))
        if request.method == "POST" and request.path == "/open-apis/auth/v3/tenant_access_token/internal":
            return self._token(request)
        if request.method == "POST" and request.path == "/open-apis/im/v1/messages":
            return self._send(request)
        return Reply(404, {"code": 404, "msg": "not found"})

    @staticmethod
    def _answer(code: int, msg: str, status: int = 200, **extra: Any) -> Reply:
        return Reply(status, {"code": code, "msg": msg, **extra})

    def _bot(self, request: Recorded, token: str) -> Reply:
        if token not in self.bots:
            return self._answer(19001, "param invalid: incoming webhook access token invalid", 400)
        try:
            body = request.json()
        except orjson.JSONDecodeError:
            return self._answer(9499, "Bad Request", 400)
        secret = self.bots[token]
        if secret is not None:
            timestamp, given = str(body.get("timestamp", "")), str(body.get("sign", ""))
            fresh = timestamp.isdigit() and abs(time.time() - int(timestamp)) <= 3600
            if not fresh or not hmac.compare_digest(bot_sign(secret, timestamp), given):
                return self._answer(19021, "sign match fail or timestamp is not within one hour from current time")
        if body.get("msg_type") == "interactive":
            elements = (body.get("card") or {}).get("elements") or []
            if not any(e.get("tag") == "markdown" and e.get("content") for e in elements):
                return self._answer(11246, "card content is invalid")
        elif body.get("msg_type") == "text":
            if not (body.get("content") or {}).get("text"):
                return self._answer(19002, "params error: content.text")
        else:
            return self._answer(19002, "params error: msg_type")
        if self.bot_failures:
            return self._answer(*self.bot_failures.popleft())
        self.bot_posts.append(body)
        return self._answer(0, "success", data={})

    def _token(self, request: Recorded) -> Reply:
        body = request.json()
        app_id, app_secret = body.get("app_id", ""), body.get("app_secret", "")
        if app_id not in self.apps:
            return self._answer(10003, "invalid param: app_id", 400)
        if not hmac.compare_digest(self.apps[app_id], str(app_secret)):
            return self._answer(10014, "app secret invalid", 400)
        token = "t-" + secrets.token_hex(12)
        self.tokens[token] = time.time() + 7200
        self.tokens_issued += 1
        self.issued_with[token] = str(app_secret)
        return self._answer(0, "ok", tenant_access_token=token, expire=7200)

    def _send(self, request: Recorded) -> Reply:
        authorization = request.headers.get("Authorization", "")
        if not authorization.startswith("Bearer "):
            return self._answer(99991661, "Missing access token for authorization", 400)
        token = authorization.removeprefix("Bearer ")
        if self.tokens.get(token, 0.0) < time.time():
            return self._answer(99991663, "Invalid access token for authorization", 400)
        if request.query.get("receive_id_type") != "open_id":
            return self._answer(99992402, "field validation failed: receive_id_type", 400)
        body = request.json()
        if not str(body.get("receive_id", "")).startswith("ou_") or body.get("msg_type") != "interactive":
            return self._answer(230001, "Your request contains an invalid request parameter", 400)
        try:
            card = orjson.loads(body.get("content", ""))
        except orjson.JSONDecodeError:
            return self._answer(230001, "invalid content: not JSON", 400)
        elements = card.get("elements") if isinstance(card, dict) else None
        if not elements or not any(e.get("tag") == "markdown" and e.get("content") for e in elements):
            return self._answer(230099, "Failed to create card content", 400)
        if self.send_failures:
            return self._answer(*self.send_failures.popleft(), status=400)
        message_id = "om_" + secrets.token_hex(12)
        self.messages[message_id] = (body["receive_id"], card)
        return self._answer(0, "success", data={"message_id": message_id, "msg_type": "interactive"})
