"""Aliyun's SMS API (Dysmsapi 2017-05-25) on loopback: ``SendSms``, ``QuerySendDetails`` and
``QuerySendStatistics`` over the RPC protocol, and the ``SmsReport`` batch push as Aliyun posts it.

It checks what Aliyun's gateway checks: the common parameters, a known ``AccessKeyId`` (404
``InvalidAccessKeyId.NotFound``), the ``Signature`` recomputed here from the test AccessKey secret over the form
as received (400 ``SignatureDoesNotMatch``), a fresh ``Timestamp`` and an unused ``SignatureNonce``. Then what
the SMS product checks: a registered sign name (``isv.SMS_SIGNATURE_ILLEGAL``) and template
(``isv.SMS_TEMPLATE_ILLEGAL``), the template's variables present in ``TemplateParam``
(``isv.TEMPLATE_MISSING_PARAMETERS``), a phone number as Aliyun takes it (``isv.MOBILE_NUMBER_ILLEGAL``). Codes
can be scripted (``fail_next``), and each message's outcome set (``report``) for the query to tell. The daily
statistics answer what the test sets (``set_statistics``), paged as ``PageIndex``/``PageSize`` ask.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from urllib.parse import parse_qsl

import orjson

from tests.integration.loopback import LoopbackServer, Recorded, Reply

ACCESS_KEY_ID = "LTAI5tClarionSmsTestKey"
ACCESS_KEY_SECRET = "clarion-sms-test-access-key-secret-42"
SIGN_NAME = "克拉里昂"
TEMPLATE = "SMS_154950909"
#: the variables each registered template has
TEMPLATES: dict[str, set[str]] = {TEMPLATE: {"code"}, "SMS_000001": set()}
_BEIJING = timezone(timedelta(hours=8))
_MAINLAND = re.compile(r"^1\d{10}$")
_INTERNATIONAL = re.compile(r"^[2-9]\d{7,14}$")


@dataclass
class Sent:
    biz_id: str
    form: dict[str, str]
    send_status: int = 1  # 1 waiting for the receipt, 2 failed, 3 delivered
    err_code: str = ""

    @property
    def params(self) -> dict[str, Any]:
        return orjson.loads(self.form["TemplateParam"]) if "TemplateParam" in self.form else {}


@dataclass
class FakeAliyunSms:
    keys: dict[str, str] = field(default_factory=lambda: {ACCESS_KEY_ID: ACCESS_KEY_SECRET})
    sign_names: set[str] = field(default_factory=lambda: {SIGN_NAME})
    sent: list[Sent] = field(default_factory=list)
    #: answers given before any product check: (Code, Message, HTTP status), in order
    scripted: list[tuple[str, str, int]] = field(default_factory=list)
    #: every request's form, whatever the answer
    forms: list[dict[str, str]] = field(default_factory=list)
    nonces: set[str] = field(default_factory=set)
    #: the BizId of each accepted SendBatchSms
    batches: list[str] = field(default_factory=list)
    #: QuerySendStatistics' TargetList entries by (IsGlobe, SendDate yyyyMMdd)
    statistics: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(900619746936498))
    server: LoopbackServer | None = None

    def set_statistics(
        self, send_date: str, *, total: int, success: int, fail: int, waiting: int = 0, globe: str = "1"
    ) -> None:
        """What QuerySendStatistics answers for ``send_date`` (yyyyMMdd) of ``globe`` (1 mainland, 2 abroad)."""
        self.statistics[(globe, send_date)] = {
            "SendDate": send_date,
            "TotalCount": total,
            "RespondedSuccessCount": success,
            "RespondedFailCount": fail,
            "NoRespondedCount": waiting,
        }

    def fail_next(self, code: str, message: str = "scripted", status: int = 200) -> None:
        self.scripted.append((code, message, status))

    def report(self, biz_id: str, *, delivered: bool, err_code: str = "") -> None:
        found = [s for s in self.sent if s.biz_id == biz_id]  # a batch's numbers share its BizId
        assert found, biz_id
        for sent in found:
            sent.send_status, sent.err_code = (3, err_code or "DELIVERED") if delivered else (2, err_code or "UNDELIV")

    @property
    def url(self) -> str:
        assert self.server is not None
        return self.server.url

    async def __aenter__(self) -> FakeAliyunSms:
        self.server = LoopbackServer(handler=self._handle)
        await self.server.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        await self.server.__aexit__(*exc)

    def _answer(self, code: str, message: str, status: int = 200, **extra: Any) -> Reply:
        return Reply(
            status, {"RequestId": "F655A8D5-B967-440B-8683-DAD6FF8DE990", "Code": code, "Message": message, **extra}
        )

    def _handle(self, request: Recorded) -> Reply:
        if request.method != "POST" or request.path != "/":
            return self._answer("InvalidAction.NotFound", f"{request.method} {request.path}", 404)
        if not request.headers.get("Content-Type", "").startswith("application/x-www-form-urlencoded"):
            return self._answer("InvalidParameter", "expected a form body", 400)
        form = dict(parse_qsl(request.body.decode(), keep_blank_values=True, strict_parsing=True))
        self.forms.append(form)
        refused = self._authenticate(form)
        if refused is not None:
            return refused
        if self.scripted:
            code, message, status = self.scripted.pop(0)
            return self._answer(code, message, status)
        if form.get("Version") != "2017-05-25" or not form.get("RegionId"):
            return self._answer("InvalidVersion", "Specified parameter Version is not valid.", 400)
        if form["Action"] == "SendSms":
            return self._send(form)
        if form["Action"] == "SendBatchSms":
            return self._send_batch(form)
        if form["Action"] == "QuerySendDetails":
            return self._details(form)
        if form["Action"] == "QuerySendStatistics":
            return self._statistics(form)
        return self._answer("InvalidAction.NotFound", "Specified api is not found", 404)

    def _authenticate(self, form: dict[str, str]) -> Reply | None:
        common = ("AccessKeyId", "Action", "Format", "SignatureMethod", "SignatureNonce", "SignatureVersion")
        missing = [p for p in (*common, "Timestamp", "Signature") if not form.get(p)]
        if missing:
            return self._answer("MissingParameter", f"missing {', '.join(missing)}", 400)
        if (form["SignatureMethod"], form["SignatureVersion"], form["Format"]) != ("HMAC-SHA1", "1.0", "JSON"):
            return self._answer("InvalidParameter", "SignatureMethod/SignatureVersion/Format", 400)
        secret = self.keys.get(form["AccessKeyId"])
        if secret is None:
            return self._answer("InvalidAccessKeyId.NotFound", "Specified access key is not found.", 404)
        if not hmac.compare_digest(form["Signature"], signature(secret, "POST", form)):
            return self._answer(
                "SignatureDoesNotMatch", "Specified signature is not matched with our calculation.", 400
            )
        sent = datetime.strptime(form["Timestamp"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        if abs(sent.timestamp() - time.time()) > 900:
            return self._answer("InvalidTimeStamp.Expired", "Specified time stamp or date value is expired.", 400)
        if form["SignatureNonce"] in self.nonces:
            return self._answer("SignatureNonceUsed", "Specified signature nonce was used already.", 400)
        self.nonces.add(form["SignatureNonce"])
        return None

    def _send(self, form: dict[str, str]) -> Reply:
        refused = self._check(form)
        if refused is not None:
            return refused
        sent = Sent(f"{next(self._ids)}^0", form)
        self.sent.append(sent)
        return self._answer("OK", "OK", BizId=sent.biz_id)

    def _check(self, form: dict[str, str]) -> Reply | None:
        number = form.get("PhoneNumbers", "")
        if not (_MAINLAND.match(number) or _INTERNATIONAL.match(number)):
            return self._answer("isv.MOBILE_NUMBER_ILLEGAL", "非法手机号")
        if form.get("SignName") not in self.sign_names:
            return self._answer("isv.SMS_SIGNATURE_ILLEGAL", "该账号下找不到对应签名")
        variables = TEMPLATES.get(form.get("TemplateCode", ""))
        if variables is None:
            return self._answer("isv.SMS_TEMPLATE_ILLEGAL", "该账号下找不到对应模板")
        try:
            params = orjson.loads(form["TemplateParam"]) if "TemplateParam" in form else {}
        except orjson.JSONDecodeError:
            return self._answer("isv.INVALID_JSON_PARAM", "JSON参数不合法")
        if not isinstance(params, dict) or not variables <= set(params):
            return self._answer("isv.TEMPLATE_MISSING_PARAMETERS", "模版变量缺少对应参数值")
        return None

    def _send_batch(self, form: dict[str, str]) -> Reply:
        """SendBatchSms: the same checks for every number, the batch taken or refused whole, one BizId."""
        try:
            numbers, signs, params = (
                orjson.loads(form[k]) for k in ("PhoneNumberJson", "SignNameJson", "TemplateParamJson")
            )
        except (KeyError, orjson.JSONDecodeError):
            return self._answer("isv.INVALID_JSON_PARAM", "JSON参数不合法")
        if not (isinstance(numbers, list) and isinstance(signs, list) and isinstance(params, list)):
            return self._answer("isv.INVALID_JSON_PARAM", "JSON参数不合法")
        if not (len(numbers) == len(signs) == len(params)) or len(numbers) > 100:
            return self._answer("isv.INVALID_PARAMETERS", "the lists differ in length or hold more than 100")
        forms = [
            {
                "PhoneNumbers": n,
                "SignName": s,
                "TemplateCode": form.get("TemplateCode", ""),
                "TemplateParam": orjson.dumps(p).decode(),
            }
            for n, s, p in zip(numbers, signs, params, strict=True)
        ]
        for one in forms:
            refused = self._check(one)
            if refused is not None:
                return refused
        biz_id = f"{next(self._ids)}^0"
        self.batches.append(biz_id)
        self.sent.extend(Sent(biz_id, one) for one in forms)
        return self._answer("OK", "OK", BizId=biz_id)

    def _details(self, form: dict[str, str]) -> Reply:
        if not (form.get("PhoneNumber") and re.fullmatch(r"\d{8}", form.get("SendDate", ""))):
            return self._answer("isv.INVALID_PARAMETERS", "PhoneNumber and SendDate are required")
        if not (form.get("PageSize", "").isdigit() and form.get("CurrentPage", "").isdigit()):
            return self._answer("isv.INVALID_PARAMETERS", "PageSize and CurrentPage are required")
        today = datetime.now(UTC).astimezone(_BEIJING).strftime("%Y%m%d")
        found = [
            s
            for s in self.sent
            if s.biz_id == form.get("BizId")
            and s.form["PhoneNumbers"] == form["PhoneNumber"]
            and form["SendDate"] == today
        ]
        dtos = [
            {
                "ErrCode": s.err_code,
                "TemplateCode": s.form["TemplateCode"],
                "OutId": s.form.get("OutId", ""),
                "ReceiveDate": "2026-12-02 16:44:13" if s.send_status != 1 else "",
                "SendDate": "2026-12-02 16:44:10",
                "PhoneNum": s.form["PhoneNumbers"],
                "Content": "【克拉里昂】…",
                "SendStatus": s.send_status,
            }
            for s in found
        ]
        return self._answer("OK", "OK", TotalCount=len(dtos), SmsSendDetailDTOs={"SmsSendDetailDTO": dtos})

    def _statistics(self, form: dict[str, str]) -> Reply:
        """QuerySendStatistics: IsGlobe 1 or 2, StartDate ≤ EndDate as yyyyMMdd, PageIndex ≥ 1, PageSize 1-50."""
        start, end = form.get("StartDate", ""), form.get("EndDate", "")
        if form.get("IsGlobe") not in ("1", "2"):
            return self._answer("isv.INVALID_PARAMETERS", "IsGlobe must be 1 or 2")
        if not (re.fullmatch(r"\d{8}", start) and re.fullmatch(r"\d{8}", end)) or start > end:
            return self._answer("isv.INVALID_PARAMETERS", "StartDate and EndDate are yyyyMMdd, StartDate first")
        page, size = form.get("PageIndex", ""), form.get("PageSize", "")
        if not (page.isdigit() and int(page) >= 1 and size.isdigit() and 1 <= int(size) <= 50):
            return self._answer("isv.INVALID_PARAMETERS", "PageIndex from 1, PageSize 1-50")
        found = [
            entry
            for (globe, day), entry in sorted(self.statistics.items())
            if globe == form["IsGlobe"] and start <= day <= end
        ]
        first = (int(page) - 1) * int(size)
        data = {"TotalSize": len(found), "TargetList": found[first : first + int(size)]}
        return self._answer("OK", "OK", Data=data)


def _encode(value: str) -> str:
    """Aliyun's percent-encoding, written here from its documentation's rules (every byte but the RFC 3986
    unreserved ones as %XY of UTF-8), apart from Clarion's, so the fake does not share a mistake with it."""
    out = []
    for byte in value.encode("utf-8"):
        char = chr(byte)
        out.append(char if char.isascii() and (char.isalnum() or char in "-_.~") else f"%{byte:02X}")
    return "".join(out)


def signature(secret: str, method: str, form: dict[str, str]) -> str:
    query = "&".join(f"{_encode(k)}={_encode(form[k])}" for k in sorted(form) if k != "Signature")
    to_sign = f"{method}&{_encode('/')}&{_encode(query)}"
    return base64.b64encode(hmac.new(f"{secret}&".encode(), to_sign.encode(), hashlib.sha1).digest()).decode()


def sms_report(biz_id: str, phone_number: str, *, success: bool, err_code: str = "", err_msg: str = "") -> bytes:
    """The JSON array Aliyun posts to the SmsReport callback URL (one report)."""
    now = datetime.now(UTC).astimezone(_BEIJING).strftime("%Y-%m-%d %H:%M:%S")
    report = {
        "phone_number": phone_number,
        "send_time": now,
        "report_time": now,
        "success": success,
        "err_code": err_code or ("DELIVERED" if success else "UNDELIV"),
        "err_msg": err_msg or ("用户接收成功" if success else "用户未接收"),
        "sms_size": "1",
        "biz_id": biz_id,
        "out_id": "",
    }
    return orjson.dumps([report])
