"""A WeChat Official Account API on loopback: the access-token endpoints and template-message sending.

It checks what WeChat checks: the appid and secret before issuing a token (40013; 40125 for a malformed
secret, 40001 for another account's), and a known,
unexpired token on every send (41001 missing, 40014 invalid, 42001 expired). Tokens it issues expire after
``expires_in`` seconds or when a test calls ``expire``, so the refresh-once path is exercised for real. Errcodes
are scripted per openid (``fail``). ``callback`` builds a ``TEMPLATESENDJOBFINISH`` event signed (and, given an
EncodingAESKey, encrypted) as WeChat signs it.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from tests.integration.loopback import LoopbackServer, Recorded, Reply

APP_ID = "wx0123456789abcdef"
APP_SECRET = "s3cr3t-0f-the-official-account"
CALLBACK_TOKEN = "clarionToken42"
ENCODING_AES_KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"


def sign(*parts: str) -> str:
    return hashlib.sha1("".join(sorted(parts)).encode()).hexdigest()


def finished_event(msgid: str, status: str = "success", openid: str = "oFollower1") -> bytes:
    """The XML WeChat posts when a template message finished."""
    return (
        "<xml><ToUserName><![CDATA[gh_0123456789ab]]></ToUserName>"
        f"<FromUserName><![CDATA[{openid}]]></FromUserName><CreateTime>{int(time.time())}</CreateTime>"
        "<MsgType><![CDATA[event]]></MsgType><Event><![CDATA[TEMPLATESENDJOBFINISH]]></Event>"
        f"<MsgID>{msgid}</MsgID><Status><![CDATA[{status}]]></Status></xml>"
    ).encode()


def encrypt(xml: bytes, *, key: str = ENCODING_AES_KEY, app_id: str = APP_ID) -> str:
    """``xml`` sealed as WeChat's safe mode seals it (AES-256-CBC, PKCS#7 to 32 bytes)."""
    aes_key = base64.b64decode(key + "=")
    plain = os.urandom(16) + struct.pack(">I", len(xml)) + xml + app_id.encode()
    pad = 32 - len(plain) % 32
    plain += bytes([pad]) * pad
    encryptor = Cipher(algorithms.AES(aes_key), modes.CBC(aes_key[:16])).encryptor()
    return base64.b64encode(encryptor.update(plain) + encryptor.finalize()).decode()


def callback(
    body: bytes, *, token: str = CALLBACK_TOKEN, aes_key: str | None = None, timestamp: int | None = None
) -> tuple[dict[str, str], bytes]:
    """(query, body) of a callback as WeChat sends it to the server URL: plaintext, or safe mode with ``aes_key``."""
    ts, nonce = str(int(time.time()) if timestamp is None else timestamp), secrets.token_hex(5)
    query = {"signature": sign(token, ts, nonce), "timestamp": ts, "nonce": nonce, "openid": "oFollower1"}
    if aes_key is None:
        return query, body
    sealed = encrypt(body, key=aes_key)
    query |= {"encrypt_type": "aes", "msg_signature": sign(token, ts, nonce, sealed)}
    return query, f"<xml><ToUserName><![CDATA[gh_0123456789ab]]></ToUserName><Encrypt>{sealed}</Encrypt></xml>".encode()


@dataclass
class FakeWechat:
    app_id: str = APP_ID
    app_secret: str = APP_SECRET
    expires_in: int = 7200
    tokens: dict[str, float] = field(default_factory=dict)  # token → when it expires (unix time)
    token_requests: list[Recorded] = field(default_factory=list)
    issued_with: dict[str, str] = field(default_factory=dict)  # token → the AppSecret that got it
    sends: list[dict[str, Any]] = field(default_factory=list)  # accepted template messages, as sent
    refused: list[dict[str, Any]] = field(default_factory=list)  # bodies answered with a non-zero errcode
    failures: dict[str, tuple[int, str]] = field(default_factory=dict)  # openid → (errcode, errmsg)
    busy: list[tuple[int, str]] = field(default_factory=list)  # errcodes answered to the next sends, in order
    next_msgid: int = 200228332
    server: LoopbackServer = field(init=False)

    def __post_init__(self) -> None:
        self.server = LoopbackServer(handler=self._handle)

    @property
    def url(self) -> str:
        return self.server.url

    async def __aenter__(self) -> FakeWechat:
        await self.server.__aenter__()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.server.__aexit__(*exc_info)

    def fail(self, openid: str, errcode: int, errmsg: str = "scripted") -> None:
        self.failures[openid] = (errcode, errmsg)

    def expire(self) -> None:
        """Every token issued so far expires now (WeChat answers 42001 to it)."""
        for token in self.tokens:
            self.tokens[token] = 0.0

    def valid_tokens(self) -> Iterator[str]:
        now = time.time()
        return (t for t, until in self.tokens.items() if until > now)

    def _issue(self, appid: Any, secret: Any) -> Reply:
        if appid != self.app_id:
            return Reply(200, {"errcode": 40013, "errmsg": "invalid appid"})
        if not isinstance(secret, str) or len(secret) != len(self.app_secret):  # not shaped like a secret
            return Reply(200, {"errcode": 40125, "errmsg": "invalid appsecret"})
        if secret != self.app_secret:
            return Reply(200, {"errcode": 40001, "errmsg": "AppSecret error or AppSecret not of this account"})
        token = "ACCESS_" + secrets.token_urlsafe(24)
        self.tokens[token] = time.time() + self.expires_in
        self.issued_with[token] = secret
        return Reply(200, {"access_token": token, "expires_in": self.expires_in})

    def _handle(self, request: Recorded) -> Reply:
        if request.path == "/cgi-bin/token" and request.method == "GET":
            self.token_requests.append(request)
            if request.query.get("grant_type") != "client_credential":
                return Reply(200, {"errcode": 40002, "errmsg": "invalid grant_type"})
            return self._issue(request.query.get("appid"), request.query.get("secret"))
        if request.path == "/cgi-bin/stable_token" and request.method == "POST":
            self.token_requests.append(request)
            grant = request.json()
            return self._issue(grant.get("appid"), grant.get("secret"))
        if request.path == "/cgi-bin/message/template/send" and request.method == "POST":
            return self._send(request)
        return Reply(404, body=b"not found")

    def _send(self, request: Recorded) -> Reply:
        token = request.query.get("access_token")
        if not token:
            return Reply(200, {"errcode": 41001, "errmsg": "access_token missing"})
        if token not in self.tokens:
            return Reply(200, {"errcode": 40014, "errmsg": "invalid access_token"})
        if self.tokens[token] <= time.time():
            return Reply(200, {"errcode": 42001, "errmsg": "access_token expired"})
        body = request.json()
        scripted = self.busy.pop(0) if self.busy else self.failures.get(body.get("touser", ""))
        if scripted is None and not (isinstance(body.get("data"), dict) and body.get("template_id")):
            scripted = (47001, "data format error")
        if scripted is not None:
            self.refused.append(body)
            return Reply(200, {"errcode": scripted[0], "errmsg": scripted[1]})
        self.sends.append(body)
        self.next_msgid += 1
        return Reply(200, {"errcode": 0, "errmsg": "ok", "msgid": self.next_msgid})
