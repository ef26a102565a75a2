"""Aliyun voice notifications (Dyvmsapi ``SingleCallByTts``): a phone call that speaks a registered TTS template.

A voice content names the template per account (``vendor_template``: this account's name, or ``"*"``) and fills
its parameters from Clarion text (``{"code": "{data.code}"}``); the rendered ``text`` is the record of what the
call says. The user is called at their SMS phone number: E.164 in Clarion, sent as Aliyun wants it (a mainland
number without ``+86``, any other as country code and number without ``+``). ``OutId`` carries the delivery id,
so Aliyun's reports name the delivery even before the ``CallId`` is on record.

Whether the user answered comes two ways, both read into the same receipts:

* the call-result push (``VoiceReport``) to ``POST /r/{provider_name}?token=<receipt_token>``: Aliyun does not
  sign it, so the callback URL registered in the Aliyun console carries a shared token, compared in constant time;
* polling ``QueryCallDetailByCallId`` (``poll_receipts``), for accounts whose console has no push configured.

``status_code`` 200000 (the user answered and heard the call) is ``delivered``; a 3xxxxx code is an intermediate
state (ringing, a key pressed) and is left out; every other code (busy, no answer, powered off, rejected,
out of service …) is ``undelivered``, with Aliyun's code and message kept on the timeline.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import httpcore
import orjson
from pydantic import Field, field_validator

from clarion.channels import aliyun_rpc, base, outbound
from clarion.channels.base import ProviderConfig
from clarion.channels.webhook import send_bounded
from clarion.domain import receipts
from clarion.domain.errors import PermanentSendError, SendError, TransientSendError
from clarion.domain.model import Channel, Outgoing, SendResult

log = logging.getLogger(__name__)
#: the type of a receipt, named apart because the class's ``receipts`` method hides the module in its body
Receipt = receipts.Receipt

VERSION = "2017-05-25"
#: Aliyun's product id of voice notifications, which ``QueryCallDetailByCallId`` asks for
VOICE_NOTIFICATION = "11000000300006"
#: the status code of a call the user answered
ANSWERED = "200000"
#: Aliyun calls one number at most once a minute: a retry sooner is refused again
CALLEE_LIMIT_SECONDS = 60.0

#: Dyvmsapi's own codes, over ``aliyun_rpc.COMMON_CODES``; any other code is permanent
CODES: dict[str, aliyun_rpc.Outcome] = {
    "isv.MOBILE_NUMBER_ILLEGAL": "permanent",
    "isv.INVALID_PARAMETERS": "permanent",
    "isv.TEMPLATE_MISSING_PARAMETERS": "permanent",
    "isv.PARAM_LENGTH_LIMIT": "permanent",
    "isv.BUSINESS_LIMIT_CONTROL": "transient",
    "isv.TTS_TEMPLATE_ILLEGAL": "misconfigured",
    "isv.DISPLAY_NUMBER_ILLEGAL": "misconfigured",
    "isv.NO_AVAILABLE_NUMBER": "misconfigured",
}


def called_number(phone: Any) -> str:
    """The ``CalledNumber`` of an E.164 phone; ``PermanentSendError("invalid_address")`` for anything else."""
    if not isinstance(phone, str) or not phone.startswith("+") or not phone[1:].isdigit() or len(phone) < 8:
        raise PermanentSendError(f"not an E.164 phone number: {phone!r}", code="invalid_address")
    return phone[3:] if phone.startswith("+86") else phone[1:]


def event_of(status_code: str) -> receipts.Event | None:
    """What a call's status code says: answered, an intermediate state (None), or not reached."""
    if status_code == ANSWERED:
        return receipts.Event.DELIVERED
    if not status_code or status_code.startswith("3"):
        return None
    return receipts.Event.UNDELIVERED


