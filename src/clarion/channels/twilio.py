"""Twilio Programmable Messaging: ``POST /2010-04-01/Accounts/{AccountSid}/Messages.json``, status callbacks.

Twilio sends free text, so the rendered ``text`` is the body. Requests are form-encoded and authenticated with
HTTP Basic: the account SID and auth token, or an API key SID and secret (revocable without touching the auth
token). A message goes from ``from_number`` or through ``messaging_service_sid``.

Status callbacks: each message asks Twilio to report to ``status_callback`` (the public URL of
``POST /r/{name}``, e.g. ``{CLARION_PUBLIC_URL}/r/{name}``). Twilio signs a callback with the account's auth
token: ``X-Twilio-Signature`` is the base64 HMAC-SHA1 of the full URL it called followed by every POST
parameter, sorted by name, each name then its value. The URL checked is ``status_callback`` when configured,
else the one Clarion's public URL gives the callback (``base.Callback.url``); compared in constant time.

Statistics (``daily_statistics``): the daily usage record of category ``sms-outbound``
(``GET /2010-04-01/Accounts/{AccountSid}/Usage/Records/Daily.json?Category=sms-outbound&StartDate=&EndDate=``,
the day in GMT, as Twilio reckons usage): ``count`` is the messages sent, ``usage`` the segments billed (when
``usage_unit`` is ``segments``), ``price`` in ``price_unit`` the fee. Usage records say nothing of delivery:
delivered and failed are not reported, and are not compared.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, date
from typing import Any, ClassVar
from urllib.parse import parse_qsl

import httpx
import orjson
from pydantic import Field, field_validator, model_validator

from clarion.channels import base, outbound
from clarion.channels.webhook import http_status_error, parse_retry_after, send_bounded, transport_error
from clarion.domain import pricing, receipts
from clarion.domain.errors import PermanentSendError, SendError, TransientSendError
from clarion.domain.model import Channel, Outgoing, SendResult

_E164 = re.compile(r"^\+[1-9]\d{6,14}$")
#: the usage category of outgoing SMS
SMS_OUTBOUND = "sms-outbound"

T, P, M = "transient", "permanent", "misconfigured"
#: Twilio's error ``code`` → what it means for the delivery (an unknown code goes by the HTTP status)
ERRORS: dict[int, str] = {
    20003: M,  # authentication failed
    20404: M,  # the account (or messaging service) does not exist
    20005: M,  # the account is not active
    21606: M,  # the From number is not a valid, SMS-capable number of this account
    21659: M,  # the From number is not a Twilio number
    21608: M,  # a trial account may only send to verified numbers
    21211: P,  # invalid To
    21610: P,  # the recipient replied STOP: unsubscribed
    21612: P,  # Twilio cannot route to this number
    21614: P,  # To is not a mobile number
    21408: P,  # no permission to send to this region
    21602: P,  # the body is empty
    21617: P,  # the body is too long
    30007: P,  # carrier filtered as spam
    20429: T,  # too many requests
    14107: T,  # rate limit exceeded
    30001: T,  # queue overflow
    20500: T,  # Twilio internal error
    20503: T,  # Twilio unavailable
}


def vendor_error(status: int, code: int | None, message: str, *, retry_after: float | None = None) -> SendError:
    """Twilio's answer as Clarion's error: the ``code`` if known, else the HTTP status (429 and 5xx retry)."""
    meaning = ERRORS.get(code) if code is not None else None
    if meaning is None:
        meaning = T if status == 429 or status >= 500 else (M if status == 401 else P)
    kept = str(code) if code is not None else f"http_{status}"
    text = f"twilio {kept}: {message}"[:500]
    if meaning == T:
        return TransientSendError(text, code=kept, retry_after=retry_after)
    return PermanentSendError(text, code=kept, misconfigured=meaning == M)


def signature(auth_token: str, url: str, params: Mapping[str, str]) -> str:
    """The ``X-Twilio-Signature`` of a POST of ``params`` to ``url``."""
    signed = url + "".join(f"{name}{params[name]}" for name in sorted(params))
    return base64.b64encode(hmac.new(auth_token.encode(), signed.encode(), hashlib.sha1).digest()).decode()


class TwilioProvider:
    """One form-encoded ``Messages.json`` POST per delivery; one HTTP client per account."""

    kind: ClassVar[str] = "twilio"
    channels: ClassVar[frozenset[Channel]] = frozenset({Channel.SMS})
    #: Twilio queues what exceeds a sender's throughput itself, so no default rate is imposed here
    default_rate: ClassVar[tuple[float | None, float | None]] = (None, None)

    class Config(base.ProviderConfig):
        secret_fields: ClassVar[frozenset[str]] = frozenset({"auth_token", "api_key_secret"})
        destination_fields: ClassVar[frozenset[str]] = frozenset({"endpoint"})

        account_sid: str = Field(pattern=r"^AC[0-9a-fA-F]{32}$")
        #: signs the status callbacks; authenticates requests unless an API key is given
        auth_token: str = Field(min_length=1, max_length=128)
        api_key_sid: str | None = Field(default=None, pattern=r"^SK[0-9a-fA-F]{32}$")
        api_key_secret: str | None = Field(default=None, min_length=1, max_length=128)
        from_number: str | None = Field(default=None, min_length=1, max_length=64)
        messaging_service_sid: str | None = Field(default=None, pattern=r"^MG[0-9a-fA-F]{32}$")
        #: the public URL of ``POST /r/{name}`` Twilio reports to (None: no StatusCallback is asked for)
        status_callback: str | None = Field(default=None, min_length=1, max_length=2048)
        endpoint: str = "https://api.twilio.com"
        allow_private_networks: bool = False
        timeout: float = Field(default=10, gt=0, le=120)

        @field_validator("endpoint", "status_callback")
        @classmethod
        def _http_url(cls, value: str | None) -> str | None:
            if value is None:
                return value
            try:
                outbound.check_syntax(value)
            except SendError as exc:
                raise ValueError(exc.message) from None
            return value

        @model_validator(mode="after")
        def _sender_and_key(self) -> TwilioProvider.Config:
            if (self.from_number is None) == (self.messaging_service_sid is None):
                raise ValueError("give exactly one of from_number and messaging_service_sid")
            if (self.api_key_sid is None) != (self.api_key_secret is None):
                raise ValueError("api_key_sid and api_key_secret go together")
            return self

    def __init__(self, config: TwilioProvider.Config, *, name: str) -> None:
        self.config = config
        self.name = name
        self._url = f"{config.endpoint.rstrip('/')}/2010-04-01/Accounts/{config.account_sid}/Messages.json"
        user, password = (
            (config.api_key_sid, config.api_key_secret)
            if config.api_key_sid and config.api_key_secret
            else (config.account_sid, config.auth_token)
        )
        self._auth = httpx.BasicAuth(user, password)
        self._client = outbound.client(
            timeout=config.timeout, allow_private_networks=config.allow_private_networks, http2=True
        )

    async def send(self, batch: Sequence[Outgoing]) -> list[SendResult]:
        return await send_bounded(batch, self._send_one)

    async def _send_one(self, item: Outgoing) -> SendResult:
        config = self.config
        phone, text = item.address, item.content.get("text")
        if not isinstance(phone, str) or not _E164.match(phone):
            raise PermanentSendError(f"not an E.164 phone number: {phone!r}", code="invalid_address")
        if not isinstance(text, str) or not text:
            raise PermanentSendError("SMS content needs 'text'", code="invalid_content")
        refused = outbound.refusal(self._url, allow_private_networks=config.allow_private_networks)
        if refused is not None:
            raise refused
        form = {"To": phone, "Body": text}
        if config.messaging_service_sid:
            form["MessagingServiceSid"] = config.messaging_service_sid
        else:
            form["From"] = config.from_number or ""
        if config.status_callback:
            form["StatusCallback"] = config.status_callback
        headers = {"Accept": "application/json"}
        try:
            async with asyncio.timeout(config.timeout):
                response = await self._client.post(self._url, data=form, auth=self._auth, headers=headers)
        except (httpx.HTTPError, TimeoutError) as exc:
            raise transport_error(exc) from None
        try:
            document: Any = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            document = None
        if response.status_code >= 300:
            if not isinstance(document, dict):
                raise http_status_error(response) or PermanentSendError(f"HTTP {response.status_code}")
            code = document.get("code")
            message = str(document.get("message") or document.get("detail") or "")
            wait = parse_retry_after(response.headers.get("retry-after"))
            raise vendor_error(response.status_code, code if isinstance(code, int) else None, message, retry_after=wait)
        sid = document.get("sid") if isinstance(document, dict) else None
        if not sid:
            raise PermanentSendError(f"twilio answered no sid: {response.text[:200]}", code="invalid_response")
        return SendResult(item.delivery_id, provider_message_id=str(sid))

    # -- statistics ---------------------------------------------------------------------------------------

    async def daily_statistics(self, day: date) -> pricing.VendorDay:
        """``day`` (GMT) as Twilio's daily ``sms-outbound`` usage record counts it; no record: nothing sent."""
        config = self.config
        url = f"{config.endpoint.rstrip('/')}/2010-04-01/Accounts/{config.account_sid}/Usage/Records/Daily.json"
        refused = outbound.refusal(url, allow_private_networks=config.allow_private_networks)
        if refused is not None:
            raise refused
        query = {"Category": SMS_OUTBOUND, "StartDate": day.isoformat(), "EndDate": day.isoformat()}
        try:
            async with asyncio.timeout(config.timeout):
                response = await self._client.get(
                    url, params=query, auth=self._auth, headers={"Accept": "application/json"}
                )
        except (httpx.HTTPError, TimeoutError) as exc:
            raise transport_error(exc) from None
        try:
            document: Any = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            document = None
        if response.status_code >= 300 or not isinstance(document, dict):
            if not isinstance(document, dict):
                raise http_status_error(response) or PermanentSendError(f"twilio answered: {response.text[:200]}")
            code = document.get("code")
            raise vendor_error(
                response.status_code, code if isinstance(code, int) else None, str(document.get("message") or "")
            )
        records = [
            r
            for r in document.get("usage_records") or []
            if isinstance(r, dict) and r.get("category") == SMS_OUTBOUND and r.get("start_date") == day.isoformat()
        ]
        if not records:
            return pricing.VendorDay(day, UTC, 0, None, None, 0, None, None, {"usage_records": []})
        return _usage_day(day, records[0])

    # -- receipts -------------------------------------------------------------------------------------------

    @property
    def takes_receipts(self) -> bool:
        return True

    def receipts(self, callback: base.Callback) -> base.ReadCallback:
        params = dict(parse_qsl(callback.body.decode("utf-8", "replace"), keep_blank_values=True))
        given = callback.headers.get("x-twilio-signature")
        urls = [u for u in (self.config.status_callback, callback.url) if u]
        if not any(base.same_secret(signature(self.config.auth_token, url, params), given) for url in urls):
            raise base.RefusedCallback("missing or wrong X-Twilio-Signature")
        sid, status = params.get("MessageSid") or params.get("SmsSid"), params.get("MessageStatus")
        status = status or params.get("SmsStatus")
        if not sid or not status:
            raise base.UnreadableCallback("a status callback without MessageSid or MessageStatus")
        if status == "delivered":
            event = receipts.Event.DELIVERED
        elif status in ("undelivered", "failed"):
            event = receipts.Event.UNDELIVERED
        else:  # queued, accepted, sending, sent, scheduled …: not an outcome
            return base.ReadCallback([], ignored=1)
        error_code = params.get("ErrorCode") or ""
        detail = {"vendor_status": status}
        if error_code:
            detail["vendor_code"] = error_code
        reason = f"vendor status {status}" + (f" ErrorCode {error_code}" if error_code else "")
        return base.ReadCallback([receipts.Receipt(sid[:300], event, reason, detail)])

    # -- replies (the sender number's incoming-message webhook: /r/{name}/replies) ---------------------------

    @property
    def takes_replies(self) -> bool:
        return True

    def replies(self, callback: base.Callback) -> list[base.Reply]:
        """An incoming message Twilio posts to the number's messaging webhook (``From``, ``To``, ``Body``,
        ``MessageSid``), signed like a status callback over the URL Twilio called."""
        params = dict(parse_qsl(callback.body.decode("utf-8", "replace"), keep_blank_values=True))
        given = callback.headers.get("x-twilio-signature")
        if not callback.url or not base.same_secret(signature(self.config.auth_token, callback.url, params), given):
            raise base.RefusedCallback("missing or wrong X-Twilio-Signature")
        sid, sender = params.get("MessageSid") or params.get("SmsSid"), params.get("From")
        if not sid or not sender:
            raise base.UnreadableCallback("an incoming message without MessageSid or From")
        return [base.Reply(sender, params.get("Body", ""), sid, to=params.get("To") or None)]

    async def close(self) -> None:
        await self._client.aclose()


def _usage_day(day: date, record: dict[str, Any]) -> pricing.VendorDay:
    """A daily usage record as the day's statistics: its count, segments and price (strings in Twilio's JSON)."""
    try:
        sent = int(str(record.get("count") or 0))
        segments = int(str(record.get("usage") or 0)) if record.get("usage_unit") == "segments" else None
        fee = pricing.vendor_amount(record["price"]) if record.get("price") not in (None, "") else None
    except ValueError:
        message = f"twilio answered an unreadable usage record: {record}"[:300]
        raise PermanentSendError(message, code="invalid_response") from None
    currency = str(record.get("price_unit") or "").upper() or None
    kept = ("count", "count_unit", "usage", "usage_unit", "price", "price_unit")
    reported = {"usage_records": [{name: record.get(name) for name in kept}]}
    return pricing.VendorDay(day, UTC, sent, None, None, segments, fee if currency else None, currency, reported)
