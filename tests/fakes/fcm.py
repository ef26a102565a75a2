"""A fake Firebase Cloud Messaging on loopback: Google's OAuth2 token endpoint and FCM's HTTP v1 send.

The token endpoint checks the JWT-bearer grant the way Google does — the RS256 signature against the test
service account's public key, ``iss``/``sub`` the account, ``aud`` the token URI, the messaging scope, an
unexpired ``exp`` — and issues a random access token. ``messages:send`` takes only a token it issued and not
since revoked (``revoke_tokens``: 401 UNAUTHENTICATED, as an expired one), checks the body's shape and answers
the ``name`` FCM answers, or the error scripted for that device token in ``errors``.
"""

from __future__ import annotations

import re
import secrets
import time
from typing import Any
from urllib.parse import parse_qsl

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tests.integration.loopback import LoopbackServer, Recorded, Reply

SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
GRANT_TYPE = "urn:ietf:params:oauth:grant-type:jwt-bearer"
_SEND = re.compile(r"^/v1/projects/([^/]+)/messages:send$")
_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)  # one per test session: keygen is slow


def error_body(http: int, status: str, message: str, code: str | None = None, **extra: Any) -> dict[str, Any]:
    """An FCM v1 error answer (``google.rpc.Status`` with an ``FcmError`` detail)."""
    details: list[dict[str, Any]] = []
    if code:
        details.append({"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": code})
    if extra.get("field"):
        violation = {"field": extra["field"], "description": message}
        details.append({"@type": "type.googleapis.com/google.rpc.BadRequest", "fieldViolations": [violation]})
    return {"error": {"code": http, "message": message, "status": status, "details": details}}


class FakeFcm:
    def __init__(self, project_id: str = "clarion-test") -> None:
        self.project_id = project_id
        self.key = _KEY
        self.server = LoopbackServer(handler=self._handle)
        self.issued: set[str] = set()
        self.token_requests = 0
        #: device token → (HTTP status, FCM body, headers) answered instead of a success
        self.errors: dict[str, tuple[int, dict[str, Any], dict[str, str]]] = {}
        #: messages accepted, as sent
        self.messages: list[dict[str, Any]] = []
        self.refuse_grant = False

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def token_uri(self) -> str:
        return self.server.url + "/token"

    @property
    def requests(self) -> list[Recorded]:
        return self.server.requests

    def service_account(self, key: rsa.RSAPrivateKey | None = None) -> dict[str, Any]:
        """A service-account JSON key, as the Firebase console downloads it (pointing at this fake)."""
        pem = (key or self.key).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        return {
            "type": "service_account",
            "project_id": self.project_id,
            "private_key_id": "k1",
            "private_key": pem.decode(),
            "client_email": f"clarion@{self.project_id}.iam.gserviceaccount.com",
            "client_id": "1234567890",
            "token_uri": self.token_uri,
        }

    def revoke_tokens(self) -> None:
        self.issued.clear()

    def fail(self, device: str, http: int, status: str, message: str, code: str | None = None, **extra: Any) -> None:
        headers = {"Retry-After": str(extra.pop("retry_after"))} if "retry_after" in extra else {}
        self.errors[device] = (http, error_body(http, status, message, code, **extra), headers)

    async def __aenter__(self) -> FakeFcm:
        await self.server.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.server.__aexit__(*exc)

    def _handle(self, request: Recorded) -> Reply:
        if request.path == "/token":
            return self._token(request)
        match = _SEND.match(request.path)
        if match is None or request.method != "POST":
            return Reply(404, error_body(404, "NOT_FOUND", "no such method"))
        return self._send(request, match.group(1))

    def _token(self, request: Recorded) -> Reply:
        self.token_requests += 1
        form = dict(parse_qsl(request.body.decode()))
        if form.get("grant_type") != GRANT_TYPE or "assertion" not in form:
            return Reply(400, {"error": "unsupported_grant_type", "error_description": "bad grant"})
        email = self.service_account()["client_email"]
        try:
            claims = jwt.decode(
                form["assertion"],
                self.key.public_key(),
                algorithms=["RS256"],
                audience=self.token_uri,
                issuer=email,
                options={"require": ["iss", "sub", "aud", "iat", "exp"]},
            )
        except jwt.PyJWTError as exc:
            return Reply(400, {"error": "invalid_grant", "error_description": f"Invalid JWT: {exc}"})
        if claims["sub"] != email or claims.get("scope") != SCOPE or claims["exp"] - claims["iat"] > 3600:
            return Reply(400, {"error": "invalid_scope", "error_description": "wrong scope or lifetime"})
        if self.refuse_grant:
            return Reply(400, {"error": "invalid_grant", "error_description": "account disabled"})
        token = "ya29." + secrets.token_urlsafe(24)
        self.issued.add(token)
        return Reply(200, {"access_token": token, "expires_in": 3599, "token_type": "Bearer"})

    def _send(self, request: Recorded, project: str) -> Reply:
        bearer = request.headers.get("Authorization", "")
        if not bearer.startswith("Bearer ") or bearer[7:] not in self.issued:
            return Reply(401, error_body(401, "UNAUTHENTICATED", "Request had invalid authentication credentials."))
        if project != self.project_id:
            return Reply(403, error_body(403, "PERMISSION_DENIED", "wrong project", "PERMISSION_DENIED"))
        body = request.json()
        message = body.get("message") if isinstance(body, dict) else None
        if not isinstance(message, dict) or not isinstance(message.get("token"), str):
            return Reply(400, error_body(400, "INVALID_ARGUMENT", "message.token is required", "INVALID_ARGUMENT"))
        data = message.get("data", {})
        if not all(isinstance(v, str) for v in data.values()):
            return Reply(400, error_body(400, "INVALID_ARGUMENT", "data values must be strings", "INVALID_ARGUMENT"))
        scripted = self.errors.get(message["token"])
        if scripted is not None:
            return Reply(scripted[0], scripted[1], headers=scripted[2])
        self.messages.append(message)
        return Reply(200, {"name": f"projects/{project}/messages/0:{time.time_ns()}%{secrets.token_hex(4)}"})
