"""Aliyun SMS (阿里云短信, Dysmsapi 2017-05-25): ``SendSms`` with the RPC signature, receipts by push and by poll.

Aliyun sends only templates registered with it, under a registered sign name (签名): the SMS content names the
template per provider account (``vendor_template``, see ``vendor.sms_template``), the rendered ``text`` stays
the record of what the user saw, and the sign name is the content's signature (the 【…】 the text starts with)
or the account's ``sign_name``.

With ``batch`` on, the deliveries of a claimed batch that share a template go in one ``SendBatchSms`` (up to 100
numbers, each with its own sign name and parameters); Aliyun takes or refuses such a batch whole, so a batch
refused for what one delivery may cause is sent again one ``SendSms`` at a time.

Every request is signed as Aliyun's RPC style prescribes (SignatureMethod HMAC-SHA1, SignatureVersion 1.0): the
parameters, Signature left out, sorted by name and percent-encoded (RFC 3986: only ``A-Z a-z 0-9 - _ . ~`` stay
as they are, a space is ``%20``) into the canonical query; ``StringToSign = "POST&%2F&" + encode(canonical)``;
``Signature = base64(HMAC-SHA1(AccessKeySecret + "&", StringToSign))``. A fresh ``SignatureNonce`` and the
``Timestamp`` make each request unique, so a captured one cannot be replayed (``aliyun_rpc`` signs, shared with
``aliyun_voice``).

Receipts: ``QuerySendDetails`` needs the phone number and the send date as well as the ``BizId``, so the
provider message id is ``"{BizId}:{phone}:{yyyymmdd}"`` (the phone as Aliyun takes it, the date in Beijing
time) and ``poll_receipts`` asks for each. Aliyun's HTTP batch push of ``SmsReport`` to ``POST /r/{name}``
is not signed by Aliyun: the account's ``receipt_token`` goes in the callback URL registered there
(``?token=…``) and is compared in constant time.

Statistics (``daily_statistics``): ``QuerySendStatistics`` for the day in Beijing time (``StartDate`` =
``EndDate`` = ``yyyyMMdd``), once for mainland messages (``IsGlobe`` 1) and once for international ones (2),
page by page (``PageIndex``, ``PageSize`` 50); each ``Data.TargetList`` entry of that ``SendDate`` adds its
``TotalCount`` (sent), ``RespondedSuccessCount`` (delivered) and ``RespondedFailCount`` (failed);
``NoRespondedCount`` is kept as reported. Aliyun's statistics name no fee and no billed segments.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Any, ClassVar

import orjson
from pydantic import Field, field_validator

from clarion.channels import aliyun_rpc, base, outbound, vendor
from clarion.channels.webhook import send_bounded
from clarion.domain import pricing, receipts
from clarion.domain.errors import PermanentSendError, SendError, TransientSendError
from clarion.domain.model import Channel, Outgoing, SendResult

API_VERSION = "2017-05-25"
#: numbers one SendBatchSms takes
MAX_BATCH = 100
#: QuerySendStatistics' largest page, and the counts each of its TargetList entries has
STATISTICS_PAGE = 50
_COUNTS = ("TotalCount", "RespondedSuccessCount", "RespondedFailCount", "NoRespondedCount")
BEIJING = timezone(timedelta(hours=8))
_E164 = re.compile(r"^\+[1-9]\d{6,14}$")

#: Dysmsapi's own ``Code`` → what it means for the delivery, laid over the gateway's (``aliyun_rpc.COMMON_CODES``:
#: refused credentials and signatures are misconfigured, throttling transient); an unknown code is permanent
ERRORS: dict[str, aliyun_rpc.Outcome] = {
    "isv.MOBILE_NUMBER_ILLEGAL": "permanent",
    "isv.MOBILE_COUNT_OVER_LIMIT": "permanent",
    "isv.TEMPLATE_MISSING_PARAMETERS": "permanent",
    "isv.TEMPLATE_PARAMS_ILLEGAL": "permanent",
    "isv.INVALID_JSON_PARAM": "permanent",
    "isv.INVALID_PARAMETERS": "permanent",
    "isv.PARAM_LENGTH_LIMIT": "permanent",
    "isv.BLACK_KEY_CONTROL_LIMIT": "permanent",
    "isv.BUSINESS_LIMIT_CONTROL": "transient",  # the per-number flow control (1/min, 5/hour …)
    "isv.DAY_LIMIT_CONTROL": "transient",
    "isv.SYSTEM_ERROR": "transient",
    "isv.SMS_TEMPLATE_ILLEGAL": "misconfigured",
    "isv.SMS_SIGNATURE_ILLEGAL": "misconfigured",
    "isv.SMS_SIGN_ILLEGAL": "misconfigured",
    "isv.AMOUNT_NOT_ENOUGH": "misconfigured",
    "isv.DENY_IP_RANGE": "misconfigured",
    "isv.PRODUCT_UN_SUBSCRIPT": "misconfigured",
    "isv.PRODUCT_UNSUBSCRIBE": "misconfigured",
}
#: seconds to wait on Aliyun's flow control before the retry
_LIMITED = {"isv.BUSINESS_LIMIT_CONTROL": 60.0, "isv.DAY_LIMIT_CONTROL": 3600.0}


def vendor_error(document: dict[str, Any]) -> SendError:
    """An answer whose ``Code`` is not ``OK`` as Clarion's error, Aliyun's code and message in it."""
    error = aliyun_rpc.error_for(document, ERRORS)
    if isinstance(error, TransientSendError) and error.code in _LIMITED:
        error.retry_after = _LIMITED[error.code]
    return error


def aliyun_phone(phone: str) -> str:
    """A phone number as Aliyun takes (and reports) it: a mainland number as its 11 digits, any other as the
    country code and number without ``+``."""
    digits = phone.lstrip("+")
    if digits.startswith("0086"):
        digits = digits[2:]
    if len(digits) == 13 and digits.startswith("861"):
        return digits[2:]
    return digits


class AliyunSmsProvider:
    """One signed ``SendSms`` per delivery; one HTTP client per account."""

    kind: ClassVar[str] = "aliyun_sms"
    channels: ClassVar[frozenset[Channel]] = frozenset({Channel.SMS})
    #: Dysmsapi's documented per-account call rate (SendSms: 5,000 calls a second)
    default_rate: ClassVar[tuple[float | None, float | None]] = (5000.0, None)
    #: what Aliyun's push expects back, or it sends the batch again
    receipt_answer: ClassVar[dict[str, Any]] = {"code": 0, "msg": "成功"}

    class Config(base.ProviderConfig):
        secret_fields: ClassVar[frozenset[str]] = frozenset({"access_key_secret", "receipt_token"})
        destination_fields: ClassVar[frozenset[str]] = frozenset({"endpoint"})

        access_key_id: str = Field(min_length=1, max_length=128)
        access_key_secret: str = Field(min_length=1, max_length=256)
        endpoint: str = "https://dysmsapi.aliyuncs.com"
        region: str = Field(default="cn-hangzhou", min_length=1, max_length=64)
        #: the registered sign name used when the content has no signature
        sign_name: str | None = Field(default=None, min_length=1, max_length=64)
        #: the shared token of the SmsReport push URL (``/r/{name}?token=…``); None: no push receipts
        receipt_token: str | None = Field(default=None, min_length=16, max_length=256)
        #: deliveries of a batch that share a template go in one ``SendBatchSms`` (up to 100 numbers)
        batch: bool = False
        allow_private_networks: bool = False
        timeout: float = Field(default=10, gt=0, le=120)

        @field_validator("endpoint")
        @classmethod
        def _http_url(cls, value: str) -> str:
            return outbound.endpoint(value)

    def __init__(self, config: AliyunSmsProvider.Config, *, name: str) -> None:
        self.config = config
        self.name = name
        self._client = outbound.client(
            timeout=config.timeout, allow_private_networks=config.allow_private_networks, http2=True
        )

    # -- the signed call ------------------------------------------------------------------------------------

    async def call(self, action: str, params: Mapping[str, str]) -> dict[str, Any]:
        """One signed RPC call; returns Aliyun's JSON answer when its ``Code`` is ``OK``, raises otherwise."""
        config = self.config
        refused = outbound.refusal(config.endpoint, allow_private_networks=config.allow_private_networks)
        if refused is not None:
            raise refused
        document = await aliyun_rpc.call(
            self._client,
            config.endpoint,
            action,
            {"RegionId": config.region, **params},
            access_key_id=config.access_key_id,
            access_key_secret=config.access_key_secret,
            version=API_VERSION,
            timeout=config.timeout,
        )
        if document["Code"] != "OK":
            raise vendor_error(document)
        return document

    # -- sending --------------------------------------------------------------------------------------------

    async def send(self, batch: Sequence[Outgoing]) -> list[SendResult]:
        if not self.config.batch or len(batch) < 2:
            return await send_bounded(batch, self._send_one)
        results: list[SendResult] = []
        chunks: dict[str, list[list[tuple[Outgoing, _Sms]]]] = {}
        for item in batch:
            try:
                one = self._prepare(item)
            except SendError as exc:
                results.append(SendResult(item.delivery_id, error=exc))
                continue
            groups = chunks.setdefault(one.code, [[]])
            if len(groups[-1]) >= MAX_BATCH or any(o.number == one.number for _, o in groups[-1]):
                groups.append([])
            groups[-1].append((item, one))
        for groups in chunks.values():
            for group in groups:
                results.extend(await self._send_batch(group))
        return results

    def _prepare(self, item: Outgoing) -> _Sms:
        phone, text = item.address, item.content.get("text")
        if not isinstance(phone, str) or not _E164.match(phone):
            raise PermanentSendError(f"not an E.164 phone number: {phone!r}", code="invalid_address")
        code, params = vendor.sms_template(item.content, self.name)
        sign_name = vendor.sms_sign_name(text if isinstance(text, str) else "", self.config.sign_name)
        return _Sms(aliyun_phone(phone), sign_name, code, params)

    async def _send_one(self, item: Outgoing) -> SendResult:
        one = self._prepare(item)
        request = {"PhoneNumbers": one.number, "SignName": one.sign_name, "TemplateCode": one.code}
        request["OutId"] = item.delivery_id
        if one.params:
            request["TemplateParam"] = orjson.dumps(one.params).decode()
        biz_id = _biz_id(await self.call("SendSms", request))
        return SendResult(item.delivery_id, provider_message_id=_message_id(biz_id, one.number))

    async def _send_batch(self, group: list[tuple[Outgoing, _Sms]]) -> list[SendResult]:
        """One ``SendBatchSms`` for ``group`` (one template, distinct numbers). Aliyun takes or refuses the batch
        whole, so when it is refused for something one delivery may cause (a number, a parameter), each is sent
        alone, and only the one at fault fails; a refusal of the account or a retry applies to all."""
        if len(group) == 1:
            return await send_bounded([group[0][0]], self._send_one)
        request = {
            "PhoneNumberJson": orjson.dumps([o.number for _, o in group]).decode(),
            "SignNameJson": orjson.dumps([o.sign_name for _, o in group]).decode(),
            "TemplateCode": group[0][1].code,
            "TemplateParamJson": orjson.dumps([o.params for _, o in group]).decode(),
        }
        try:
            biz_id = _biz_id(await self.call("SendBatchSms", request))
        except PermanentSendError as exc:
            if exc.misconfigured:
                return [SendResult(item.delivery_id, error=exc) for item, _ in group]
            return await send_bounded([item for item, _ in group], self._send_one)
        except SendError as exc:
            return [SendResult(item.delivery_id, error=exc) for item, _ in group]
        return [SendResult(item.delivery_id, provider_message_id=_message_id(biz_id, o.number)) for item, o in group]

    # -- receipts: polled -----------------------------------------------------------------------------------

    async def poll_receipts(self, provider_message_ids: Sequence[str]) -> list[receipts.Receipt]:
        """What ``QuerySendDetails`` says of each message that has an outcome (waiting ones are left out); an
        id not in Clarion's form is skipped. A vendor error (refused credentials, throttling) is raised, so the
        poller backs off instead of taking silence for an answer."""
        gate = asyncio.Semaphore(8)

        async def one(pmid: str) -> receipts.Receipt | None:
            biz_id, _, rest = pmid.partition(":")
            number, _, sent_on = rest.partition(":")
            if not (biz_id and number and re.fullmatch(r"\d{8}", sent_on)):
                return None
            params = {"PhoneNumber": number, "BizId": biz_id, "SendDate": sent_on, "PageSize": "10", "CurrentPage": "1"}
            async with gate:
                answer = await self.call("QuerySendDetails", params)
            details = (answer.get("SmsSendDetailDTOs") or {}).get("SmsSendDetailDTO") or []
            for detail in details if isinstance(details, list) else []:
                status, err_code = detail.get("SendStatus"), str(detail.get("ErrCode") or "")
                if status in (3, "3"):
                    return _receipt(pmid, receipts.Event.DELIVERED, err_code or "DELIVERED", "")
                if status in (2, "2"):
                    return _receipt(pmid, receipts.Event.UNDELIVERED, err_code or "FAILED", "")
            return None

        found = await asyncio.gather(*(one(pmid) for pmid in dict.fromkeys(provider_message_ids)))
        return [r for r in found if r is not None]

    # -- statistics ---------------------------------------------------------------------------------------

    async def daily_statistics(self, day: date) -> pricing.VendorDay:
        """``day`` (in Beijing time) as ``QuerySendStatistics`` counts it, mainland and international summed."""
        counts = dict.fromkeys(_COUNTS, 0)
        for globe in ("1", "2"):
            for entry in await self._statistics_entries(globe, day.strftime("%Y%m%d")):
                for name in _COUNTS:
                    counts[name] += _count(entry.get(name), name)
        sent, delivered, failed = counts["TotalCount"], counts["RespondedSuccessCount"], counts["RespondedFailCount"]
        return pricing.VendorDay(
            day, BEIJING, sent, delivered, failed, None, None, None, {"QuerySendStatistics": counts}
        )

    async def _statistics_entries(self, globe: str, yyyymmdd: str) -> list[dict[str, Any]]:
        """Every ``TargetList`` entry of ``SendDate`` ``yyyymmdd``, read page by page up to ``TotalSize``."""
        found: list[dict[str, Any]] = []
        for page in range(1, 1000):
            params = {"IsGlobe": globe, "StartDate": yyyymmdd, "EndDate": yyyymmdd}
            answer = await self.call(
                "QuerySendStatistics", {**params, "PageIndex": str(page), "PageSize": str(STATISTICS_PAGE)}
            )
            data = answer.get("Data")
            data = data if isinstance(data, dict) else {}
            entries = [e for e in data.get("TargetList") or [] if isinstance(e, dict)]
            found.extend(e for e in entries if str(e.get("SendDate")) == yyyymmdd)
            if len(entries) < STATISTICS_PAGE or page * STATISTICS_PAGE >= _count(data.get("TotalSize"), "TotalSize"):
                break
        return found

    # -- receipts: pushed -----------------------------------------------------------------------------------

    @property
    def takes_receipts(self) -> bool:
        return self.config.receipt_token is not None

    def receipts(self, callback: base.Callback) -> base.ReadCallback:
        token = self.config.receipt_token
        if token is None or not base.same_secret(token, callback.query.get("token")):
            raise base.RefusedCallback("missing or wrong ?token= (Aliyun's push is proven by the URL's token)")
        try:
            reports = orjson.loads(callback.body)
        except orjson.JSONDecodeError:
            raise base.UnreadableCallback("an SmsReport push is a JSON array") from None
        found = []
        for report in reports if isinstance(reports, list) else [reports]:
            if not isinstance(report, dict):
                raise base.UnreadableCallback("an SmsReport is a JSON object")
            biz_id, number, sent = report.get("biz_id"), report.get("phone_number"), report.get("send_time")
            success = report.get("success")
            if not biz_id or not number or not isinstance(sent, str) or not re.match(r"\d{4}-\d\d-\d\d", sent):
                raise base.UnreadableCallback("an SmsReport without biz_id, phone_number or send_time")
            if success not in (True, False, "true", "false"):
                raise base.UnreadableCallback("an SmsReport without success true/false")
            pmid = f"{biz_id}:{aliyun_phone(str(number))}:{sent[:10].replace('-', '')}"
            event = receipts.Event.DELIVERED if success in (True, "true") else receipts.Event.UNDELIVERED
            found.append(_receipt(pmid, event, str(report.get("err_code") or ""), str(report.get("err_msg") or "")))
        return base.ReadCallback(found)

    # -- replies (SmsUp, pushed to /r/{name}/replies?token=…) ----------------------------------------------

    @property
    def takes_replies(self) -> bool:
        return self.config.receipt_token is not None

    def replies(self, callback: base.Callback) -> list[base.Reply]:
        """Aliyun's SmsUp HTTP push: a JSON array of ``{"phone_number", "content", "sign_name", "dest_code",
        "sequence_id", "send_time"}``, proven, like the receipts, by the URL's ``?token=``."""
        token = self.config.receipt_token
        if token is None or not base.same_secret(token, callback.query.get("token")):
            raise base.RefusedCallback("missing or wrong ?token= (Aliyun's push is proven by the URL's token)")
        try:
            pushed = orjson.loads(callback.body)
        except orjson.JSONDecodeError:
            raise base.UnreadableCallback("an SmsUp push is a JSON array") from None
        found = []
        for item in pushed if isinstance(pushed, list) else [pushed]:
            if not isinstance(item, dict) or not item.get("phone_number") or item.get("sequence_id") in (None, ""):
                raise base.UnreadableCallback("an SmsUp message without phone_number or sequence_id")
            number = str(item["phone_number"]).lstrip("+")
            phone = f"+86{number}" if len(number) == 11 and number.startswith("1") else f"+{number}"
            found.append(
                base.Reply(
                    phone,
                    str(item.get("content") or ""),
                    str(item["sequence_id"]),
                    to=str(item.get("dest_code") or "") or None,
                    sign=str(item.get("sign_name") or "") or None,
                    received_at=str(item.get("send_time") or "") or None,
                )
            )
        return found

    async def close(self) -> None:
        await self._client.aclose()


