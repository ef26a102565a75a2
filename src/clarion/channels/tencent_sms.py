"""Tencent Cloud SMS (腾讯云短信, API 3.0, version 2021-01-11): ``SendSms`` signed with TC3-HMAC-SHA256.

Tencent sends only templates registered with it: the SMS content names the template per provider account
(``vendor_template``; Tencent's parameters are positional, so they are named ``"1"``, ``"2"`` …), the rendered
``text`` stays the record of what the user saw, and the sign name is the content's signature (the 【…】 the
text starts with) or the account's ``sign_name`` (an international SMS may go without).

``SendSms`` takes up to 200 numbers: the deliveries of a batch that send the same template with the same
parameters under the same sign name go in one request, and each gets its own ``SendStatusSet`` entry.

Signing (TC3-HMAC-SHA256): the canonical request is ``POST``, ``/``, an empty query, the headers
``content-type``, ``host`` and ``x-tc-action`` (lower-case ``name:value`` lines) and their names, and the
hex SHA-256 of the body; the string to sign is the algorithm, the timestamp, the credential scope
``{date}/sms/tc3_request`` and the hex SHA-256 of the canonical request; the key is derived by HMAC-SHA256
from ``"TC3" + SecretKey`` over the UTC date, the service and ``tc3_request``.

Receipts: Tencent's status callback (a JSON array of reports, each naming the ``sid`` that ``SendSms`` gave)
is not signed by Tencent: the account's ``receipt_token`` goes in the callback URL registered in the console
(``?token=…``) and is compared in constant time.

Statistics (``daily_statistics``): ``SendStatusStatistics`` and ``CallbackStatusStatistics`` over the day's
hours in Beijing time (``BeginTime`` ``yyyymmdd00`` to ``EndTime`` ``yyyymmdd23``, the SdkAppId, ``Limit`` and
``Offset`` 0 as documented): ``RequestSuccessCount`` is what Tencent took (sent), ``FeeCount`` the segments it
bills, ``CallbackSuccessCount`` / ``CallbackFailCount`` the receipts' outcomes. Tencent bills SMS packages by
the segment, so no money amount is reported.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import time
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta, timezone
from typing import Any, ClassVar

import httpx
import orjson
from pydantic import Field, field_validator

from clarion.channels import base, outbound, vendor
from clarion.channels.webhook import http_status_error, transport_error
from clarion.domain import pricing, receipts
from clarion.domain.errors import PermanentSendError, SendError, TransientSendError
from clarion.domain.model import Channel, Outgoing, SendResult

API_VERSION = "2021-01-11"
SERVICE = "sms"
CONTENT_TYPE = "application/json; charset=utf-8"
#: numbers one SendSms takes
MAX_NUMBERS = 200
#: the zone Tencent's statistics reckon hours in
BEIJING = timezone(timedelta(hours=8))
_E164 = re.compile(r"^\+[1-9]\d{6,14}$")

T, P, M = "transient", "permanent", "misconfigured"
#: Tencent's ``Error.Code`` (or a number's ``SendStatusSet[].Code``) → what it means; prefixes in ``_PREFIXES``
ERRORS: dict[str, str] = {
    "AuthFailure.SignatureExpire": T,  # the clock: the next attempt is signed anew
    "InvalidParameterValue.IncorrectPhoneNumber": P,
    "InvalidParameterValue.TemplateParameterFormatError": P,
    "InvalidParameterValue.TemplateParameterLengthLimit": P,
    "InvalidParameterValue.ProhibitedUseUrlInTemplateParameter": P,
    "InvalidParameterValue.ContentLengthLimit": P,
    "FailedOperation.PhoneNumberInBlacklist": P,
    "FailedOperation.ContainSensitiveWord": P,
    "FailedOperation.JsonParseFail": P,
    "FailedOperation.MissingTemplateToModify": M,
    "FailedOperation.TemplateIncorrectOrUnapproved": M,
    "FailedOperation.SignatureIncorrectOrUnapproved": M,
    "FailedOperation.InsufficientBalanceInSmsPackage": M,
    "FailedOperation.MarketingSendTimeConstraint": T,
    "InvalidParameterValue.SdkAppIdNotExist": M,
    "UnauthorizedOperation.SmsSdkAppIdVerifyFail": M,
    "UnauthorizedOperation.SerivceSuspendDueToArrears": M,
    "UnauthorizedOperation.IndividualUserMarketingSmsPermissionDeny": M,
    "UnsupportedOperation.ContainDomesticAndInternationalPhoneNumber": P,
    "UnsupportedOperation.UnsupportedRegion": P,
    "MissingParameter.EmptyPhoneNumberSet": P,
    "RequestLimitExceeded": T,
}
_PREFIXES: tuple[tuple[str, str], ...] = (
    ("AuthFailure.", M),
    ("LimitExceeded.", T),
    ("InternalError", T),
    ("ResourceUnavailable", T),
)


def vendor_error(code: str, message: str) -> SendError:
    """Tencent's code and message as Clarion's error (an unknown code fails the delivery, kept)."""
    meaning = ERRORS.get(code) or next((m for prefix, m in _PREFIXES if code.startswith(prefix)), P)
    text = f"tencent {code}: {message}"[:500]
    if meaning == T:
        return TransientSendError(text, code=code, retry_after=60.0 if code.startswith("LimitExceeded.") else None)
    return PermanentSendError(text, code=code, misconfigured=meaning == M)


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def authorization(secret_id: str, secret_key: str, *, host: str, action: str, payload: bytes, timestamp: int) -> str:
    """The TC3-HMAC-SHA256 ``Authorization`` header of a POST of ``payload`` to ``host`` at ``timestamp``."""
    signed_headers = "content-type;host;x-tc-action"
    canonical_headers = f"content-type:{CONTENT_TYPE}\nhost:{host}\nx-tc-action:{action.lower()}\n"
    canonical = "\n".join(["POST", "/", "", canonical_headers, signed_headers, hashlib.sha256(payload).hexdigest()])
    date = datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d")
    scope = f"{date}/{SERVICE}/tc3_request"
    to_sign = "\n".join(["TC3-HMAC-SHA256", str(timestamp), scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = _hmac(_hmac(_hmac(f"TC3{secret_key}".encode(), date), SERVICE), "tc3_request")
    sig = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    return f"TC3-HMAC-SHA256 Credential={secret_id}/{scope}, SignedHeaders={signed_headers}, Signature={sig}"


def positional(params: dict[str, str]) -> list[str]:
    """Tencent's TemplateParamSet from parameters named ``"1"``, ``"2"`` … (in their numeric order)."""
    if not all(name.isdigit() for name in params):
        raise PermanentSendError(
            'Tencent template parameters are positional: name them "1", "2" … in vendor_template.params',
            code="invalid_vendor_template",
        )
    return [params[name] for name in sorted(params, key=int)]


