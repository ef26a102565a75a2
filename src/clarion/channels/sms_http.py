"""A generic JSON-over-HTTP SMS vendor, described by configuration instead of code.

Most SMS gateways take one JSON request per message and answer with JSON that holds a message id and,
often, a vendor status even on HTTP 200. The request body is a template whose string values may contain
``{phone}``, ``{text}``, ``{delivery_id}`` and ``{sender}`` — only those names are replaced (plain string
substitution, nothing is evaluated), so message text can never inject structure into the request.

The delivery id reaches the vendor as ``Clarion-Delivery-Id`` (and ``{delivery_id}`` where the vendor takes
a client reference), so a re-send can be de-duplicated on their side.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import httpcore
import httpx
from pydantic import Field, field_validator

from clarion.channels import outbound
from clarion.channels.base import ProviderConfig
from clarion.channels.webhook import http_status_error, send_bounded, transport_error
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

        @field_validator("url")
        @classmethod
        def _http_url(cls, value: str) -> str:
            try:
                outbound.check_syntax(value)
            except SendError as exc:
                raise ValueError(exc.message) from None
            return value

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
        # a literal private address is refused here; a host name is resolved and checked where it connects
        url_error = outbound.refusal(self.config.url, allow_private_networks=self.config.allow_private_networks)

        async def one(item: Outgoing) -> SendResult:
            if url_error is not None:
                raise type(url_error)(url_error.message, code=url_error.code)
            return await self._send_one(item)

        return await send_bounded(batch, one)

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

    async def close(self) -> None:
        await self._client.aclose()
