"""Web Push to browsers: VAPID (RFC 8292) and an aes128gcm-encrypted payload (RFC 8291), one request per
subscription.

The push address is the browser's subscription (``PushSubscription.toJSON()``: its push-service
``endpoint`` and the ``p256dh`` / ``auth`` keys). The payload — the content's title, body, link and ``data``
as JSON, for the site's service worker to show — is encrypted for that browser only (``http_ece``, the
Mozilla implementation pywebpush uses), so the push service relays what it cannot read. Each request carries
``Authorization: vapid t=<JWT>, k=<public key>``: an ES256 JWT under the account's VAPID key whose ``aud`` is the
endpoint's origin, so the push service knows the sender is the one the subscription was made for.

The endpoints come from browsers, that is from users: the account's client refuses private addresses like
the webhook's (``outbound``). There is no vendor base URL to configure: each subscription names its own.

Push services answer 201 and send no receipt: a push accepted stays ``sent``, unless the account sets
``receipt_secret`` and the service worker confirms it (``push``: ``clarion_delivery`` and ``clarion_ack`` are
keys of the JSON payload; the worker posts them to ``POST /r/{name}`` when its ``push`` event fires), which
makes it ``delivered``. 404/410 mean the subscription is gone (the user revoked it, the browser dropped it): the
address is dead. ``ca_certificate`` replaces the system's authorities for an in-house push service.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import time
from collections.abc import Sequence
from typing import Any, ClassVar
from urllib.parse import urlsplit

import http_ece
import httpcore
import httpx
import jwt
import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from pydantic import Field, field_validator

from clarion.channels import outbound, push
from clarion.channels.base import ProviderConfig
from clarion.channels.webhook import parse_retry_after, send_bounded, transport_error
from clarion.domain.errors import PermanentSendError, SendError
from clarion.domain.model import Channel, Outgoing, SendResult

#: the largest payload one aes128gcm record can carry in the 4096 bytes push services must accept
PAYLOAD_LIMIT = 4096 - 86 - 17
#: VAPID tokens are valid 12 hours (RFC 8292 allows 24) and reused for one
JWT_LIFETIME = 12 * 3600
JWT_REUSE = 3600
_TOPIC = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
_URGENCY = {"urgent": "high", "high": "high", "normal": "normal", "low": "low"}

#: push-service HTTP statuses → what they mean for the delivery
ERRORS: dict[int, str] = {
    404: push.DEAD,  # the subscription expired or was revoked
    410: push.DEAD,
    413: push.PERMANENT,  # payload too large
    400: push.PERMANENT,  # malformed request
    401: push.MISCONFIGURED,  # the VAPID token itself was refused: the account's key or subject
    403: push.PERMANENT,  # the subscription was made for another application server key
    429: push.TRANSIENT,
}


def load_vapid_key(value: str) -> ec.EllipticCurvePrivateKey:
    """A VAPID private key from PEM or from the base64url raw 32-byte scalar (what ``web-push`` prints)."""
    text = value.strip()
    if "BEGIN" in text:
        key = serialization.load_pem_private_key(text.encode(), password=None)
    else:
        raw = push.b64url_decode(text)
        if len(raw) != 32:
            raise ValueError("a raw VAPID key is 32 bytes")
        key = ec.derive_private_key(int.from_bytes(raw, "big"), ec.SECP256R1())
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise ValueError("not a P-256 key")
    return key


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


class WebPushProvider(push.ConfirmedByApp):
    """Sends push content to browsers' Web Push subscriptions, as one VAPID application server."""

    kind: ClassVar[str] = "webpush"
    channels: ClassVar[frozenset[Channel]] = frozenset({Channel.PUSH})
    #: each browser vendor's push service has its own limits, none documented per sender
    default_rate: ClassVar[tuple[float | None, float | None]] = (None, None)

    class Config(ProviderConfig):
        secret_fields: ClassVar[frozenset[str]] = frozenset({"vapid_private_key", "receipt_secret"})

        vapid_private_key: str = Field(description="the VAPID key: PEM, or the base64url raw private key")
        vapid_subject: str = Field(description="mailto: or https: contact for the push services")
        ttl: int = Field(default=86400, ge=0, le=28 * 86400, description="seconds the push service keeps it")
        ca_certificate: str | None = Field(default=None, description="PEM authorities to trust instead of the system's")
        allow_private_networks: bool = False
        timeout: float = Field(default=10, gt=0)
        receipt_secret: str | None = push.receipt_secret_field()

        @field_validator("vapid_private_key")
        @classmethod
        def _key(cls, value: str) -> str:
            try:  # the message never quotes the key
                load_vapid_key(value)
            except (ValueError, TypeError, binascii.Error):
                raise ValueError("not a P-256 private key (PEM or base64url raw)") from None
            return value

        @field_validator("vapid_subject")
        @classmethod
        def _subject(cls, value: str) -> str:
            if not re.match(r"^(mailto:[^\s@]+@[^\s@]+|https://[^\s/]+\S*)$", value):
                raise ValueError("must be a mailto: address or an https: URL")
            return value

        @field_validator("ca_certificate")
        @classmethod
        def _ca(cls, value: str | None) -> str | None:
            return push.pem_authorities(value)

    def __init__(
        self,
        config: WebPushProvider.Config,
        *,
        name: str,
        resolve: outbound.Resolver | None = None,
        network: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        self.config = config
        self.name = name
        self._key = load_vapid_key(config.vapid_private_key)
        point = self._key.public_key().public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        )
        #: the application server key browsers subscribe with (``applicationServerKey``)
        self.public_key = b64url(point)
        self._tokens: dict[str, tuple[str, float]] = {}  # origin → (JWT, reuse until)
        self._client = outbound.client(
            timeout=config.timeout,
            allow_private_networks=config.allow_private_networks,
            resolve=resolve,
            network=network,
            verify=push.trusting(config.ca_certificate),
            http2=True,
        )

    def vapid(self, endpoint: str, now: float | None = None) -> str:
        """The ``Authorization`` header for ``endpoint``: a JWT for its origin, reused for an hour."""
        moment = time.time() if now is None else now
        parts = urlsplit(endpoint)
        origin = f"{parts.scheme}://{parts.netloc}"
        cached = self._tokens.get(origin)
        if cached is None or moment >= cached[1]:
            claims = {"aud": origin, "exp": int(moment) + JWT_LIFETIME, "sub": self.config.vapid_subject}
            token = jwt.encode(claims, self._key, algorithm="ES256", headers={"typ": "JWT"})
            cached = self._tokens[origin] = (token, moment + JWT_REUSE)
        return f"vapid t={cached[0]}, k={self.public_key}"

    async def send(self, batch: Sequence[Outgoing]) -> list[SendResult]:
        return await send_bounded(batch, self._one)

    async def _one(self, item: Outgoing) -> SendResult:
        payload = self.payload(item)
        if len(payload) > PAYLOAD_LIMIT:
            raise PermanentSendError(
                f"the payload is {len(payload)} bytes, over {PAYLOAD_LIMIT}", code="payload_too_large"
            )
        headers = {"TTL": str(self.config.ttl), "Urgency": _URGENCY.get(item.priority or "", "normal")}
        topic = item.content.get("collapse_id")
        if isinstance(topic, str) and _TOPIC.match(topic):
            headers["Topic"] = topic

        async def to(target: push.Target) -> str:
            subscription = _subscription(target.token, plain_http=self.config.allow_private_networks)
            return await self._post(subscription, payload, headers)

        return await push.each_device(item, self.kind, to, by_delivery=self.takes_receipts)

    def payload(self, item: Outgoing) -> bytes:
        """What the service worker receives (decrypted): the content's shown fields, link and data, and the keys
        it confirms the delivery with (an account with ``receipt_secret``)."""
        content = item.content
        keys = ("title", "body", "url", "link_type", "appid", "data", "collapse_id")
        shown = {k: content[k] for k in keys if content.get(k) is not None}
        return orjson.dumps({**shown, **push.confirmation(self.config.receipt_secret, item.delivery_id)})

    def encrypt(self, payload: bytes, subscription: dict[str, Any]) -> bytes:
        """RFC 8291: aes128gcm under a fresh ECDH key and salt, for this subscription's keys only."""
        keys = subscription["keys"]
        return bytes(
            http_ece.encrypt(
                payload,
                salt=os.urandom(16),
                private_key=ec.generate_private_key(ec.SECP256R1()),
                dh=push.b64url_decode(keys["p256dh"]),
                auth_secret=push.b64url_decode(keys["auth"]),
                version="aes128gcm",
            )
        )

    async def _post(self, subscription: dict[str, Any], payload: bytes, headers: dict[str, str]) -> str:
        endpoint = subscription["endpoint"]
        body = self.encrypt(payload, subscription)
        headers = {
            **headers,
            "Authorization": self.vapid(endpoint),
            "Content-Encoding": "aes128gcm",
            "Content-Type": "application/octet-stream",
        }
        try:
            response = await self._client.post(endpoint, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise transport_error(exc) from None
        except httpx.InvalidURL as exc:
            raise PermanentSendError(f"invalid endpoint: {exc}", code="url_not_allowed") from None
        if 200 <= response.status_code < 300:
            return response.headers.get("location", "")  # never the endpoint: it is a capability
        raise self.error(response)

    @staticmethod
    def error(response: httpx.Response) -> SendError:
        status = response.status_code
        verdict = ERRORS.get(status) or (push.TRANSIENT if status >= 500 else push.PERMANENT)
        retry_after = parse_retry_after(response.headers.get("retry-after"))
        message = f"push service HTTP {status}: {response.text[:200]}"
        return push.vendor_error(verdict, message, code=f"http_{status}", retry_after=retry_after)

    async def close(self) -> None:
        await self._client.aclose()


def _subscription(token: Any, *, plain_http: bool) -> dict[str, Any]:
    """The subscription a device item holds: an object, or (a bare string) its JSON text. A plain-http endpoint
    is taken only by an account allowed private networks (an in-house push service, tests)."""
    if isinstance(token, str):
        try:
            token = orjson.loads(token)
        except orjson.JSONDecodeError:
            raise PermanentSendError("the push token is not a Web Push subscription", code="invalid_address") from None
    try:
        return push.check_subscription(token, plain_http=plain_http)
    except ValueError as exc:
        raise PermanentSendError(f"unusable Web Push subscription: {exc}", code="invalid_address") from None
