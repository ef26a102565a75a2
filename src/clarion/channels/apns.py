"""Apple Push Notification service: one ``POST /3/device/{token}`` per device, over HTTP/2 (APNs speaks
nothing else), on one multiplexed connection per account.

The account authenticates with a provider token: a JWT ``{"iss": team_id, "iat": …}`` with header
``kid = key_id``, signed ES256 with the ``.p8`` key Apple issued. Apple refuses a token older than an hour
and refuses refreshing more than about every 20 minutes, so one token is signed and reused for 50 minutes.
It is made here, not fetched, but it still goes through the shared ``vendor.TokenCache``: every process of an
account then presents the same token (Apple counts the updates), and an ``ExpiredProviderToken`` or
``InvalidProviderToken`` forgets it and sends once more with a fresh one.

``apns-priority`` is 10 (send now) for urgent messages and when the priority is unknown, 5 (may be held to
save the battery) otherwise; a content with no title and body is a background push (priority 5, as Apple
requires). The link (``url``, ``link_type``, ``appid``) and the content's ``data`` ride as custom keys beside
``aps`` for the app to open. ``apns-collapse-id`` comes from the content's ``collapse_id``.

APNs has no delivery receipts: a notification APNs accepted stays ``sent``, unless the account sets
``receipt_secret`` and the app confirms it (``push``: ``clarion_delivery`` and ``clarion_ack`` ride as custom
keys beside ``aps``; the app posts them to ``POST /r/{name}``), which makes it ``delivered``.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from typing import Any, ClassVar
from urllib.parse import quote

import httpcore
import httpx
import jwt
import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from pydantic import Field, field_validator

from clarion.channels import outbound, push, vendor
from clarion.channels.base import ProviderConfig
from clarion.channels.webhook import http_status_error, parse_retry_after, send_bounded, transport_error
from clarion.domain.errors import PermanentSendError, SendError
from clarion.domain.model import Channel, Outgoing, SendResult

PRODUCTION = "https://api.push.apple.com"
SANDBOX = "https://api.sandbox.push.apple.com"
#: how long a provider token is offered to the cache as valid; the cache's margin makes it 50 minutes of use
TOKEN_LIFETIME = 55 * 60.0
_URGENT = ("urgent", None)
_REFRESH = ("ExpiredProviderToken", "InvalidProviderToken")

#: APNs ``reason`` values → what they mean for the delivery
ERRORS: dict[str, str] = {
    "Unregistered": push.DEAD,  # 410: the app is no longer on the device
    "BadDeviceToken": push.DEAD,
    "DeviceTokenNotForTopic": push.PERMANENT,  # another app's token: the device may be fine
    "MissingDeviceToken": push.PERMANENT,
    "BadTopic": push.MISCONFIGURED,
    "TopicDisallowed": push.MISCONFIGURED,
    "MissingTopic": push.MISCONFIGURED,
    "InvalidProviderToken": push.MISCONFIGURED,  # still refused with a fresh token
    "ExpiredProviderToken": push.MISCONFIGURED,
    "MissingProviderToken": push.MISCONFIGURED,
    "BadCertificate": push.MISCONFIGURED,
    "BadCertificateEnvironment": push.MISCONFIGURED,
    "Forbidden": push.MISCONFIGURED,
    "TooManyRequests": push.TRANSIENT,  # too many notifications to one device
    "TooManyProviderTokenUpdates": push.TRANSIENT,
    "InternalServerError": push.TRANSIENT,
    "ServiceUnavailable": push.TRANSIENT,
    "Shutdown": push.TRANSIENT,
    "IdleTimeout": push.TRANSIENT,
    "PayloadTooLarge": push.PERMANENT,
    "PayloadEmpty": push.PERMANENT,
    "BadCollapseId": push.PERMANENT,
    "BadExpirationDate": push.PERMANENT,
    "BadPriority": push.PERMANENT,
    "BadMessageId": push.PERMANENT,
    "DuplicateHeaders": push.PERMANENT,
    "InvalidPushType": push.PERMANENT,
    "BadPath": push.PERMANENT,
    "MethodNotAllowed": push.PERMANENT,
}


class ApnsProvider(push.ConfirmedByApp):
    """Sends push content to iOS/macOS device tokens of one app (``bundle_id``)."""

    kind: ClassVar[str] = "apns"
    channels: ClassVar[frozenset[Channel]] = frozenset({Channel.PUSH})
    uses_context: ClassVar[bool] = True
    #: Apple documents no rate limit per account (only ``TooManyRequests`` per device)
    default_rate: ClassVar[tuple[float | None, float | None]] = (None, None)

    class Config(ProviderConfig):
        secret_fields: ClassVar[frozenset[str]] = frozenset({"private_key", "receipt_secret"})
        destination_fields: ClassVar[frozenset[str]] = frozenset({"endpoint", "sandbox"})

        team_id: str = Field(min_length=1, max_length=20)
        key_id: str = Field(min_length=1, max_length=20)
        private_key: str = Field(description="the .p8 signing key (PEM)")
        bundle_id: str = Field(min_length=1, max_length=255, description="the app's bundle id: apns-topic")
        sandbox: bool = Field(default=False, description="the development environment (api.sandbox.push.apple.com)")
        endpoint: str | None = Field(default=None, description="replaces the environment's URL")
        ca_certificate: str | None = Field(default=None, description="PEM authorities to trust instead of the system's")
        ttl: int = Field(default=86400, ge=0, description="seconds APNs keeps trying (apns-expiration); 0: once")
        sound: str | None = None
        allow_private_networks: bool = False
        timeout: float = Field(default=10, gt=0)
        receipt_secret: str | None = push.receipt_secret_field()

        @field_validator("private_key")
        @classmethod
        def _key(cls, value: str) -> str:
            try:  # the message never quotes the key
                key = serialization.load_pem_private_key(value.encode(), password=None)
            except (ValueError, TypeError):
                raise ValueError("not a PEM private key (the .p8 file)") from None
            if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
                raise ValueError("not a P-256 (ES256) key")
            return value

        @field_validator("ca_certificate")
        @classmethod
        def _ca(cls, value: str | None) -> str | None:
            return push.pem_authorities(value)

    def __init__(
        self,
        config: ApnsProvider.Config,
        *,
        name: str,
        context: vendor.ProviderContext | None = None,
        resolve: outbound.Resolver | None = None,
        network: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        self.config = config
        self.name = name
        self.tokens = (context or vendor.ProviderContext()).tokens
        self._key = serialization.load_pem_private_key(config.private_key.encode(), password=None)
        fingerprint = hashlib.sha256(config.private_key.encode()).hexdigest()[:16]
        self._token_key = f"apns:{config.team_id}:{config.key_id}:{fingerprint}"
        base = config.endpoint or (SANDBOX if config.sandbox else PRODUCTION)
        self._base = base.rstrip("/")
        verify = push.trusting(config.ca_certificate)
        self._client = outbound.client(
            timeout=config.timeout,
            allow_private_networks=config.allow_private_networks,
            resolve=resolve,
            network=network,
            verify=verify,
            http2=True,
        )

    def provider_token(self, now: float | None = None) -> str:
        """A fresh ES256 provider token."""
        claims = {"iss": self.config.team_id, "iat": int(time.time() if now is None else now)}
        return jwt.encode(claims, self._key, algorithm="ES256", headers={"kid": self.config.key_id})  # type: ignore[arg-type]

    async def _sign(self) -> tuple[str, float]:
        return self.provider_token(), TOKEN_LIFETIME

    async def send(self, batch: Sequence[Outgoing]) -> list[SendResult]:
        return await send_bounded(batch, self._one)

    async def _one(self, item: Outgoing) -> SendResult:
        payload, headers = self.notification(item)
        body = orjson.dumps(payload)

        async def to(target: push.Target) -> str:
            if not isinstance(target.token, str):
                raise push.none_for(self.kind)
            return await self._post(target.token, body, headers)

        return await push.each_device(item, self.kind, to, by_delivery=self.takes_receipts)

    def notification(self, item: Outgoing) -> tuple[dict[str, Any], dict[str, str]]:
        """The JSON payload and the ``apns-*`` headers of one delivery (the same for each of its devices)."""
        content = item.content
        title, body = push.notification(content)
        alert = {k: v for k, v in (("title", title), ("body", body)) if v is not None}
        aps: dict[str, Any] = {}
        if alert:
            aps["alert"] = alert
            if self.config.sound:
                aps["sound"] = self.config.sound
            push_type, priority = "alert", "10" if item.priority in _URGENT else "5"
        else:
            aps["content-available"] = 1
            push_type, priority = "background", "5"
        payload: dict[str, Any] = {
            **push.string_data(content),
            **push.link_extras(content),
            **push.confirmation(self.config.receipt_secret, item.delivery_id),
            "aps": aps,
        }
        expiration = str(int(time.time()) + self.config.ttl) if self.config.ttl else "0"
        headers = {
            "apns-topic": self.config.bundle_id,
            "apns-push-type": push_type,
            "apns-priority": priority,
            "apns-expiration": expiration,
            "content-type": "application/json",
        }
        if content.get("collapse_id"):
            headers["apns-collapse-id"] = str(content["collapse_id"])[:64]
        return payload, headers

    async def _post(self, device: str, body: bytes, headers: dict[str, str]) -> str:
        url = f"{self._base}/3/device/{quote(device, safe='')}"
        for attempt in (1, 2):
            token = await self.tokens.get(self._token_key, self._sign)
            try:
                response = await self._client.post(
                    url, content=body, headers={**headers, "authorization": f"bearer {token}"}
                )
            except httpx.HTTPError as exc:
                raise transport_error(exc) from None
            reason = _reason(response)
            if response.status_code == 403 and reason in _REFRESH and attempt == 1:
                await self.tokens.invalidate(self._token_key, token)
                continue
            break
        if response.status_code == 200:
            return response.headers.get("apns-id", "")
        raise self.error(response, reason)

    def error(self, response: httpx.Response, reason: str | None) -> SendError:
        verdict = ERRORS.get(reason or "")
        if verdict is None:
            return http_status_error(response) or PermanentSendError("unexpected answer", code="apns_error")
        retry_after = parse_retry_after(response.headers.get("retry-after"))
        message = f"APNs {response.status_code} {reason}"
        return push.vendor_error(verdict, message, code=str(reason), retry_after=retry_after)

    async def close(self) -> None:
        await self._client.aclose()


def _reason(response: httpx.Response) -> str | None:
    if response.status_code == 200:
        return None
    try:
        reason = response.json().get("reason")
    except (ValueError, AttributeError):
        return None
    return str(reason) if reason else None
