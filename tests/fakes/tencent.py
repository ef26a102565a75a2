"""Tencent Cloud SMS (API 3.0, ``SendSms`` of version 2021-01-11) on loopback, and its status callback body.

It checks what Tencent's gateway checks: the ``X-TC-*`` headers, the ``Authorization`` header's form, a known
SecretId (``AuthFailure.SecretIdNotFound``), a timestamp within five minutes (``AuthFailure.SignatureExpire``)
and the TC3-HMAC-SHA256 signature recomputed here from the test SecretKey over the headers the request says it
signed, which must include ``content-type`` and ``host`` (``AuthFailure.SignatureFailure``); every error is
answered HTTP 200 with ``Response.Error``, as Tencent does. Then what the SMS product checks: the SdkAppId, an
approved template with the right number of parameters, an approved sign name for mainland numbers, and each
number (a ``SendStatusSet`` entry each, ``InvalidParameterValue.IncorrectPhoneNumber`` for a bad one).

``SendStatusStatistics`` and ``CallbackStatusStatistics`` (signed alike) answer the counts the test sets per day
(``set_statistics``), summed over the days whose every hour the ``BeginTime``–``EndTime`` window (yyyymmddhh)
covers; the SdkAppId must be the account's, ``Limit`` and ``Offset`` 0 as documented.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from tests.integration.loopback import LoopbackServer, Recorded, Reply

SECRET_ID = "AKIDClarionTencentSmsTestId0001"
SECRET_KEY = "ClarionTencentSmsTestSecretKey01"
SDK_APP_ID = "1400787878"
SIGN_NAME = "克拉里昂"
TEMPLATE = "1879434"
#: how many parameters each approved template takes
TEMPLATES: dict[str, int] = {TEMPLATE: 2, "449739": 0}
_AUTH = re.compile(
    r"^TC3-HMAC-SHA256 Credential=(?P<id>[^/]+)/(?P<date>\d{4}-\d\d-\d\d)/(?P<service>[a-z]+)/tc3_request, "
    r"SignedHeaders=(?P<headers>[a-z0-9;-]+), Signature=(?P<signature>[0-9a-f]{64})$"
)
_E164 = re.compile(r"^\+[1-9]\d{6,14}$")
#: the statistics actions and the counts each answers
STATISTICS: dict[str, tuple[str, ...]] = {
    "SendStatusStatistics": ("FeeCount", "RequestCount", "RequestSuccessCount"),
    "CallbackStatusStatistics": (
        "CallbackCount",
        "RequestSuccessCount",
        "CallbackFailCount",
        "CallbackSuccessCount",
        "InternalErrorCount",
        "InvalidNumberCount",
        "ShutdownErrorCount",
        "BlackListCount",
        "FrequencyLimitCount",
    ),
}


def _hmac(key: bytes, text: str) -> bytes:
    return hmac.new(key, text.encode(), hashlib.sha256).digest()


def tc3_signature(
    secret_key: str, *, headers: dict[str, str], signed: list[str], payload: bytes, timestamp: int, service: str
) -> str:
    """TC3-HMAC-SHA256 over a POST to ``/``, written here from Tencent's documentation apart from Clarion's
    (any list of signed headers; ``headers`` by lower-case name). Checked against Tencent's published example."""
    canonical_headers = "".join(f"{name}:{headers[name].strip().lower()}\n" for name in signed)
    canonical = f"POST\n/\n\n{canonical_headers}\n{';'.join(signed)}\n{hashlib.sha256(payload).hexdigest()}"
    date = datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d")
    digest = hashlib.sha256(canonical.encode()).hexdigest()
    to_sign = f"TC3-HMAC-SHA256\n{timestamp}\n{date}/{service}/tc3_request\n{digest}"
    key = _hmac(_hmac(_hmac(f"TC3{secret_key}".encode(), date), service), "tc3_request")
    return hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()