class TencentSmsProvider:
    """Signed ``SendSms`` requests, several numbers in one where they share template, parameters and sign."""

    kind: ClassVar[str] = "tencent_sms"
    channels: ClassVar[frozenset[Channel]] = frozenset({Channel.SMS})
    #: SendSms's documented default request rate per account (3,000 a second)
    default_rate: ClassVar[tuple[float | None, float | None]] = (3000.0, None)
    #: what Tencent's status callback expects back
    receipt_answer: ClassVar[dict[str, Any]] = {"result": 0, "errmsg": "OK"}

    class Config(base.ProviderConfig):
        secret_fields: ClassVar[frozenset[str]] = frozenset({"secret_key", "receipt_token"})
        destination_fields: ClassVar[frozenset[str]] = frozenset({"endpoint"})

        secret_id: str = Field(min_length=1, max_length=128)
        secret_key: str = Field(min_length=1, max_length=256)
        sdk_app_id: str = Field(min_length=1, max_length=32, pattern=r"^\d+$")
        region: str = Field(default="ap-guangzhou", min_length=1, max_length=64)
        #: the registered sign name used when the content has no signature
        sign_name: str | None = Field(default=None, min_length=1, max_length=64)
        endpoint: str = "https://sms.tencentcloudapi.com"
        #: the shared token of the status callback URL (``/r/{name}?token=…``); None: no receipts
        receipt_token: str | None = Field(default=None, min_length=16, max_length=256)
        allow_private_networks: bool = False
        timeout: float = Field(default=10, gt=0, le=120)

        @field_validator("endpoint")
        @classmethod
        def _http_url(cls, value: str) -> str:
            return outbound.endpoint(value)

    def __init__(self, config: TencentSmsProvider.Config, *, name: str) -> None:
        self.config = config
        self.name = name
        self._host = httpx.URL(config.endpoint).netloc.decode()
        self._client = outbound.client(
            timeout=config.timeout, allow_private_networks=config.allow_private_networks, http2=True
        )

    async def send(self, batch: Sequence[Outgoing]) -> list[SendResult]:
        groups: dict[tuple[Any, ...], list[list[Outgoing]]] = {}
        results: list[SendResult] = []
        for item in batch:
            try:
                key = self._request_key(item)
            except SendError as exc:
                results.append(SendResult(item.delivery_id, error=exc))
                continue
            chunks = groups.setdefault(key, [[]])
            chunk = chunks[-1]
            if len(chunk) >= MAX_NUMBERS or any(o.address == item.address for o in chunk):
                chunk = []
                chunks.append(chunk)
            chunk.append(item)
        requests = [(key, chunk) for key, chunks in groups.items() for chunk in chunks]
        gate = asyncio.Semaphore(8)

        async def one(key: tuple[Any, ...], chunk: list[Outgoing]) -> list[SendResult]:
            async with gate:
                try:
                    return await self._send_group(key, chunk)
                except SendError as exc:
                    return [SendResult(o.delivery_id, error=exc) for o in chunk]
                except Exception as exc:
                    error = TransientSendError(f"{type(exc).__name__}: {exc}", code="provider_error")
                    return [SendResult(o.delivery_id, error=error) for o in chunk]

        for done in await asyncio.gather(*(one(k, c) for k, c in requests)):
            results.extend(done)
        return results

    def _request_key(self, item: Outgoing) -> tuple[Any, ...]:
        """What a delivery's request holds besides its number: deliveries with the same key share one."""
        phone, text = item.address, item.content.get("text")
        if not isinstance(phone, str) or not _E164.match(phone):
            raise PermanentSendError(f"not an E.164 phone number: {phone!r}", code="invalid_address")
        code, params = vendor.sms_template(item.content, self.name)
        try:
            sign_name: str | None = vendor.sms_sign_name(text if isinstance(text, str) else "", self.config.sign_name)
        except PermanentSendError:
            if phone.startswith("+86"):  # a mainland SMS must be signed; an international one may not be
                raise
            sign_name = None
        return (code, tuple(positional(params)), sign_name, phone.startswith("+86"))

    async def _send_group(self, key: tuple[Any, ...], chunk: list[Outgoing]) -> list[SendResult]:
        code, params, sign_name, _ = key
        body: dict[str, Any] = {
            "PhoneNumberSet": [o.address for o in chunk],
            "SmsSdkAppId": self.config.sdk_app_id,
            "TemplateId": code,
            "TemplateParamSet": list(params),
            "SessionContext": chunk[0].delivery_id if len(chunk) == 1 else "",
        }
        if sign_name:
            body["SignName"] = sign_name
        answer = await self.call("SendSms", body)
        statuses = answer.get("SendStatusSet")
        if not isinstance(statuses, list):
            raise PermanentSendError(f"tencent answered no SendStatusSet: {answer}"[:300], code="invalid_response")
        by_phone = {s.get("PhoneNumber"): s for s in statuses if isinstance(s, dict)}
        results = []
        for i, item in enumerate(chunk):
            status = by_phone.get(item.address) or (statuses[i] if i < len(statuses) else None)
            if not isinstance(status, dict):
                missing = PermanentSendError("tencent answered no status for this number", code="invalid_response")
                results.append(SendResult(item.delivery_id, error=missing))
            elif status.get("Code") == "Ok" and status.get("SerialNo"):
                results.append(SendResult(item.delivery_id, provider_message_id=str(status["SerialNo"])))
            else:
                error = vendor_error(str(status.get("Code") or "unknown"), str(status.get("Message") or ""))
                results.append(SendResult(item.delivery_id, error=error))
        return results

    async def call(self, action: str, body: dict[str, Any]) -> dict[str, Any]:
        """One signed API 3.0 call; returns ``Response`` when it holds no ``Error``, raises otherwise."""
        config = self.config
        refused = outbound.refusal(config.endpoint, allow_private_networks=config.allow_private_networks)
        if refused is not None:
            raise refused
        payload = orjson.dumps(body)
        timestamp = int(time.time())
        headers = {
            "Authorization": authorization(
                config.secret_id,
                config.secret_key,
                host=self._host,
                action=action,
                payload=payload,
                timestamp=timestamp,
            ),
            "Content-Type": CONTENT_TYPE,
            "Host": self._host,
            "X-TC-Action": action,
            "X-TC-Version": API_VERSION,
            "X-TC-Timestamp": str(timestamp),
            "X-TC-Region": config.region,
        }
        try:
            async with asyncio.timeout(config.timeout):
                response = await self._client.post(config.endpoint + "/", content=payload, headers=headers)
        except (httpx.HTTPError, TimeoutError) as exc:
            raise transport_error(exc) from None
        error = http_status_error(response)
        if error is not None:
            raise error
        try:
            document = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            document = None
        answer = document.get("Response") if isinstance(document, dict) else None
        if not isinstance(answer, dict):
            raise PermanentSendError(f"tencent answered no Response: {response.text[:200]}", code="invalid_response")
        failure = answer.get("Error")
        if isinstance(failure, dict):
            raise vendor_error(str(failure.get("Code") or "unknown"), str(failure.get("Message") or ""))
        return answer

    # -- statistics ---------------------------------------------------------------------------------------

    async def daily_statistics(self, day: date) -> pricing.VendorDay:
        """``day`` (in Beijing time) as Tencent's send and receipt statistics count it."""
        text = day.strftime("%Y%m%d")
        body: dict[str, Any] = {"BeginTime": f"{text}00", "EndTime": f"{text}23"}
        body |= {"SmsSdkAppId": self.config.sdk_app_id, "Limit": 0, "Offset": 0}
        sent = _statistics(await self.call("SendStatusStatistics", body), "SendStatusStatistics")
        receipts_ = _statistics(await self.call("CallbackStatusStatistics", body), "CallbackStatusStatistics")
        return pricing.VendorDay(
            day,
            BEIJING,
            sent=sent.get("RequestSuccessCount"),
            delivered=receipts_.get("CallbackSuccessCount"),
            failed=receipts_.get("CallbackFailCount"),
            billed_segments=sent.get("FeeCount"),
            fee=None,
            currency=None,
            reported={"SendStatusStatistics": sent, "CallbackStatusStatistics": receipts_},
        )

    # -- receipts -------------------------------------------------------------------------------------------

    @property
    def takes_receipts(self) -> bool:
        return self.config.receipt_token is not None

    def receipts(self, callback: base.Callback) -> base.ReadCallback:
        token = self.config.receipt_token
        if token is None or not base.same_secret(token, callback.query.get("token")):
            raise base.RefusedCallback("missing or wrong ?token= (Tencent's callback is proven by the URL's token)")
        try:
            reports = orjson.loads(callback.body)
        except orjson.JSONDecodeError:
            raise base.UnreadableCallback("a Tencent status callback is a JSON array") from None
        found, ignored = [], 0
        for report in reports if isinstance(reports, list) else [reports]:
            if not isinstance(report, dict) or not report.get("sid") or not report.get("report_status"):
                raise base.UnreadableCallback("a status report without sid or report_status")
            status = str(report["report_status"])
            if status == "SUCCESS":
                event = receipts.Event.DELIVERED
            elif status == "FAIL":
                event = receipts.Event.UNDELIVERED
            else:
                ignored += 1
                continue
            errmsg, description = str(report.get("errmsg") or ""), str(report.get("description") or "")
            detail = {"vendor_status": status}
            if errmsg:
                detail["vendor_code"] = errmsg
            if description:
                detail["vendor_reason"] = description
            reason = " ".join(part for part in (f"vendor status {status}", errmsg, description) if part)
            found.append(receipts.Receipt(str(report["sid"])[:300], event, reason[:500], detail))
        return base.ReadCallback(found, ignored)

    # -- replies (上行短信回调, registered as /r/{name}/replies?token=…) ----------------------------------------

    @property
    def takes_replies(self) -> bool:
        return self.config.receipt_token is not None

    def replies(self, callback: base.Callback) -> list[base.Reply]:
        """Tencent's reply callback: ``{"mobile", "nationcode", "text", "sign", "extend", "time"}`` (one, or a
        list), proven by the URL's ``?token=``. It carries no id: the number, the time and the text make one, so a
        callback Tencent sends again is recognised."""
        token = self.config.receipt_token
        if token is None or not base.same_secret(token, callback.query.get("token")):
            raise base.RefusedCallback("missing or wrong ?token= (Tencent's callback is proven by the URL's token)")
        try:
            pushed = orjson.loads(callback.body)
        except orjson.JSONDecodeError:
            raise base.UnreadableCallback("a Tencent reply callback is JSON") from None
        found = []
        for item in pushed if isinstance(pushed, list) else [pushed]:
            if not isinstance(item, dict) or not item.get("mobile") or "text" not in item:
                raise base.UnreadableCallback("a reply without mobile or text")
            code = str(item.get("nationcode") or "86").lstrip("+")
            phone, text, at = f"+{code}{item['mobile']}", str(item["text"]), str(item.get("time") or "")
            digest = hashlib.sha256(f"{phone}\n{at}\n{text}".encode()).hexdigest()[:32]
            found.append(
                base.Reply(
                    phone,
                    text,
                    digest,
                    to=str(item.get("extend") or "") or None,
                    sign=str(item.get("sign") or "") or None,
                    received_at=at or None,
                )
            )
        return found

    async def close(self) -> None:
        await self._client.aclose()


def _statistics(answer: dict[str, Any], name: str) -> dict[str, int]:
    """The counts of an answer's ``name`` object; a count that is not a whole number ≥ 0 is refused."""
    found = answer.get(name)
    if not isinstance(found, dict):
        raise PermanentSendError(f"tencent answered no {name}", code="invalid_response")
    counts = {}
    for key, value in found.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise PermanentSendError(f"tencent answered {name}.{key} {value!r}, not a count", code="invalid_response")
        counts[str(key)] = value
    return counts