def _receipt(call_id: str, status_code: str, message: str, extra: Mapping[str, Any]) -> receipts.Receipt | None:
    event = event_of(status_code)
    if event is None:
        return None
    detail = {"vendor_status": status_code, **({"vendor_reason": message} if message else {})}
    detail.update({k: str(v) for k, v in extra.items() if v not in (None, "")})
    reason = f"Aliyun call status {status_code}" + (f" {message}" if message else "")
    return receipts.Receipt(call_id[:300], event, reason[:500], detail)


class AliyunVoiceProvider:
    """One ``SingleCallByTts`` per delivery, signed with the account's AccessKey."""

    kind: ClassVar[str] = "aliyun_voice"
    channels: ClassVar[frozenset[Channel]] = frozenset({Channel.VOICE})
    #: Aliyun's documented per-account call rate of the voice-notification APIs (per callee: 1/min, 5/h, 20/day)
    default_rate: ClassVar[tuple[float | None, float | None]] = (1200.0, None)
    #: call ids per poll page: each is one ``QueryCallDetailByCallId`` (two across midnight)
    poll_batch: ClassVar[int] = 50

    class Config(ProviderConfig):
        secret_fields: ClassVar[frozenset[str]] = frozenset({"access_key_secret", "receipt_token"})
        destination_fields: ClassVar[frozenset[str]] = frozenset({"endpoint"})

        #: the RAM user's AccessKey ID (it needs the Dyvmsapi permissions)
        access_key_id: str = Field(min_length=1, max_length=128)
        #: the AccessKey secret the requests are signed with (HMAC-SHA1)
        access_key_secret: str = Field(min_length=1, max_length=256)
        #: the number the callee sees; leave it out for a template in Aliyun's public-number mode
        called_show_number: str | None = Field(default=None, min_length=3, max_length=32, pattern=r"^\+?\d+$")
        #: how many times the call plays the template (Aliyun: 1 to 3; None: Aliyun's default)
        play_times: int | None = Field(default=None, ge=1, le=3)
        #: the Dyvmsapi endpoint (a regional one, or a loopback fake in tests)
        endpoint: str = "https://dyvmsapi.aliyuncs.com"
        #: the shared token in the call-result callback URL (``?token=``); None: this account takes no push
        receipt_token: str | None = Field(default=None, min_length=16, max_length=256)
        #: seconds one call to Aliyun may take, connection included
        timeout: float = Field(default=10, gt=0, le=120)
        #: let the endpoint be a private or loopback address (tests, a proxy inside the network)
        allow_private_networks: bool = False

        @field_validator("endpoint")
        @classmethod
        def _http_url(cls, value: str) -> str:
            return outbound.endpoint(value)

    def __init__(
        self,
        config: AliyunVoiceProvider.Config,
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

    async def _call(self, action: str, params: Mapping[str, str]) -> dict[str, Any]:
        refused = outbound.refusal(self.config.endpoint, allow_private_networks=self.config.allow_private_networks)
        if refused is not None:
            raise refused
        return await aliyun_rpc.call(
            self._client,
            self.config.endpoint,
            action,
            params,
            access_key_id=self.config.access_key_id,
            access_key_secret=self.config.access_key_secret,
            version=VERSION,
            timeout=self.config.timeout,
        )

    def _error(self, document: Mapping[str, Any]) -> SendError:
        error = aliyun_rpc.error_for(document, CODES)
        if error.code == "isv.BUSINESS_LIMIT_CONTROL":
            return TransientSendError(error.message, code=error.code, retry_after=CALLEE_LIMIT_SECONDS)
        return error

    async def send(self, batch: Sequence[Outgoing]) -> list[SendResult]:
        return await send_bounded(batch, self._send_one)

    def _template(self, content: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
        chosen = content.get("vendor_template")
        chosen = chosen if isinstance(chosen, dict) else {}
        ref = chosen.get(self.name) or chosen.get("*")
        if not isinstance(ref, dict) or not isinstance(ref.get("code"), str) or not ref["code"]:
            raise PermanentSendError(
                f"the voice content names no TTS template for account {self.name!r} (vendor_template)",
                code="no_vendor_template",
            )
        params = ref.get("params") or {}
        if not isinstance(params, dict):
            raise PermanentSendError("vendor_template params must be an object", code="invalid_content")
        return ref["code"], params

    async def _send_one(self, item: Outgoing) -> SendResult:
        number = called_number(item.address)
        code, params = self._template(item.content)
        request = {"CalledNumber": number, "TtsCode": code, "OutId": item.delivery_id[:64]}
        if params:
            request["TtsParam"] = orjson.dumps(params).decode()
        if self.config.called_show_number:
            request["CalledShowNumber"] = self.config.called_show_number
        if self.config.play_times is not None:
            request["PlayTimes"] = str(self.config.play_times)
        document = await self._call("SingleCallByTts", request)
        if document.get("Code") != "OK":
            raise self._error(document)
        call_id = document.get("CallId")
        if not isinstance(call_id, str) or not call_id:
            raise PermanentSendError(f"Aliyun answered OK without a CallId: {document}", code="invalid_response")
        return SendResult(item.delivery_id, provider_message_id=call_id)

    # -- receipts --------------------------------------------------------------------------------------------

    @property
    def takes_receipts(self) -> bool:
        return self.config.receipt_token is not None

    def receipts(self, callback: base.Callback) -> base.ReadCallback:
        token = self.config.receipt_token
        if not token:
            raise base.RefusedCallback("this account takes no call-result push")
        if not base.same_secret(token, callback.query.get("token")):
            raise base.RefusedCallback("missing or wrong ?token= in the callback URL")
        try:
            document = orjson.loads(callback.body)
        except orjson.JSONDecodeError:
            raise base.UnreadableCallback("a call-result report is a JSON array") from None
        reports = document if isinstance(document, list) else [document]
        found, ignored = [], 0
        for report in reports:
            if not isinstance(report, dict) or not report.get("call_id") or "status_code" not in report:
                raise base.UnreadableCallback("a call-result report without call_id or status_code")
            extra = {k: report.get(k) for k in ("duration", "end_time", "out_id")}
            receipt = _receipt(
                str(report["call_id"]), str(report["status_code"]), str(report.get("status_msg") or ""), extra
            )
            if receipt is None:
                ignored += 1
            else:
                found.append(receipt)
        return base.ReadCallback(found, ignored)

    async def poll_receipts(self, provider_message_ids: Sequence[str]) -> list[Receipt]:
        """What Aliyun knows of these calls. A call is looked up on today's records, then yesterday's (a call
        placed before midnight); one still ringing, or unknown to Aliyun, gives nothing yet. A code meaning the
        account is wrong, or a network failure, is raised: the poller tries again later."""
        gate = asyncio.Semaphore(8)

        async def one(call_id: str) -> Receipt | None:
            async with gate:
                now_ms = int(time.time() * 1000)
                for day in (now_ms, now_ms - 86_400_000):
                    found = await self._detail(call_id, day)
                    if found is not None:
                        return found
                return None

        results = await asyncio.gather(*(one(i) for i in provider_message_ids))
        return [r for r in results if r is not None]

    async def _detail(self, call_id: str, query_date_ms: int) -> Receipt | None:
        params = {"CallId": call_id, "ProdId": VOICE_NOTIFICATION, "QueryDate": str(query_date_ms)}
        document = await self._call("QueryCallDetailByCallId", params)
        if document.get("Code") != "OK":
            error = self._error(document)
            if isinstance(error, PermanentSendError) and not error.misconfigured:
                log.info("aliyun_voice %s: no detail for call %s: %s", self.name, call_id, error.message)
                return None
            raise error
        data = document.get("Data")
        if isinstance(data, str) and data:
            try:
                data = orjson.loads(data)
            except orjson.JSONDecodeError:
                return None
        if not isinstance(data, dict):
            return None
        extra = {"duration": data.get("duration"), "end_time": data.get("endDate")}
        return _receipt(call_id, str(data.get("state") or ""), str(data.get("stateDesc") or ""), extra)

    async def close(self) -> None:
        await self._client.aclose()
