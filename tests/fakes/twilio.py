"""Twilio's Messages API on loopback: ``POST /2010-04-01/Accounts/{AccountSid}/Messages.json``, and status
callbacks signed as Twilio signs them.

It checks what Twilio checks: HTTP Basic credentials — the account SID and auth token, or an API key SID and
secret of that account (401 with code 20003 otherwise) — the account in the path (20404), a form body with
``To`` (21211 when not a phone number), ``Body`` (21602), and ``From`` owned by the account (21606) or a known
``MessagingServiceSid``. Codes can be scripted per ``To`` (``refuse``) or for the next request (``fail_next``).

``GET …/Usage/Records/Daily.json`` (the same credentials) answers one usage record per day of the test's
``set_usage`` within ``StartDate``–``EndDate`` (YYYY-MM-DD, GMT) for the ``Category`` asked, paged like Twilio's
lists; the numbers are strings, as Twilio writes them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import itertools
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from tests.integration.loopback import LoopbackServer, Recorded, Reply

ACCOUNT_SID = "AC" + "c1a7" * 8
AUTH_TOKEN = "clarion-twilio-test-auth-token-01"
API_KEY_SID = "SK" + "5eed" * 8
API_KEY_SECRET = "clarion-twilio-test-api-key-secret"
FROM_NUMBER = "+15005550006"
MESSAGING_SERVICE_SID = "MG" + "0bad" * 8
_PATH = re.compile(r"^/2010-04-01/Accounts/(?P<sid>[^/]+)/Messages\.json$")
_USAGE = re.compile(r"^/2010-04-01/Accounts/(?P<sid>[^/]+)/Usage/Records/Daily\.json$")
_DAY = re.compile(r"^\d{4}-\d\d-\d\d$")
_E164 = re.compile(r"^\+[1-9]\d{6,14}$")


def callback_signature(auth_token: str, url: str, params: dict[str, str]) -> str:
    """``X-Twilio-Signature`` as Twilio computes it (written here apart from Clarion's): the URL, then each
    POST parameter's name and value in the order of the names, HMAC-SHA1 under the auth token, base64."""
    data = url
    for name in sorted(params):
        data += name + params[name]
    return base64.b64encode(hmac.new(auth_token.encode(), data.encode("utf-8"), hashlib.sha1).digest()).decode()


@dataclass
class FakeTwilio:
    #: the credentials of the account: username → password
    credentials: dict[str, str] = field(default_factory=lambda: {ACCOUNT_SID: AUTH_TOKEN, API_KEY_SID: API_KEY_SECRET})
    #: accepted messages' forms, by sid
    messages: dict[str, dict[str, str]] = field(default_factory=dict)
    #: every request as received, whatever the answer
    received: list[Recorded] = field(default_factory=list)
    #: (HTTP status, code, message) for the next requests, in order
    scripted: list[tuple[int, int, str]] = field(default_factory=list)
    #: daily usage records by (category, YYYY-MM-DD)
    usage: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(0x5A1E0000))
    server: LoopbackServer | None = None

    def set_usage(self, day: str, *, count: int, segments: int, price: str, category: str = "sms-outbound") -> None:
        """The daily usage record of ``category`` for ``day``: messages, segments billed, price in USD."""
        self.usage[(category, day)] = {
            "category": category,
            "count": str(count),
            "count_unit": "messages",
            "usage": str(segments),
            "usage_unit": "segments",
            "price": price,
            "price_unit": "usd",
        }

    def fail_next(self, status: int, code: int, message: str = "scripted") -> None:
        self.scripted.append((status, code, message))

    @property
    def url(self) -> str:
        assert self.server is not None
        return self.server.url

    async def __aenter__(self) -> FakeTwilio:
        self.server = LoopbackServer(handler=self._handle)
        await self.server.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        await self.server.__aexit__(*exc)

    @staticmethod
    def _error(status: int, code: int, message: str) -> Reply:
        body = {
            "code": code,
            "message": message,
            "more_info": f"https://www.twilio.com/docs/errors/{code}",
            "status": status,
        }
        return Reply(status, body)

    def _authenticated(self, request: Recorded) -> bool:
        scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
        if scheme != "Basic":
            return False
        try:
            user, _, password = base64.b64decode(encoded).decode().partition(":")
        except ValueError:
            return False
        expected = self.credentials.get(user)
        return expected is not None and hmac.compare_digest(expected, password)

    def _handle(self, request: Recorded) -> Reply:
        self.received.append(request)
        if not self._authenticated(request):
            return self._error(401, 20003, "Authenticate")
        usage = _USAGE.match(request.path)
        if request.method == "GET" and usage is not None:
            return self._usage(usage["sid"], request.query)
        path = _PATH.match(request.path)
        if request.method != "POST" or path is None:
            return self._error(404, 20404, "The requested resource was not found")
        if path["sid"] != ACCOUNT_SID:
            return self._error(404, 20404, f"The requested resource {request.path} was not found")
        if not request.headers.get("Content-Type", "").startswith("application/x-www-form-urlencoded"):
            return self._error(400, 21601, "expected a form body")
        if self.scripted:
            return self._error(*self.scripted.pop(0))
        form = dict(parse_qsl(request.body.decode(), keep_blank_values=True))
        if not _E164.match(form.get("To", "")):
            return self._error(400, 21211, f"The 'To' number {form.get('To')} is not a valid phone number.")
        if not form.get("Body"):
            return self._error(400, 21602, "Message body is required.")
        if "MessagingServiceSid" in form:
            if form["MessagingServiceSid"] != MESSAGING_SERVICE_SID:
                return self._error(404, 21705, "The Messaging Service Sid is invalid.")
        elif form.get("From") != FROM_NUMBER:
            return self._error(400, 21606, "The From phone number is not a valid, SMS-capable number for your account.")
        sid = f"SM{next(self._ids):032x}"
        self.messages[sid] = form
        return Reply(201, self._resource(sid, form))

    def _usage(self, sid: str, query: dict[str, str]) -> Reply:
        if sid != ACCOUNT_SID:
            return self._error(404, 20404, "The requested resource was not found")
        start, end, category = query.get("StartDate", ""), query.get("EndDate", ""), query.get("Category", "")
        if not (_DAY.match(start) and _DAY.match(end)) or start > end:
            return self._error(400, 20001, "StartDate and EndDate are YYYY-MM-DD, StartDate first")
        if self.scripted:
            return self._error(*self.scripted.pop(0))
        base = f"/2010-04-01/Accounts/{ACCOUNT_SID}/Usage/Records/Daily.json"
        records = [
            {
                **record,
                "account_sid": ACCOUNT_SID,
                "api_version": "2010-04-01",
                "as_of": f"{day}T23:59:59+00:00",
                "description": "SMS Outbound",
                "start_date": day,
                "end_date": day,
                "uri": f"{base}?Category={record['category']}&StartDate={day}&EndDate={day}",
            }
            for (kind, day), record in sorted(self.usage.items())
            if kind == category and start <= day <= end
        ]
        page = {"first_page_uri": base, "next_page_uri": None, "page": 0, "page_size": 50, "uri": base}
        return Reply(200, {**page, "usage_records": records})

    @staticmethod
    def _resource(sid: str, form: dict[str, str]) -> dict[str, Any]:
        return {
            "account_sid": ACCOUNT_SID,
            "api_version": "2010-04-01",
            "body": form["Body"],
            "direction": "outbound-api",
            "error_code": None,
            "error_message": None,
            "from": form.get("From"),
            "messaging_service_sid": form.get("MessagingServiceSid"),
            "num_segments": "1",
            "sid": sid,
            "status": "accepted" if "MessagingServiceSid" in form else "queued",
            "to": form["To"],
            "uri": f"/2010-04-01/Accounts/{ACCOUNT_SID}/Messages/{sid}.json",
        }


def status_callback(sid: str, status: str, to: str, *, error_code: str | None = None) -> dict[str, str]:
    """The POST parameters of a status callback for message ``sid``."""
    params = {
        "AccountSid": ACCOUNT_SID,
        "ApiVersion": "2010-04-01",
        "From": FROM_NUMBER,
        "MessageSid": sid,
        "MessageStatus": status,
        "SmsSid": sid,
        "SmsStatus": status,
        "To": to,
    }
    if error_code is not None:
        params["ErrorCode"] = error_code
    return params