@dataclass
class FakeTencentSms:
    keys: dict[str, str] = field(default_factory=lambda: {SECRET_ID: SECRET_KEY})
    sign_names: set[str] = field(default_factory=lambda: {SIGN_NAME})
    #: every accepted SendSms body
    requests: list[dict[str, Any]] = field(default_factory=list)
    #: serial numbers given, with the number they went to
    serials: dict[str, str] = field(default_factory=dict)
    #: request-level errors answered after authentication: (Code, Message), in order
    scripted: list[tuple[str, str]] = field(default_factory=list)
    #: per-number codes: phone → (Code, Message) instead of "Ok"
    number_codes: dict[str, tuple[str, str]] = field(default_factory=dict)
    #: the daily counts of each statistics action: action → yyyymmdd → counts
    statistics: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1045710669157053657))
    server: LoopbackServer | None = None

    def set_statistics(
        self, day: str, *, requested: int, taken: int, fee_count: int, delivered: int, failed: int
    ) -> None:
        """What the statistics actions count for ``day`` (yyyymmdd): requests, those taken, segments billed,
        receipts of success and of failure."""
        self.statistics.setdefault("SendStatusStatistics", {})[day] = {
            "FeeCount": fee_count,
            "RequestCount": requested,
            "RequestSuccessCount": taken,
        }
        self.statistics.setdefault("CallbackStatusStatistics", {})[day] = {
            "CallbackCount": delivered + failed,
            "RequestSuccessCount": taken,
            "CallbackFailCount": failed,
            "CallbackSuccessCount": delivered,
            "InternalErrorCount": 0,
            "InvalidNumberCount": 0,
            "ShutdownErrorCount": failed,
            "BlackListCount": 0,
            "FrequencyLimitCount": 0,
        }

    def fail_next(self, code: str, message: str = "scripted") -> None:
        self.scripted.append((code, message))

    @property
    def url(self) -> str:
        assert self.server is not None
        return self.server.url

    async def __aenter__(self) -> FakeTencentSms:
        self.server = LoopbackServer(handler=self._handle)
        await self.server.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        await self.server.__aexit__(*exc)

    @staticmethod
    def _error(code: str, message: str) -> Reply:
        return Reply(200, {"Response": {"Error": {"Code": code, "Message": message}, "RequestId": "fake-req-1"}})

    def _handle(self, request: Recorded) -> Reply:
        if request.method != "POST" or request.path != "/":
            return self._error("UnsupportedOperation", f"{request.method} {request.path}")
        refused = self._authenticate(request)
        if refused is not None:
            return refused
        action = request.headers.get("X-TC-Action")
        if action not in (*STATISTICS, "SendSms") or request.headers.get("X-TC-Version") != "2021-01-11":
            return self._error("InvalidAction", "the action or version is not one of SMS 2021-01-11")
        if not request.headers.get("X-TC-Region"):
            return self._error("MissingParameter", "X-TC-Region")
        if self.scripted:
            return self._error(*self.scripted.pop(0))
        if action in STATISTICS:
            return self._statistics(action, request.json())
        return self._send(request.json())

    def _statistics(self, action: str, body: dict[str, Any]) -> Reply:
        begin, end = str(body.get("BeginTime", "")), str(body.get("EndTime", ""))
        if not (re.fullmatch(r"\d{10}", begin) and re.fullmatch(r"\d{10}", end)) or begin > end:
            return self._error("InvalidParameterValue.StartTimeOrEndTimeError", "BeginTime/EndTime: yyyymmddhh")
        if body.get("SmsSdkAppId") != SDK_APP_ID:
            return self._error("UnauthorizedOperation.SmsSdkAppIdVerifyFail", "SmsSdkAppId verify fail")
        if body.get("Limit") != 0 or body.get("Offset") != 0:
            return self._error("InvalidParameterValue", "Limit and Offset are 0")
        totals: dict[str, int] = dict.fromkeys(STATISTICS[action], 0)
        for day, counts in self.statistics.get(action, {}).items():
            if begin <= f"{day}00" and f"{day}23" <= end:
                for name in totals:
                    totals[name] += counts[name]
        return Reply(200, {"Response": {action: totals, "RequestId": "fake-req-3"}})

    def _authenticate(self, request: Recorded) -> Reply | None:
        found = _AUTH.match(request.headers.get("Authorization", ""))
        if found is None:
            return self._error("AuthFailure.InvalidAuthorization", "Authorization header is malformed")
        secret = self.keys.get(found["id"])
        if secret is None:
            return self._error("AuthFailure.SecretIdNotFound", "The SecretId is not found")
        stamp = request.headers.get("X-TC-Timestamp", "")
        if not stamp.isdigit() or abs(int(stamp) - time.time()) > 300:
            return self._error("AuthFailure.SignatureExpire", "Signature expired")
        signed = found["headers"].split(";")
        headers = {name.lower(): value for name, value in request.headers.items()}
        if not {"content-type", "host"} <= set(signed) or not set(signed) <= set(headers):
            return self._error("AuthFailure.SignatureFailure", "content-type and host must be signed")
        date = datetime.fromtimestamp(int(stamp), UTC).strftime("%Y-%m-%d")
        expected = tc3_signature(
            secret, headers=headers, signed=signed, payload=request.body, timestamp=int(stamp), service="sms"
        )
        if found["service"] != "sms" or found["date"] != date or not hmac.compare_digest(expected, found["signature"]):
            return self._error("AuthFailure.SignatureFailure", "The provided credentials could not be validated.")
        return None

    def _send(self, body: dict[str, Any]) -> Reply:
        if body.get("SmsSdkAppId") != SDK_APP_ID:
            return self._error("UnauthorizedOperation.SmsSdkAppIdVerifyFail", "SmsSdkAppId verify fail")
        params = body.get("TemplateParamSet", [])
        count = TEMPLATES.get(body.get("TemplateId", ""))
        if count is None:
            return self._error("FailedOperation.TemplateIncorrectOrUnapproved", "template is not approved")
        if not isinstance(params, list) or len(params) != count:
            return self._error("InvalidParameterValue.TemplateParameterFormatError", "wrong number of parameters")
        numbers = body.get("PhoneNumberSet") or []
        if not numbers:
            return self._error("MissingParameter.EmptyPhoneNumberSet", "PhoneNumberSet is empty")
        mainland = any(str(n).startswith("+86") for n in numbers)
        if mainland and body.get("SignName") not in self.sign_names:
            return self._error("FailedOperation.SignatureIncorrectOrUnapproved", "sign name is not approved")
        self.requests.append(body)
        statuses = []
        for number in numbers:
            code, message = self.number_codes.get(number, ("Ok", "send success"))
            if code == "Ok" and not _E164.match(str(number)):
                code, message = "InvalidParameterValue.IncorrectPhoneNumber", "incorrect phone number"
            serial = f"3369:{next(self._ids)}" if code == "Ok" else ""
            if serial:
                self.serials[serial] = number
            statuses.append(
                {
                    "SerialNo": serial,
                    "PhoneNumber": number,
                    "Fee": 1 if serial else 0,
                    "SessionContext": body.get("SessionContext", ""),
                    "Code": code,
                    "Message": message,
                    "IsoCode": "CN" if str(number).startswith("+86") else "US",
                }
            )
        return Reply(200, {"Response": {"SendStatusSet": statuses, "RequestId": "fake-req-2"}})


def status_report(sid: str, mobile: str, *, success: bool, errmsg: str = "", description: str = "") -> bytes:
    """The JSON array Tencent posts to the status callback URL (one report)."""
    report = {
        "user_receive_time": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S"),
        "nationcode": "86",
        "mobile": mobile.removeprefix("+86"),
        "report_status": "SUCCESS" if success else "FAIL",
        "errmsg": errmsg or ("DELIVRD" if success else "MK:0005"),
        "description": description or ("用户短信送达成功" if success else "用户手机关机"),
        "sid": sid,
    }
    return orjson.dumps([report])
