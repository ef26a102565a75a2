"""A generic JSON-over-HTTP SMS vendor, described by configuration instead of code.

Most SMS gateways take one JSON request per message and answer with JSON that holds a message id and,
often, a vendor status even on HTTP 200. The request body is a template whose string values may contain
``{phone}``, ``{text}``, ``{delivery_id}`` and ``{sender}`` — only those names are replaced (plain string
substitution, nothing is evaluated), so message text can never inject structure into the request.

The delivery id reaches the vendor as ``Clarion-Delivery-Id`` (and ``{delivery_id}`` where the vendor takes
a client reference), so a re-send can be de-duplicated on their side.

Delivery receipts come back to ``POST /r/{provider_name}`` when the account has a ``receipts`` block: how the
vendor proves a callback is its own (an HMAC-SHA256 of the raw body under ``receipt_secret``, or
``receipt_secret`` itself as a shared token, in a header or ``?token=``), where the message id, the vendor status
and its reason sit in the body (JSON or a form; one receipt, a list, or a list under ``items_path``), and which
vendor statuses mean delivered or undelivered.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal
from urllib.parse import parse_qsl

import httpcore
import httpx
import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from clarion.channels import base, outbound
from clarion.channels.base import ProviderConfig
from clarion.channels.webhook import http_status_error, send_to, transport_error
from clarion.domain import receipts
from clarion.domain.errors import PermanentSendError, SendError, TransientSendError
from clarion.domain.model import Channel, Outgoing, SendResult

_PLACEHOLDER = re.compile(r"\{(phone|text|delivery_id|sender)\}")
_E164 = re.compile(r"^\+[1-9]\d{6,14}$")
_MISSING = object()
_NO_ERROR = (None, "", 0, "0", False)


def fill(template: Any, values: dict[str, str]) -> Any:
    """``template`` with placeholders replaced in every string value, recursively; keys are left alone."""
    if isinstance(template, str):
        return _PLACEHOLDER.sub(lambda m: values[m.group(1)], template)
    if isinstance(template, dict):
        return {key: fill(value, values) for key, value in template.items()}
    if isinstance(template, list):
        return [fill(value, values) for value in template]
    return template


def dig(document: Any, path: str | None) -> Any:
    """The value at a dotted path (``data.items.0.id``; numbers index lists), or ``_MISSING``."""
    if not path:
        return _MISSING
    node = document
    for part in path.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return _MISSING
    return node


def _same(a: Any, b: Any) -> bool:
    """Equality that does not confuse ``True`` with ``1`` or ``False`` with ``0``."""
    return a == b and isinstance(a, bool) == isinstance(b, bool)


class ReceiptMapping(BaseModel):
    """How this vendor's delivery receipts are verified and read (the secret itself is ``receipt_secret``)."""

    model_config = ConfigDict(extra="forbid")

    #: ``hmac``: the header ``signature_header`` holds the hex HMAC-SHA256 of the raw body under the secret
    #: (``sha256=`` before it is allowed); ``token``: the header ``token_header`` or the query's ``token`` is it
    verify: Literal["hmac", "token"] = "hmac"
    signature_header: str = Field(default="X-Signature", min_length=1, max_length=100)
    token_header: str = Field(default="X-Token", min_length=1, max_length=100)
    #: where the receipts are when the vendor sends several in one body (None: the body is one, or a list)
    items_path: str | None = None
    id_path: str = Field(default="message_id", min_length=1)
    status_path: str = Field(default="status", min_length=1)
    #: the vendor's reason or error code ("phone off"), kept on the timeline
    reason_path: str | None = None
    delivered: list[str] = Field(default_factory=lambda: ["DELIVRD", "delivered", "DELIVERED"], min_length=1)
    undelivered: list[str] = Field(
        default_factory=lambda: ["UNDELIV", "undelivered", "UNDELIVERED", "EXPIRED", "REJECTD", "failed"]
    )

    def event(self, vendor_status: Any) -> receipts.Event | None:
        text = str(vendor_status)
        if text in self.delivered:
            return receipts.Event.DELIVERED
        if text in self.undelivered:
            return receipts.Event.UNDELIVERED
        return None


