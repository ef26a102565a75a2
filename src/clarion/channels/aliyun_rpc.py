"""Aliyun's RPC-style API calls (Dyvmsapi, Dysmsapi …): the HMAC-SHA1 signature (SignatureVersion 1.0), the call
itself, and the gateway's error codes shared by every Aliyun product.

Every Aliyun RPC request carries the common parameters (``AccessKeyId``, ``Action``, ``Version``, ``Timestamp``,
``SignatureNonce`` …) beside the action's own, and a ``Signature`` over all of them: the parameters sorted by name,
each name and value percent-encoded as Aliyun documents (RFC 3986 unreserved characters kept, everything else
``%XY`` in UTF-8, so a space is ``%20``, ``*`` is ``%2A`` and ``~`` stays), joined into the canonical query; the
string to sign is ``METHOD&%2F&`` + the canonical query percent-encoded once more; the signature is the base64
HMAC-SHA1 of it under ``AccessKeySecret + "&"``. ``sign`` and ``canonical_query`` are pure, so the fake vendor in
the tests checks a request with the very rule Clarion signs with, and the unit tests pin it to Aliyun's own
published example.

An answer always carries ``Code`` (``OK`` on success) and ``Message``, also when the HTTP status is 4xx: a kind
classifies the code with its own table laid over ``COMMON_CODES`` (``error_for``), so the vendor's code and
message are in the error and the codes meaning "this account is wrong" open the breaker.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import secrets
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import quote

import httpx
import orjson

from clarion.channels.webhook import http_status_error, transport_error
from clarion.domain.errors import PermanentSendError, SendError, TransientSendError

Outcome = Literal["transient", "permanent", "misconfigured", "dead_address"]

#: the gateway's codes, the same for every Aliyun product (a kind's own table is laid over it)
COMMON_CODES: dict[str, Outcome] = {
    "InvalidAccessKeyId.NotFound": "misconfigured",
    "InvalidAccessKeyId.Inactive": "misconfigured",
    "InvalidAccessKeyId": "misconfigured",
    "SignatureDoesNotMatch": "misconfigured",
    "IncompleteSignature": "misconfigured",
    "Forbidden.RAM": "misconfigured",
    "Forbidden.NoPermission": "misconfigured",
    "isv.ACCOUNT_NOT_EXISTS": "misconfigured",
    "isv.ACCOUNT_ABNORMAL": "misconfigured",
    "isv.OUT_OF_SERVICE": "misconfigured",  # the account is in arrears
    "SignatureNonceUsed": "transient",  # the retry signs with a new nonce
    "InvalidTimeStamp.Expired": "transient",
    "Throttling": "transient",
    "Throttling.User": "transient",
    "Throttling.Api": "transient",
    "ServiceUnavailable": "transient",
    "InternalError": "transient",
    "isp.SYSTEM_ERROR": "transient",
    "isp.RAM_PERMISSION_DENY": "misconfigured",
}


def percent_encode(value: str) -> str:
    """Aliyun's encoding of a name or a value: RFC 3986 unreserved characters kept, all else ``%XY`` (UTF-8)."""
    return quote(value, safe="-_.~")


def canonical_query(params: Mapping[str, str]) -> str:
    """The parameters (``Signature`` left out) sorted by name, encoded and joined: what is signed, and sent."""
    return "&".join(f"{percent_encode(k)}={percent_encode(v)}" for k, v in sorted(params.items()) if k != "Signature")


def string_to_sign(method: str, params: Mapping[str, str]) -> str:
    return f"{method.upper()}&{percent_encode('/')}&{percent_encode(canonical_query(params))}"


def sign(access_key_secret: str, method: str, params: Mapping[str, str]) -> str:
    """The ``Signature`` of a request's parameters: base64(HMAC-SHA1(secret + "&", string to sign))."""
    key = (access_key_secret + "&").encode()
    digest = hmac.new(key, string_to_sign(method, params).encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def timestamp(now: datetime | None = None) -> str:
    """ISO 8601 in UTC to the second, as Aliyun requires (``2016-02-23T12:46:24Z``)."""
    return (now or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def signed(
    action: str,
    params: Mapping[str, str],
    *,
    access_key_id: str,
    access_key_secret: str,
    version: str,
    method: str = "POST",
    now: datetime | None = None,
    nonce: str | None = None,
) -> dict[str, str]:
    """``params`` with the common parameters and the ``Signature``: the whole request, ready to send."""
    full = {
        **params,
        "Action": action,
        "Version": version,
        "Format": "JSON",
        "AccessKeyId": access_key_id,
        "SignatureMethod": "HMAC-SHA1",
        "SignatureVersion": "1.0",
        "SignatureNonce": nonce or secrets.token_hex(16),
        "Timestamp": timestamp(now),
    }
    full["Signature"] = sign(access_key_secret, method, full)
    return full


async def call(
    client: httpx.AsyncClient,
    endpoint: str,
    action: str,
    params: Mapping[str, str],
    *,
    access_key_id: str,
    access_key_secret: str,
    version: str,
    timeout: float,  # noqa: ASYNC109 -- bounds the whole exchange, not each read
) -> dict[str, Any]:
    """POST one signed action (form-encoded) and return the answer's JSON, whatever its ``Code``; the network,
    an HTTP error without a JSON answer, and a non-JSON answer are raised as send errors."""
    form = signed(action, params, access_key_id=access_key_id, access_key_secret=access_key_secret, version=version)
    body = canonical_query(form) + "&Signature=" + percent_encode(form["Signature"])
    headers = {"Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"}
    try:
        async with asyncio.timeout(timeout):
            response = await client.post(endpoint.rstrip("/") + "/", content=body.encode(), headers=headers)
    except (httpx.HTTPError, TimeoutError) as exc:
        raise transport_error(exc) from None
    try:
        document = orjson.loads(response.content)
    except orjson.JSONDecodeError:
        document = None
    if not isinstance(document, dict) or not isinstance(document.get("Code"), str):
        error = http_status_error(response)
        if error is not None:
            raise error
        raise PermanentSendError(f"Aliyun answered without a Code: {response.text[:200]}", code="invalid_response")
    return document


def error_for(document: Mapping[str, Any], table: Mapping[str, Outcome]) -> SendError:
    """The send error an answer whose ``Code`` is not ``OK`` stands for (``table`` first, then the gateway's
    codes; a code neither knows is permanent), with the vendor's code, message and request id in it."""
    code = str(document.get("Code"))
    message = f"Aliyun {code}: {document.get('Message', '')} (RequestId {document.get('RequestId', '-')})"
    outcome = table.get(code) or COMMON_CODES.get(code) or "permanent"
    if outcome == "transient":
        return TransientSendError(message, code=code)
    return PermanentSendError(
        message, code=code, misconfigured=outcome == "misconfigured", dead_address=outcome == "dead_address"
    )
