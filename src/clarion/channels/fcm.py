"""Firebase Cloud Messaging, HTTP v1 API: one ``messages:send`` request per device token.

FCM takes an OAuth2 access token, not the key itself: the account's service-account key signs a JWT (RS256,
``iss``/``sub`` the service account, ``aud`` its ``token_uri``, the ``firebase.messaging`` scope) that Google's
token endpoint exchanges for a token valid an hour. The token goes through the shared ``vendor.TokenCache``,
so every worker of an account uses one, and a ``401 UNAUTHENTICATED`` forgets it and sends once more.

What the device shows is the content's ``title`` and ``body``; the content's ``data`` (if any) is the data
message's payload, and the link (``url``, ``link_type``, ``appid``) always rides in ``data`` too, so the app's
one handler opens it: an ``h5`` link also becomes ``webpush.fcm_options.link`` for browsers (FCM opens it on
a click), a ``native`` or ``miniprogram`` link only the app can open. The account's ``android``, ``apns`` and
``webpush`` objects are FCM's platform overrides, laid under what each message sets.

FCM has no delivery receipts: a message FCM accepted stays ``sent``, unless the account sets
``receipt_secret`` and the app confirms it (``push``: ``clarion_delivery`` and ``clarion_ack`` ride in
``data``; the app posts them to ``POST /r/{name}``), which makes it ``delivered``.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import httpcore
import httpx
import jwt
import orjson
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from pydantic import Field, field_validator, model_validator

from clarion.channels import outbound, push, vendor
from clarion.channels.base import ProviderConfig
from clarion.channels.webhook import http_status_error, parse_retry_after, send_bounded, transport_error
from clarion.domain.errors import PermanentSendError, SendError, TransientSendError
from clarion.domain.model import Channel, Outgoing, SendResult

SCOPE = "https://www.googleapis.com/auth/firebase.messaging"
GRANT_TYPE = "urn:ietf:params:oauth:grant-type:jwt-bearer"
_URGENT = ("urgent", "high")

#: FCM v1 error codes (``details[].errorCode``, else the ``status``) → what they mean for the delivery
ERRORS: dict[str, str] = {
    "UNREGISTERED": push.DEAD,  # the app was uninstalled or the token expired
    "INVALID_ARGUMENT": push.PERMANENT,  # dead when it names the token (see ``_verdict``)
    # the token belongs to another Firebase project: the device may be fine, this account cannot reach it
    "SENDER_ID_MISMATCH": push.PERMANENT,
    "QUOTA_EXCEEDED": push.TRANSIENT,
    "RESOURCE_EXHAUSTED": push.TRANSIENT,
    "UNAVAILABLE": push.TRANSIENT,
    "INTERNAL": push.TRANSIENT,
    "THIRD_PARTY_AUTH_ERROR": push.MISCONFIGURED,  # the APNs or Web Push credentials stored in Firebase
    "PERMISSION_DENIED": push.MISCONFIGURED,
    "UNAUTHENTICATED": push.MISCONFIGURED,  # still refused with a fresh token
    "NOT_FOUND": push.PERMANENT,
    "UNSPECIFIED_ERROR": push.PERMANENT,
}


class FcmProvider(push.ConfirmedByApp):
    """Sends push content to FCM registration tokens through one Firebase project."""

    kind: ClassVar[str] = "fcm"
    channels: ClassVar[frozenset[Channel]] = frozenset({Channel.PUSH})
    uses_context: ClassVar[bool] = True
    #: FCM's documented quota: 600,000 messages a minute per project
    default_rate: ClassVar[tuple[float | None, float | None]] = (None, 600_000.0)

    class Config(ProviderConfig):
        secret_fields: ClassVar[frozenset[str]] = frozenset({"service_account", "receipt_secret"})
        destination_fields: ClassVar[frozenset[str]] = frozenset({"token_uri", "endpoint"})

        service_account: dict[str, Any] = Field(description="the service account's JSON key (object or text)")
        project_id: str | None = Field(default=None, min_length=1, description="default: the key's project_id")
        token_uri: str | None = Field(default=None, description="default: the key's token_uri")
        endpoint: str = "https://fcm.googleapis.com"
        allow_private_networks: bool = False
        timeout: float = Field(default=10, gt=0)
        android: dict[str, Any] | None = None
        apns: dict[str, Any] | None = None
        webpush: dict[str, Any] | None = None
        receipt_secret: str | None = push.receipt_secret_field()

        @field_validator("service_account", mode="before")
        @classmethod
        def _key_text(cls, value: Any) -> Any:
            if isinstance(value, str | bytes):
                try:
                    return orjson.loads(value)
                except orjson.JSONDecodeError:
                    raise ValueError("not a JSON service-account key") from None
            return value

        @field_validator("service_account")
        @classmethod
        def _key(cls, value: dict[str, Any]) -> dict[str, Any]:
            for name in ("client_email", "private_key"):
                if not isinstance(value.get(name), str) or not value[name]:
                    raise ValueError(f"the service-account key has no {name}")
            try:  # the message never quotes the key
                key = serialization.load_pem_private_key(value["private_key"].encode(), password=None)
            except (ValueError, TypeError):
                raise ValueError("private_key is not a PEM private key") from None
            if not isinstance(key, rsa.RSAPrivateKey):
                raise ValueError("private_key is not an RSA key")
            return value

        @model_validator(mode="after")
        def _defaults(self) -> FcmProvider.Config:
            self.project_id = self.project_id or self.service_account.get("project_id")
            self.token_uri = self.token_uri or self.service_account.get("token_uri")
            if not self.project_id:
                raise ValueError("project_id is needed: the service-account key has none")
            if not self.token_uri:
                raise ValueError("token_uri is needed: the service-account key has none")
            self.endpoint = self.endpoint.rstrip("/")
            return self

    def __init__(
        self,
        config: FcmProvider.Config,
        *,
        name: str,
        context: vendor.ProviderContext | None = None,
        resolve: outbound.Resolver | None = None,
        network: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        self.config = config
        self.name = name
        self.tokens = (context or vendor.ProviderContext()).tokens
        account = config.service_account
        self._email: str = account["client_email"]
        self._key_id: str | None = account.get("private_key_id")
        self._key = serialization.load_pem_private_key(account["private_key"].encode(), password=None)
        assert config.token_uri is not None
        self._token_uri: str = config.token_uri
        fingerprint = hashlib.sha256(f"{self._token_uri}\n{account['private_key']}".encode()).hexdigest()[:16]
        self._token_key = f"fcm:{self._email}:{fingerprint}"
        self._url = f"{config.endpoint}/v1/projects/{config.project_id}/messages:send"
        self._client = outbound.client(
            timeout=config.timeout,
            allow_private_networks=config.allow_private_networks,
            resolve=resolve,
            network=network,
            http2=True,
        )

    # -- the access token --------------------------------------------------------------------------------

    def assertion(self, now: float | None = None) -> str:
        """The signed JWT the token endpoint exchanges for an access token."""
        issued = int(time.time() if now is None else now)
        claims: dict[str, Any] = {"iss": self._email, "sub": self._email, "aud": self._token_uri, "scope": SCOPE}
        claims |= {"iat": issued, "exp": issued + 3600}
        headers = {"kid": self._key_id} if self._key_id else None
        return jwt.encode(claims, self._key, algorithm="RS256", headers=headers)  # type: ignore[arg-type]

    async def _fetch_token(self) -> tuple[str, float]:
        form = {"grant_type": GRANT_TYPE, "assertion": self.assertion()}
        try:
            response = await self._client.post(self._token_uri, data=form)
        except httpx.HTTPError as exc:
            raise transport_error(exc) from None
        if response.status_code == 429 or response.status_code >= 500:
            raise http_status_error(response) or TransientSendError("token endpoint failed", code="token_error")
        try:
            answer = response.json()
        except ValueError:
            answer = {}
        if response.status_code != 200 or not isinstance(answer.get("access_token"), str):
            code = str(answer.get("error") or f"http_{response.status_code}")
            why = answer.get("error_description") or response.text[:200]
            raise PermanentSendError(
                f"the token endpoint refused the key: {code}: {why}", code=code, misconfigured=True
            )
        return answer["access_token"], float(answer.get("expires_in") or 3600)

    # -- sending -----------------------------------------------------------------------------------------

    async def send(self, batch: Sequence[Outgoing]) -> list[SendResult]:
        return await send_bounded(batch, self._one)

    async def _one(self, item: Outgoing) -> SendResult:
        async def to(target: push.Target) -> str:
            if not isinstance(target.token, str):
                raise push.none_for(self.kind)
            return await self._post({"message": self.message(item, target.token)})

        return await push.each_device(item, self.kind, to, by_delivery=self.takes_receipts)

    def message(self, item: Outgoing, token: str) -> dict[str, Any]:
        """The v1 ``message`` for one device: notification, data, and the platform overrides."""
        content = item.content
        title, body = push.notification(content)
        message: dict[str, Any] = {"token": token}
        shown = {k: v for k, v in (("title", title), ("body", body)) if v is not None}
        if shown:
            message["notification"] = shown
        data = {
            **push.string_data(content),
            **push.link_extras(content),
            **push.confirmation(self.config.receipt_secret, item.delivery_id),
        }
        if data:
            message["data"] = data
        android: dict[str, Any] = {}
        if item.priority in _URGENT:
            android["priority"] = "HIGH"
        if content.get("collapse_id"):
            android["collapse_key"] = str(content["collapse_id"])
        webpush: dict[str, Any] = {}
        url = content.get("url")
        if content.get("link_type") == "h5" and isinstance(url, str) and url.startswith("https://"):
            webpush["fcm_options"] = {"link": url}
        for name, ours in (("android", android), ("apns", {}), ("webpush", webpush)):
            merged = _merge(getattr(self.config, name) or {}, ours)
            if merged:
                message[name] = merged
        return message

    async def _post(self, body: dict[str, Any]) -> str:
        payload = orjson.dumps(body)
        for attempt in (1, 2):
            token = await self.tokens.get(self._token_key, self._fetch_token)
            headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
            try:
                response = await self._client.post(self._url, content=payload, headers=headers)
            except httpx.HTTPError as exc:
                raise transport_error(exc) from None
            if response.status_code == 401 and attempt == 1:  # expired or revoked: once with a fresh token
                await self.tokens.invalidate(self._token_key, token)
                continue
            break
        if response.status_code == 200:
            name = response.json().get("name")
            return str(name) if name else ""
        raise self.error(response)

    def error(self, response: httpx.Response) -> SendError:
        """Our error for FCM's answer: its ``errorCode`` (or status) through ``ERRORS``."""
        try:
            error = response.json()["error"]
            status = str(error.get("status") or "")
            message = str(error.get("message") or "")
            details = error.get("details") or []
        except (ValueError, KeyError, TypeError, AttributeError):
            return http_status_error(response) or PermanentSendError("unexpected answer", code="fcm_error")
        code = next((str(d["errorCode"]) for d in details if isinstance(d, Mapping) and d.get("errorCode")), status)
        verdict = _verdict(code, message, details)
        if verdict is None:
            return http_status_error(response) or PermanentSendError(message, code=code or "fcm_error")
        retry_after = parse_retry_after(response.headers.get("retry-after"))
        return push.vendor_error(verdict, f"FCM {code}: {message}", code=code, retry_after=retry_after)

    async def close(self) -> None:
        await self._client.aclose()


def _verdict(code: str, message: str, details: list[Any]) -> str | None:
    """``ERRORS``' row, with ``INVALID_ARGUMENT`` about the token itself read as a dead token."""
    verdict = ERRORS.get(code)
    if code == "INVALID_ARGUMENT":
        fields = [
            violation.get("field")
            for detail in details
            if isinstance(detail, Mapping)
            for violation in detail.get("fieldViolations") or []
            if isinstance(violation, Mapping)
        ]
        if "message.token" in fields or "registration token" in message.lower():
            return push.DEAD
    return verdict


def _merge(base: Mapping[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    """``base`` with ``top`` laid over it, objects merged key by key."""
    merged = dict(base)
    for key, value in top.items():
        below = merged.get(key)
        merged[key] = _merge(below, value) if isinstance(below, Mapping) and isinstance(value, Mapping) else value
    return merged
