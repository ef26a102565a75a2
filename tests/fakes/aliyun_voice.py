"""Aliyun's voice API (Dyvmsapi) on loopback: ``SingleCallByTts`` and ``QueryCallDetailByCallId`` over the RPC
protocol, and the ``VoiceReport`` call-result push as Aliyun posts it.

It checks what Aliyun's gateway checks: the common parameters, a known ``AccessKeyId`` (404
``InvalidAccessKeyId.NotFound``), the ``Signature`` recomputed from the test AccessKey secret over the form as
received (400 ``SignatureDoesNotMatch``), a fresh ``Timestamp`` and an unused ``SignatureNonce``. Then what the
voice product checks: a registered TTS template (``isv.TTS_TEMPLATE_ILLEGAL``), its parameters as a JSON object,
a callee number as Aliyun wants it (``isv.MOBILE_NUMBER_ILLEGAL``), at most one call to a number a minute
(``isv.BUSINESS_LIMIT_CONTROL``). Codes can also be scripted (``fail_next``), and each call's result set
(``finish``) for the query to report.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, quote_plus

import orjson

from tests.integration.loopback import LoopbackServer, Recorded, Reply

ACCESS_KEY_ID = "LTAI5tClarionTestKey"
ACCESS_KEY_SECRET = "clarion-test-access-key-secret-0123"
TEMPLATE = "TTS_200001"
SHOW_NUMBER = "057188888888"
_MAINLAND = re.compile(r"^1\d{10}$")
_INTERNATIONAL = re.compile(r"^[2-9]\d{7,14}$")


@dataclass
class Call:
    call_id: str
    params: dict[str, str]
    state: str = ""  # "" while ringing; a status code once finished
    state_desc: str = ""

    @property
    def tts_param(self) -> dict[str, Any]:
        return orjson.loads(self.params["TtsParam"]) if "TtsParam" in self.params else {}


@dataclass
class FakeAliyunVoice:
    keys: dict[str, str] = field(default_factory=lambda: {ACCESS_KEY_ID: ACCESS_KEY_SECRET})
    templates: set[str] = field(default_factory=lambda: {TEMPLATE})
    calls: list[Call] = field(default_factory=list)
    #: actions refused before any check: (Code, Message, HTTP status), in order
    scripted: list[tuple[str, str, int]] = field(default_factory=list)
    #: every request, with its form, whatever the answer
    forms: list[dict[str, str]] = field(default_factory=list)
    nonces: set[str] = field(default_factory=set)
    last_call_at: dict[str, float] = field(default_factory=dict)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(116012354148))
    server: LoopbackServer | None = None

    def fail_next(self, code: str, message: str = "scripted", status: int = 200) -> None:
        self.scripted.append((code, message, status))

    def finish(self, call_id: str, state: str, desc: str = "") -> None:
        [call] = [c for c in self.calls if c.call_id == call_id]
        call.state, call.state_desc = state, desc

    @property
    def url(self) -> str:
        assert self.server is not None
        return self.server.url

    async def __aenter__(self) -> FakeAliyunVoice:
        self.server = LoopbackServer(handler=self._handle)
        await self.server.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        await self.server.__aexit__(*exc)

    def _answer(self, code: str, message: str, status: int = 200, **extra: Any) -> Reply:
        return Reply(status, {"RequestId": "FAKE-REQ-1", "Code": code, "Message": message, **extra})

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
        if form.get("Version") != "2017-05-25":
            return self._answer("InvalidVersion", "Specified parameter Version is not valid.", 400)
        if form["Action"] == "SingleCallByTts":
            return self._call(form)
        if form["Action"] == "QueryCallDetailByCallId":
            return self._detail(form)
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
        expected = signature(secret, "POST", form)
        if form["Signature"] != expected:
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

    def _call(self, form: dict[str, str]) -> Reply:
        if form.get("TtsCode") not in self.templates:
            return self._answer("isv.TTS_TEMPLATE_ILLEGAL", "TTS template is not valid")
        try:
            params = orjson.loads(form["TtsParam"]) if "TtsParam" in form else {}
        except orjson.JSONDecodeError:
            params = None
        if not isinstance(params, dict):
            return self._answer("isv.INVALID_PARAMETERS", "TtsParam is not a JSON object")
        number = form.get("CalledNumber", "")
        if not (_MAINLAND.match(number) or _INTERNATIONAL.match(number)):
            return self._answer("isv.MOBILE_NUMBER_ILLEGAL", "The called number is not valid")
        if time.monotonic() - self.last_call_at.get(number, float("-inf")) < 60:
            return self._answer("isv.BUSINESS_LIMIT_CONTROL", "a number is called at most once a minute")
        self.last_call_at[number] = time.monotonic()
        call = Call(f"{next(self._ids)}^{next(self._ids)}", form)
        self.calls.append(call)
        return self._answer("OK", "OK", CallId=call.call_id)

    def _detail(self, form: dict[str, str]) -> Reply:
        if form.get("ProdId") != "11000000300006" or not form.get("QueryDate", "").isdigit():
            return self._answer("isv.INVALID_PARAMETERS", "ProdId and QueryDate are required")
        found = [c for c in self.calls if c.call_id == form.get("CallId")]
        if not found:
            return self._answer("OK", "OK", Data="")
        call = found[0]
        data = {
            "callId": call.call_id,
            "callee": call.params["CalledNumber"],
            "calleeShowNumber": call.params.get("CalledShowNumber", ""),
            "state": call.state,
            "stateDesc": call.state_desc,
            "duration": 12 if call.state == "200000" else 0,
            "gmtCreate": "2026-12-02 08:00:00",
            "startDate": "",
            "endDate": "2026-12-02 08:00:20" if call.state else "",
        }
        return self._answer("OK", "OK", Data=orjson.dumps(data).decode())


def _encode(value: str) -> str:
    """Aliyun's percent-encoding as its documentation derives it from form encoding (written apart from
    Clarion's, so the fake does not share a mistake with the code it tests)."""
    return quote_plus(value, encoding="utf-8").replace("+", "%20").replace("*", "%2A").replace("%7E", "~")


def signature(secret: str, method: str, form: dict[str, str]) -> str:
    query = "&".join(f"{_encode(k)}={_encode(form[k])}" for k in sorted(form) if k != "Signature")
    to_sign = f"{method}&{_encode('/')}&{_encode(query)}"
    return base64.b64encode(hmac.new(f"{secret}&".encode(), to_sign.encode(), hashlib.sha1).digest()).decode()


def voice_report(call_id: str, status_code: str, status_msg: str = "", out_id: str = "") -> bytes:
    """The JSON array Aliyun posts to the call-result callback URL (``VoiceReport``)."""
    report = {
        "call_id": call_id,
        "start_time": "2026-12-02 08:00:00",
        "end_time": "2026-12-02 08:00:20",
        "duration": "12" if status_code == "200000" else "0",
        "status_code": status_code,
        "status_msg": status_msg,
        "out_id": out_id,
        "dtmf": "",
        "status_time": "2026-12-02 08:00:20",
        "toll_type": "LOCAL",
    }
    return orjson.dumps([report])