@dataclass(frozen=True, slots=True)
class _Sms:
    """One delivery as Aliyun takes it."""

    number: str
    sign_name: str
    code: str
    params: dict[str, str]


def _biz_id(answer: dict[str, Any]) -> str:
    biz_id = answer.get("BizId")
    if not biz_id:
        raise PermanentSendError(f"aliyun answered OK without BizId: {answer}"[:300], code="invalid_response")
    return str(biz_id)


def _message_id(biz_id: str, number: str) -> str:
    """What ``QuerySendDetails`` needs to find the message again, and what a pushed report names."""
    return f"{biz_id}:{number}:{datetime.now(BEIJING).strftime('%Y%m%d')}"


def _receipt(pmid: str, event: receipts.Event, err_code: str, err_msg: str) -> receipts.Receipt:
    status = err_code or ("DELIVERED" if event is receipts.Event.DELIVERED else "FAILED")
    detail = {"vendor_status": status}
    if err_msg:
        detail["vendor_reason"] = err_msg
    reason = f"vendor status {status}" + (f" {err_msg}" if err_msg else "")
    return receipts.Receipt(pmid[:300], event, reason[:500], detail)


def _count(value: Any, name: str) -> int:
    """A count in Aliyun's answer (a number, or its digits); a vendor that answers something else is refused."""
    if value is None:
        return 0
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and value.isdigit():
        return int(value)
    raise PermanentSendError(f"aliyun answered {name} {value!r}, not a count", code="invalid_response")
