"""Feishu (Lark) app messages: a custom app's bot writes to one user, by the user's open_id.

The app's ``tenant_access_token`` comes from ``auth/v3/tenant_access_token/internal`` (valid ``expire`` seconds,
two hours) and is shared through ``context.tokens``; a send answered 99991661 (no token), 99991663 (invalid)
or 99991668 (expired) drops that token and is made once more with a new one.

Read receipts come from Feishu's event subscription: with the app subscribed to ``im.message.message_read_v1``
and its request URL set to ``POST /r/{provider_name}``, Feishu posts the ids of the messages a user read. A
callback proves itself by ``X-Lark-Signature`` = hex SHA-256 of timestamp + nonce + Encrypt Key + body (when an
``encrypt_key`` is configured; the body is then AES-256-CBC encrypted and is decrypted here) and by the event's
Verification Token (when a ``verification_token`` is configured). Saving the request URL makes Feishu post a
``url_verification`` challenge first, answered by ``challenge``.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence
from typing import Any, ClassVar

import orjson
from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from pydantic import Field, field_validator

from clarion.channels import base, outbound, vendor
from clarion.channels.base import ProviderConfig
from clarion.channels.feishu_bot import Verdict, card, markdown_of, post, vendor_error
from clarion.channels.webhook import send_to
from clarion.domain import receipts
from clarion.domain.errors import PermanentSendError
from clarion.domain.model import Channel, Outgoing, SendResult

#: Feishu open-API ``code`` → what it means (any other non-zero code is permanent)
ERRORS: dict[int, Verdict] = {
    10003: "misconfigured",  # the app_id is invalid
    10014: "misconfigured",  # the app_secret is invalid
    99991672: "misconfigured",  # the app lacks the permission (im:message:send_as_bot)
    99991401: "misconfigured",  # the calling IP is not on the app's allow-list
    230006: "misconfigured",  # the app's bot ability is not enabled
    99991400: "transient",  # the app calls too often
    230020: "transient",  # this send triggers Feishu's frequency limit
    99991677: "transient",  # Feishu is busy (internal error)
    230001: "permanent",  # a parameter is invalid (the content, the receive_id)
    230013: "permanent",  # the user is outside the app's availability range: the app cannot reach them
    99992361: "permanent",  # the open_id belongs to another app
    99992402: "permanent",  # a field failed validation
}
#: the codes that mean "this tenant_access_token is not (or no longer) valid": refreshed once
TOKEN_CODES = frozenset({99991661, 99991663, 99991668})
READ_EVENT = "im.message.message_read_v1"


def token_refused(answer: tuple[int, str, dict[str, Any]]) -> bool:
    """Whether Feishu's answer (code, msg, body) says the tenant token is missing, invalid or expired."""
    return answer[0] in TOKEN_CODES


def signature(timestamp: str, nonce: str, encrypt_key: str, body: bytes) -> str:
    """The ``X-Lark-Signature`` of an event callback."""
    return hashlib.sha256((timestamp + nonce + encrypt_key).encode() + body).hexdigest()


def decrypt(encrypt_key: str, encrypted: str) -> bytes:
    """An encrypted event body opened: AES-256-CBC under SHA-256(Encrypt Key), the IV before the ciphertext."""
    raw = base64.b64decode(encrypted, validate=True)
    key = hashlib.sha256(encrypt_key.encode()).digest()
    decryptor = Cipher(algorithms.AES(key), modes.CBC(raw[:16])).decryptor()
    padded = decryptor.update(raw[16:]) + decryptor.finalize()
    unpadder = padding.PKCS7(128).unpadder()
    return unpadder.update(padded) + unpadder.finalize()


