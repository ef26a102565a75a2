"""A fake Web Push service (RFC 8030) on loopback, holding the browsers' side too.

``subscribe(name)`` plays a browser: it makes the subscription's P-256 key pair and auth secret and returns
the ``PushSubscription.toJSON()`` object with an endpoint on this service. Each push is checked as a push
service does: ``Authorization: vapid t=<JWT>, k=<key>`` with the JWT verified (ES256) against ``k``, ``aud`` the
endpoint's origin, ``exp`` in the future and at most 24 hours away, ``sub`` a mailto:/https: contact, ``k`` the
application server key the subscription was made for (403 otherwise); ``Content-Encoding: aes128gcm`` and a
``TTL``; and the body is DECRYPTED with the subscription's private key (RFC 8291), so ``pushes`` holds what
the service worker would read. ``answers`` scripts a status for a subscription name.

``FakeWebPush(tls=True)`` serves HTTPS on loopback, as every real push service does (and as the user API
requires of a subscription's endpoint), with a self-signed certificate for 127.0.0.1 made for the test:
``ca_certificate`` is the PEM an account trusts it with.
"""

from __future__ import annotations

import base64
import os
import ssl
import time
from dataclasses import dataclass
from typing import Any

import http_ece
import jwt
import orjson
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.fakes.apns import self_signed, server_context
from tests.integration.loopback import Handler, LoopbackServer, Recorded, Reply


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class Push:
    name: str
    headers: dict[str, str]
    payload: Any  # the decrypted JSON


class TlsLoopbackServer(LoopbackServer):
    """``LoopbackServer`` over HTTPS, presenting the certificate of ``context``."""

    def __init__(self, context: ssl.SSLContext, handler: Handler) -> None:
        super().__init__(handler=handler)
        self.context = context

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    async def __aenter__(self) -> TlsLoopbackServer:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._serve)
        self._runner = web.AppRunner(app, shutdown_timeout=0.5, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=self.context).start()
        self.port = self._runner.addresses[0][1]
        return self


class FakeWebPush:
    def __init__(self, *, tls: bool = False) -> None:
        #: the certificate (PEM) the HTTPS service presents; None: plain HTTP
        self.ca_certificate: str | None = None
        self.server: LoopbackServer
        if tls:
            self.ca_certificate, key = self_signed()
            self.server = TlsLoopbackServer(server_context(self.ca_certificate, key), self._handle)
        else:
            self.server = LoopbackServer(handler=self._handle)
        self.browsers: dict[str, tuple[ec.EllipticCurvePrivateKey, bytes]] = {}
        #: the application server key (base64url) browsers subscribed with
        self.application_server_key: str | None = None
        self.answers: dict[str, Reply] = {}
        self.pushes: list[Push] = []
        self.refusals: list[str] = []

    @property
    def requests(self) -> list[Recorded]:
        return self.server.requests

    async def __aenter__(self) -> FakeWebPush:
        await self.server.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.server.__aexit__(*exc)

    def subscribe(self, name: str) -> dict[str, Any]:
        key = ec.generate_private_key(ec.SECP256R1())
        auth = os.urandom(16)
        self.browsers[name] = (key, auth)
        point = key.public_key().public_bytes(serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint)
        keys = {"p256dh": b64url(point), "auth": b64url(auth)}
        return {"endpoint": f"{self.server.url}/push/{name}", "expirationTime": None, "keys": keys}

    def _refuse(self, why: str, status: int = 401) -> Reply:
        self.refusals.append(why)
        return Reply(status, body=why.encode(), headers={"Content-Type": "text/plain"})

    def _handle(self, request: Recorded) -> Reply:
        name = request.path.removeprefix("/push/")
        if request.method != "POST" or name not in self.browsers:
            return Reply(404, body=b"no such subscription")
        scheme, _, params = request.headers.get("Authorization", "").partition(" ")
        fields = dict(p.strip().split("=", 1) for p in params.split(",") if "=" in p)
        if scheme != "vapid" or "t" not in fields or "k" not in fields:
            return self._refuse("no vapid authorization")
        try:
            public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), unb64url(fields["k"]))
            claims = jwt.decode(
                fields["t"],
                public,
                algorithms=["ES256"],
                audience=self.server.url,
                options={"require": ["aud", "exp", "sub"]},
            )
        except (jwt.PyJWTError, ValueError) as exc:
            return self._refuse(f"bad vapid token: {exc}")
        if claims["exp"] > time.time() + 24 * 3600:
            return self._refuse("vapid token valid longer than 24 hours")
        if not str(claims["sub"]).startswith(("mailto:", "https://")):
            return self._refuse("vapid sub is not a contact")
        if self.application_server_key is not None and fields["k"] != self.application_server_key:
            return self._refuse("subscription made for another application server key", 403)
        if request.headers.get("Content-Encoding") != "aes128gcm" or "TTL" not in request.headers:
            return self._refuse("needs Content-Encoding: aes128gcm and TTL", 400)
        if len(request.body) > 4096:
            return self._refuse("payload too large", 413)
        key, auth = self.browsers[name]
        try:
            plain = http_ece.decrypt(request.body, private_key=key, auth_secret=auth, version="aes128gcm")
        except Exception as exc:  # anything the browser could not decrypt
            return self._refuse(f"undecryptable: {exc!r}", 400)
        scripted = self.answers.get(name)
        if scripted is not None:
            return scripted
        self.pushes.append(Push(name, dict(request.headers), orjson.loads(plain)))
        return Reply(201, body=b"", headers={"Location": f"{self.server.url}/message/{len(self.pushes)}"})