class SmsHttpProvider:
    """One HTTP request per SMS, shaped by the configured template, read by the configured paths."""

    kind: ClassVar[str] = "sms_http"
    channels: ClassVar[frozenset[Channel]] = frozenset({Channel.SMS})

    class Config(ProviderConfig):
        #: where a vendor's credentials sit: the URL (userinfo, ``?api_key=``), the header values (a token)
        #: and the body template's literal strings (an account key); placeholders are what Clarion fills in
        url_fields: ClassVar[frozenset[str]] = frozenset({"url"})
        header_fields: ClassVar[frozenset[str]] = frozenset({"headers"})
        template_fields: ClassVar[Mapping[str, re.Pattern[str]]] = {"body": _PLACEHOLDER}

        url: str = Field(min_length=1)
        method: str = "POST"
        headers: dict[str, str] = Field(default_factory=dict)
        body: dict[str, Any] = Field(default_factory=lambda: {"to": "{phone}", "text": "{text}"})
        sender: str | None = None
        message_id_path: str = "message_id"
        status_path: str | None = None
        success_values: list[Any] = Field(default_factory=lambda: ["ok", "OK", "success", 0, "0", True])
        error_path: str | None = None
        transient_codes: list[str] = Field(default_factory=list)
        timeout: float = Field(default=10, gt=0)
        allow_private_networks: bool = False
        #: delivery receipts at ``POST /r/{provider_name}`` (None: this account takes none)
        receipts: ReceiptMapping | None = None
        #: the HMAC key (or the shared token) that proves a receipt callback comes from the vendor
        receipt_secret: str | None = None

        secret_fields: ClassVar[frozenset[str]] = frozenset({"receipt_secret"})

        @field_validator("url")
        @classmethod
        def _http_url(cls, value: str) -> str:
            try:
                outbound.check_syntax(value)
            except SendError as exc:
                raise ValueError(exc.message) from None
            return value

        @model_validator(mode="after")
        def _receipts_have_a_secret(self) -> SmsHttpProvider.Config:
            if self.receipts is not None and not self.receipt_secret:
                raise ValueError("receipts need receipt_secret: the key (or token) proving a callback is the vendor's")
            return self

        @field_validator("method")
        @classmethod
        def _method_with_body(cls, value: str) -> str:
            method = value.upper()
            if method not in ("POST", "PUT", "PATCH"):
                raise ValueError("method must be POST, PUT or PATCH (the request carries a JSON body)")
            return method

    def __init__(
        self,
        config: SmsHttpProvider.Config,
        *,
        name: str,
        resolve: outbound.Resolver | None = None,
        network: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        self.config = config
        self.name = name
        self._client = outbound.client(
            timeout=config.timeout,
            allow_private_networks=config.allow_private_networks,
            resolve=resolve,
            network=network,
        )

    async def send(self, batch: Sequence[Outgoing]) -> list[SendResult]:
        allow = self.config.allow_private_networks
        return await send_to(self.config.url, batch, self._send_one, allow_private_networks=allow)

    async def _send_one(self, item: Outgoing) -> SendResult:
        phone, text = item.address, item.content.get("text")
        if not isinstance(phone, str) or not _E164.match(phone):
            raise PermanentSendError(f"not an E.164 phone number: {phone!r}", code="invalid_address")
        if not isinstance(text, str) or not text:
            raise PermanentSendError("SMS content needs 'text'", code="invalid_content")
        values = {
            "phone": phone,
            "text": text,
            "delivery_id": item.delivery_id,
            "sender": self.config.sender or "",
        }
        headers = httpx.Headers(self.config.headers)
        headers["Clarion-Delivery-Id"] = item.delivery_id
        try:
            async with asyncio.timeout(self.config.timeout):  # bounds the whole exchange, not each read
                response = await self._client.request(
                    self.config.method, self.config.url, json=fill(self.config.body, values), headers=headers
                )
        except (httpx.HTTPError, TimeoutError) as exc:
            raise transport_error(exc) from None
        try:
            document: Any = response.json()
        except ValueError:
            document = None
        error = http_status_error(response)
        if error is not None:
            vendor_code = dig(document, self.config.error_path)
            transient = vendor_code is not _MISSING and str(vendor_code) in self.config.transient_codes
            if isinstance(error, PermanentSendError) and transient:
                raise TransientSendError(error.message, code=str(vendor_code))
            raise error
        self._check_vendor_status(document, response)
        message_id = dig(document, self.config.message_id_path)
        if message_id is _MISSING or message_id is None or message_id == "":
            return SendResult(item.delivery_id, provider_message_id=item.delivery_id)
        return SendResult(item.delivery_id, provider_message_id=str(message_id))

    def _check_vendor_status(self, document: Any, response: httpx.Response) -> None:
        """Raise if a 2xx body reports a vendor error: the status is not a success value, or (with no
        status_path) the error_path holds something other than an empty/zero value."""
        config = self.config
        if config.status_path:
            if document is None:
                raise PermanentSendError(f"vendor answered non-JSON: {response.text[:200]}", code="invalid_response")
            status = dig(document, config.status_path)
            failed = status is _MISSING or not any(_same(status, ok) for ok in config.success_values)
        else:
            status = dig(document, config.error_path)
            failed = status is not _MISSING and not any(_same(status, none) for none in _NO_ERROR)
        if not failed:
            return
        code = dig(document, config.error_path)
        code = status if code is _MISSING else code
        code_text = "vendor_error" if code is _MISSING else str(code)
        message = f"vendor error {code_text}: {response.text[:200]}"
        if code_text in config.transient_codes:
            raise TransientSendError(message, code=code_text)
        raise PermanentSendError(message, code=code_text)

    @property
    def takes_receipts(self) -> bool:
        return self.config.receipts is not None

    def receipts(self, callback: base.Callback) -> base.ReadCallback:
        mapping, secret = self.config.receipts, self.config.receipt_secret
        if mapping is None or not secret:
            raise base.RefusedCallback("this account takes no receipts")
        if mapping.verify == "hmac":
            given = callback.headers.get(mapping.signature_header.lower(), "").strip()
            given = given.removeprefix("sha256=")
            expected = hmac.new(secret.encode(), callback.body, hashlib.sha256).hexdigest()
            if not base.same_secret(expected, given.lower()):
                raise base.RefusedCallback(f"missing or wrong {mapping.signature_header}")
            return read_receipts(mapping, callback)
        token = callback.headers.get(mapping.token_header.lower()) or callback.query.get("token")
        if not base.same_secret(secret, token):
            raise base.RefusedCallback(f"missing or wrong {mapping.token_header} (or ?token=)")
        return read_receipts(mapping, callback)

    async def close(self) -> None:
        await self._client.aclose()


def read_receipts(mapping: ReceiptMapping, callback: base.Callback) -> base.ReadCallback:
    """The receipts in a verified callback's body; ``UnreadableCallback`` when it holds none we can read."""
    if "application/x-www-form-urlencoded" in callback.content_type:
        document: Any = dict(parse_qsl(callback.body.decode("utf-8", "replace"), keep_blank_values=True))
    else:
        try:
            document = orjson.loads(callback.body)
        except orjson.JSONDecodeError:
            raise base.UnreadableCallback("the receipt body is neither JSON nor a form") from None
    items = dig(document, mapping.items_path) if mapping.items_path else document
    if items is _MISSING:
        raise base.UnreadableCallback(f"no receipts at {mapping.items_path!r}")
    found, ignored = [], 0
    for item in items if isinstance(items, list) else [items]:
        message_id, status = dig(item, mapping.id_path), dig(item, mapping.status_path)
        if message_id is _MISSING or status is _MISSING or message_id in (None, ""):
            raise base.UnreadableCallback(f"a receipt without {mapping.id_path!r} or {mapping.status_path!r}")
        event = mapping.event(status)
        if event is None:
            ignored += 1
            continue
        reason = dig(item, mapping.reason_path) if mapping.reason_path else _MISSING
        vendor = str(status) if reason in (_MISSING, None, "") else f"{status} {reason}"
        detail = {"vendor_status": str(status)}
        if reason not in (_MISSING, None, ""):
            detail["vendor_reason"] = str(reason)
        found.append(receipts.Receipt(str(message_id)[:300], event, f"vendor status {vendor}"[:500], detail))
    return base.ReadCallback(found, ignored)