class FeishuAppProvider:
    """Sends the delivery's markdown card to the user's open_id as the app's bot."""

    kind: ClassVar[str] = "feishu_app"
    channels: ClassVar[frozenset[Channel]] = frozenset({Channel.FEISHU})
    uses_context: ClassVar[bool] = True
    #: Feishu: an app may send 50 messages a second and 1000 a minute
    default_rate: ClassVar[tuple[float | None, float | None]] = (50, 1000)

    class Config(ProviderConfig):
        secret_fields: ClassVar[frozenset[str]] = frozenset({"app_secret", "verification_token", "encrypt_key"})
        destination_fields: ClassVar[frozenset[str]] = frozenset({"endpoint"})

        app_id: str = Field(min_length=1, max_length=200)
        app_secret: str = Field(min_length=1, max_length=500)
        endpoint: str = "https://open.feishu.cn"
        #: the event subscription's Verification Token: events carrying it are Feishu's (None: not checked)
        verification_token: str | None = Field(default=None, min_length=1, max_length=200)
        #: the event subscription's Encrypt Key: events are signed (and encrypted) with it (None: not used)
        encrypt_key: str | None = Field(default=None, min_length=1, max_length=200)
        timeout: float = Field(default=10, gt=0, le=120)
        allow_private_networks: bool = False

        @field_validator("endpoint")
        @classmethod
        def _http_url(cls, value: str) -> str:
            return outbound.endpoint(value)

    def __init__(
        self, config: FeishuAppProvider.Config, *, name: str, context: vendor.ProviderContext | None = None
    ) -> None:
        self.config = config
        self.name = name
        self.context = context or vendor.ProviderContext()
        self._token_key = vendor.token_key("feishu", config.app_id, secret=config.app_secret)
        self._client = outbound.client(
            timeout=config.timeout, allow_private_networks=config.allow_private_networks, http2=True
        )

    async def send(self, batch: Sequence[Outgoing]) -> list[SendResult]:
        allow = self.config.allow_private_networks
        return await send_to(self.config.endpoint, batch, self._send_one, allow_private_networks=allow)

    async def _fetch_token(self) -> tuple[str, float]:
        config = self.config
        url = f"{config.endpoint}/open-apis/auth/v3/tenant_access_token/internal"
        body = {"app_id": config.app_id, "app_secret": config.app_secret}
        code, msg, answer = await post(self._client, url, config.timeout, body)
        if code != 0 or not answer.get("tenant_access_token"):
            raise vendor_error(code, f"tenant_access_token: {msg}", ERRORS)
        return str(answer["tenant_access_token"]), float(answer.get("expire") or 7200)

    async def _send_one(self, item: Outgoing) -> SendResult:
        open_id = item.address
        if not isinstance(open_id, str) or not open_id:
            raise PermanentSendError(f"not a Feishu open_id: {open_id!r}", code="invalid_address")
        title, text = markdown_of(item)
        config = self.config
        url = f"{config.endpoint}/open-apis/im/v1/messages"
        body = {
            "receive_id": open_id,
            "msg_type": "interactive",
            "content": orjson.dumps(card(title, text)).decode(),
            "uuid": item.delivery_id[:50],  # Feishu drops a second send with the same uuid within an hour
        }

        async def send(token: str) -> tuple[int, str, dict[str, Any]]:
            headers = {"Authorization": f"Bearer {token}"}
            params = {"receive_id_type": "open_id"}
            return await post(self._client, url, config.timeout, body, params=params, headers=headers)

        code, msg, answer = await self.context.tokens.call_with_token(
            self._token_key, self._fetch_token, send, expired=token_refused
        )
        if code != 0:
            raise vendor_error(code, msg, ERRORS, retry_after=1.0 if ERRORS.get(code) == "transient" else None)
        message_id = (answer.get("data") or {}).get("message_id")
        if not message_id:
            raise PermanentSendError(f"Feishu answered no message_id: {answer}"[:300], code="invalid_response")
        return SendResult(item.delivery_id, provider_message_id=str(message_id))

    # -- the event subscription ----------------------------------------------------------------------------

    @property
    def takes_receipts(self) -> bool:
        return bool(self.config.verification_token or self.config.encrypt_key)

    def _signed(self, callback: base.Callback) -> bool:
        key = self.config.encrypt_key
        timestamp = callback.headers.get("x-lark-request-timestamp")
        nonce = callback.headers.get("x-lark-request-nonce")
        if not key or timestamp is None or nonce is None:
            return False
        expected = signature(timestamp, nonce, key, callback.body)
        return base.same_secret(expected, callback.headers.get("x-lark-signature", "").lower())

    def _document(self, callback: base.Callback) -> tuple[dict[str, Any], bool]:
        """The callback's JSON, decrypted when it came encrypted (and whether it did)."""
        try:
            document = orjson.loads(callback.body)
        except orjson.JSONDecodeError:
            raise base.UnreadableCallback("the event body is not JSON") from None
        if not isinstance(document, dict):
            raise base.UnreadableCallback("the event body is not a JSON object")
        if "encrypt" not in document:
            return document, False
        if not self.config.encrypt_key:
            raise base.RefusedCallback("an encrypted event, and this account has no encrypt_key")
        try:
            opened = orjson.loads(decrypt(self.config.encrypt_key, str(document["encrypt"])))
        except (ValueError, orjson.JSONDecodeError):
            raise base.RefusedCallback("the encrypted event does not open with this account's encrypt_key") from None
        if not isinstance(opened, dict):
            raise base.UnreadableCallback("the decrypted event is not a JSON object")
        return opened, True

    def _token_matches(self, document: dict[str, Any]) -> bool:
        header = document.get("header")
        given = header.get("token") if isinstance(header, dict) else document.get("token")
        return base.same_secret(self.config.verification_token or "", given if isinstance(given, str) else None)

    def challenge(self, callback: base.Callback) -> dict[str, Any] | None:
        """The answer to Feishu's ``url_verification`` (``{"challenge": …}``), or None when this callback is not
        one. It proves itself by the Verification Token, a valid signature, or opening with the Encrypt Key."""
        try:
            document, encrypted = self._document(callback)
        except base.UnreadableCallback:
            return None
        if document.get("type") != "url_verification":
            return None
        if self.config.verification_token:
            proven = self._token_matches(document)
        else:
            proven = encrypted or self._signed(callback)
        if not proven:
            raise base.RefusedCallback("the url_verification carries a wrong or missing token")
        return {"challenge": str(document.get("challenge", ""))}

    def receipts(self, callback: base.Callback) -> base.ReadCallback:
        if not self.takes_receipts:
            raise base.RefusedCallback("this account takes no events")
        if self.config.encrypt_key and not self._signed(callback):
            raise base.RefusedCallback("missing or wrong X-Lark-Signature")
        document, _ = self._document(callback)
        if self.config.verification_token and not self._token_matches(document):
            raise base.RefusedCallback("missing or wrong verification token")
        header, event = _object(document.get("header")), _object(document.get("event"))
        event_type = header.get("event_type") or event.get("type")
        if event_type != READ_EVENT:
            return base.ReadCallback([], ignored=1)
        ids = event.get("message_id_list")
        if not isinstance(ids, list) or not all(isinstance(i, str) and i for i in ids):
            raise base.UnreadableCallback("a read event without message_id_list")
        reader = _object(event.get("reader"))
        detail = {"vendor_status": "read"}
        if reader.get("read_time"):
            detail["read_time"] = str(reader["read_time"])
        found = [receipts.Receipt(i[:300], receipts.Event.READ, "Feishu: read by the user", dict(detail)) for i in ids]
        return base.ReadCallback(found)

    async def close(self) -> None:
        await self._client.aclose()


def _object(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}
