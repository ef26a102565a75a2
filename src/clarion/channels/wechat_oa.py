"""WeChat Official Account template messages (``message/template/send``), with the miniprogram jump.

A template message names a template the account registered with WeChat and fills its fields; the user's
address is their openid with this account. Requests carry an access token got from the account's appid and
secret, valid two hours and limited in how often it may be fetched, so it goes through ``vendor.TokenCache``
(shared across processes with Redis); a token the vendor calls expired or invalid is dropped and the send made
once more with a fresh one. ``client_msg_id`` is the delivery id, so WeChat drops a re-send after a crash.

WeChat tells the account's server URL (``/r/{provider_name}``) when a template message finished with the
``TEMPLATESENDJOBFINISH`` event: ``success`` is delivered, ``failed:user block`` and ``failed: system failed``
are undelivered. WeChat proves its callbacks with ``signature`` = SHA-1 of the sorted token, timestamp and
nonce; in safe mode (``encoding_aes_key``) the body is AES-encrypted and ``msg_signature`` also covers it. The
same server URL takes every other message and event of the account: those are counted as ignored. When the
operator registers the URL, WeChat checks it with a signed ``GET`` that must echo ``echostr`` (``verify_url``).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import struct
import time
import xml.etree.ElementTree as ElementTree
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal

import httpx
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from pydantic import Field, field_validator

from clarion.channels import base, outbound, vendor
from clarion.channels.base import ProviderConfig
from clarion.channels.webhook import http_status_error, send_to, transport_error
from clarion.domain import receipts
from clarion.domain.errors import PermanentSendError, SendError, TransientSendError
from clarion.domain.model import Channel, Outgoing, SendResult

Outcome = Literal["transient", "permanent", "misconfigured", "dead_address", "token"]

#: WeChat's ``errcode`` → what it means for the delivery; a code not here is permanent
ERRCODES: dict[int, Outcome] = {
    -1: "transient",  # system busy
    40001: "token",  # access_token invalid or not the latest
    40014: "token",  # invalid access_token
    42001: "token",  # access_token expired
    40003: "dead_address",  # invalid openid: not a follower of this account (any more)
    43004: "dead_address",  # require subscribe: the user unfollowed
    40013: "misconfigured",  # invalid appid
    40125: "misconfigured",  # invalid appsecret
    40164: "misconfigured",  # the caller's IP is not on the account's whitelist
    40036: "misconfigured",  # invalid template_id size
    40037: "misconfigured",  # invalid template_id: not registered with this account
    48001: "misconfigured",  # api unauthorized: the account may not send template messages
    41001: "misconfigured",  # access_token missing
    45009: "transient",  # the API's daily quota is spent
    45047: "transient",  # out of the response count limit
    45011: "transient",  # API minute quota reached
    43101: "permanent",  # the user refused this kind of message
    47003: "permanent",  # the fields do not fit the template
    40165: "permanent",  # invalid miniprogram pagepath
    40166: "permanent",  # invalid miniprogram appid
}
TOKEN_PATH = "/cgi-bin/token"
STABLE_TOKEN_PATH = "/cgi-bin/stable_token"
SEND_PATH = "/cgi-bin/message/template/send"
#: a TEMPLATESENDJOBFINISH ``Status`` → the receipt; any other ``failed…`` status is undelivered too
STATUSES: dict[str, receipts.Event] = {
    "success": receipts.Event.DELIVERED,
    "failed:user block": receipts.Event.UNDELIVERED,
    "failed: system failed": receipts.Event.UNDELIVERED,
}


def vendor_error(errcode: int, errmsg: str, *, refreshed: bool = True) -> SendError:
    """The error for WeChat's answer ``errcode``; a token code after a refresh is transient (another process
    may have fetched a newer token meanwhile)."""
    outcome = ERRCODES.get(errcode, "permanent")
    message = f"WeChat errcode {errcode}: {errmsg}"[:500]
    code = str(errcode)
    if outcome in ("transient", "token"):
        return TransientSendError(message, code=code)
    return PermanentSendError(
        message, code=code, misconfigured=outcome == "misconfigured", dead_address=outcome == "dead_address"
    )


def signature(*parts: str) -> str:
    """WeChat's callback signature: the SHA-1 hex of the parts sorted and joined."""
    return hashlib.sha1("".join(sorted(parts)).encode()).hexdigest()


def decrypt(encoding_aes_key: str, encrypted: str) -> tuple[bytes, str]:
    """A safe-mode body: (the inner XML, the appid it was sealed for). AES-256-CBC under the 43-character
    ``EncodingAESKey``, IV its first 16 bytes, PKCS#7 to 32 bytes, over 16 random bytes + length + XML + appid."""
    try:
        key = base64.b64decode(encoding_aes_key + "=")
        sealed = base64.b64decode(encrypted, validate=True)
        decryptor = Cipher(algorithms.AES(key), modes.CBC(key[:16])).decryptor()
        plain = decryptor.update(sealed) + decryptor.finalize()
    except (binascii.Error, ValueError):
        raise base.UnreadableCallback("the Encrypt element is not a WeChat safe-mode message") from None
    pad = plain[-1] if plain else 0
    if not 1 <= pad <= 32 or len(plain) < 20 + pad:
        raise base.UnreadableCallback("the Encrypt element does not decrypt under encoding_aes_key")
    content = plain[16:-pad]
    (length,) = struct.unpack(">I", content[:4])
    if length > len(content) - 4:
        raise base.UnreadableCallback("the Encrypt element does not decrypt under encoding_aes_key")
    return content[4 : 4 + length], content[4 + length :].decode("utf-8", "replace")


def parse_xml(body: bytes) -> dict[str, str]:
    """The child elements of a callback's ``<xml>`` by tag. A document type (entities) is refused outright."""
    if b"<!DOCTYPE" in body.upper() or b"<!ENTITY" in body.upper():
        raise base.UnreadableCallback("a WeChat callback holds no document type")
    try:
        root = ElementTree.fromstring(body)
    except ElementTree.ParseError:
        raise base.UnreadableCallback("the callback body is not XML") from None
    return {child.tag: (child.text or "").strip() for child in root}


class WechatOaProvider:
    """One template message per delivery, to the user's openid with the account."""

    kind: ClassVar[str] = "wechat_oa"
    channels: ClassVar[frozenset[Channel]] = frozenset({Channel.WECHAT})
    uses_context: ClassVar[bool] = True
    #: WeChat wants ``success`` (or nothing) in plain text back; anything else shows the user "该公众号暂时无法提供服务"
    receipt_answer: ClassVar[str] = "success"

    class Config(ProviderConfig):
        secret_fields: ClassVar[frozenset[str]] = frozenset({"app_secret", "callback_token", "encoding_aes_key"})
        #: the secret goes to the endpoint: a masked one sent back is kept only while the endpoint stays
        destination_fields: ClassVar[frozenset[str]] = frozenset({"endpoint"})

        app_id: str = Field(pattern=r"^wx[0-9A-Za-z]{16}$", description="the account's AppID (wx…)")
        #: the account's AppSecret, exchanged for access tokens
        app_secret: str = Field(min_length=1, max_length=128)
        #: the WeChat API's base URL
        endpoint: str = "https://api.weixin.qq.com"
        #: fetch tokens from ``/cgi-bin/stable_token``, which does not invalidate the token other users of
        #: the same appid hold (use it when another system shares the account)
        stable_token: bool = False
        #: the Token set with the server URL (3–32 letters or digits): with it, the account takes
        #: TEMPLATESENDJOBFINISH receipts at ``/r/{provider_name}``
        callback_token: str | None = Field(default=None, pattern=r"^[A-Za-z0-9]{3,32}$")
        #: the EncodingAESKey (43 characters), for the safe (encrypted) and compatible message modes
        encoding_aes_key: str | None = Field(default=None, pattern=r"^[A-Za-z0-9]{43}$")
        #: a callback's timestamp may be this many seconds from now (None: not checked)
        callback_tolerance: float | None = Field(default=300, gt=0)
        #: let the endpoint be a private address (tests, an on-premises proxy)
        allow_private_networks: bool = False
        #: seconds one exchange with the vendor may take
        timeout: float = Field(default=10, gt=0)

        @field_validator("endpoint")
        @classmethod
        def _http_url(cls, value: str) -> str:
            return outbound.endpoint(value)

    def __init__(
        self, config: WechatOaProvider.Config, *, name: str, context: vendor.ProviderContext | None = None
    ) -> None:
        self.config = config
        self.name = name
        self.context = context or vendor.ProviderContext()
        self._token_key = vendor.token_key("wechat", config.app_id, secret=config.app_secret)
        self._client = outbound.client(
            timeout=config.timeout, allow_private_networks=config.allow_private_networks, http2=True
        )

    # -- sending -------------------------------------------------------------------------------------------

    async def send(self, batch: Sequence[Outgoing]) -> list[SendResult]:
        allow = self.config.allow_private_networks
        return await send_to(self.config.endpoint, batch, self._send_one, allow_private_networks=allow)

    def _body(self, item: Outgoing) -> dict[str, Any]:
        openid, content = item.address, item.content
        if not isinstance(openid, str) or not openid:
            raise PermanentSendError(f"not a WeChat openid: {openid!r}", code="invalid_address")
        template_id, fields = content.get("template_id"), content.get("fields")
        if not isinstance(template_id, str) or not template_id or not isinstance(fields, Mapping):
            raise PermanentSendError("WeChat content needs 'template_id' and 'fields'", code="invalid_content")
        body: dict[str, Any] = {
            "touser": openid,
            "template_id": template_id,
            "data": {name: {"value": str(value)} for name, value in fields.items()},
            "client_msg_id": item.delivery_id,
        }
        if content.get("url"):
            body["url"] = content["url"]
        mini = content.get("miniprogram")
        if isinstance(mini, Mapping) and mini.get("appid"):
            body["miniprogram"] = {"appid": mini["appid"], "pagepath": mini.get("pagepath", "")}
        return body

    async def _send_one(self, item: Outgoing) -> SendResult:
        body = self._body(item)

        async def send(token: str) -> dict[str, Any]:
            return await self._call("POST", SEND_PATH, params={"access_token": token}, json=body)

        answer = await self.context.tokens.call_with_token(
            self._token_key, self._fetch_token, send, expired=_token_refused
        )
        errcode = _errcode(answer)
        if errcode != 0:
            raise vendor_error(errcode, str(answer.get("errmsg", "")))
        msgid = answer.get("msgid")
        return SendResult(item.delivery_id, provider_message_id=str(msgid) if msgid else item.delivery_id)

    async def _fetch_token(self) -> tuple[str, float]:
        config = self.config
        if config.stable_token:
            grant = {"grant_type": "client_credential", "appid": config.app_id, "secret": config.app_secret}
            answer = await self._call("POST", STABLE_TOKEN_PATH, json=grant)
        else:
            params = {"grant_type": "client_credential", "appid": config.app_id, "secret": config.app_secret}
            answer = await self._call("GET", TOKEN_PATH, params=params)
        token, expires_in = answer.get("access_token"), answer.get("expires_in")
        if not isinstance(token, str) or not token:
            errcode = _errcode(answer)
            if ERRCODES.get(errcode) == "token":  # 40001 on the token endpoint: the secret is wrong
                raise PermanentSendError(
                    f"WeChat errcode {errcode}: {answer.get('errmsg', '')}", code=str(errcode), misconfigured=True
                )
            raise vendor_error(errcode, f"access token refused: {answer.get('errmsg', '')}")
        return token, float(expires_in) if isinstance(expires_in, int | float) and expires_in > 0 else 7200.0

    async def _call(self, method: str, path: str, **request: Any) -> dict[str, Any]:
        try:
            async with asyncio.timeout(self.config.timeout):
                response = await self._client.request(method, self.config.endpoint + path, **request)
        except (httpx.HTTPError, TimeoutError) as exc:
            raise transport_error(exc) from None
        error = http_status_error(response)
        if error is not None:
            raise error
        try:
            answer = response.json()
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            raise TransientSendError(f"WeChat answered non-JSON: {response.text[:200]}", code="invalid_response")
        return answer

    async def close(self) -> None:
        await self._client.aclose()

    # -- callbacks -----------------------------------------------------------------------------------------

    @property
    def takes_receipts(self) -> bool:
        return self.config.callback_token is not None

    def _check_signature(self, callback: base.Callback, *signed: str, name: str = "signature") -> None:
        token = self.config.callback_token
        if not token:
            raise base.RefusedCallback("this account takes no callbacks")
        query = callback.query
        timestamp, nonce = query.get("timestamp", ""), query.get("nonce", "")
        if not base.same_secret(signature(token, timestamp, nonce, *signed), query.get(name, "").lower()):
            raise base.RefusedCallback(f"missing or wrong {name}")
        tolerance = self.config.callback_tolerance
        if tolerance is not None and not (timestamp.isdigit() and abs(time.time() - int(timestamp)) <= tolerance):
            raise base.RefusedCallback("the callback's timestamp is too far from now (a replay?)")

    def verify_url(self, callback: base.Callback) -> str:
        """WeChat's check of the server URL: the ``echostr`` to answer, when the signature verifies."""
        self._check_signature(callback)
        echostr = callback.query.get("echostr")
        if not echostr:
            raise base.UnreadableCallback("a URL check carries echostr")
        return echostr

    def receipts(self, callback: base.Callback) -> base.ReadCallback:
        encrypted = callback.query.get("encrypt_type") == "aes"
        if not encrypted:
            self._check_signature(callback)
        fields = parse_xml(callback.body)
        if encrypted or "Encrypt" in fields:
            fields = self._opened(callback, fields)
        if fields.get("MsgType") != "event" or fields.get("Event") != "TEMPLATESENDJOBFINISH":
            return base.ReadCallback([], ignored=1)  # the account's other messages and events
        msgid, status = fields.get("MsgID", ""), fields.get("Status", "")
        if not msgid or not status:
            raise base.UnreadableCallback("a TEMPLATESENDJOBFINISH event without MsgID or Status")
        event = STATUSES.get(status) or (receipts.Event.UNDELIVERED if status.startswith("failed") else None)
        if event is None:
            return base.ReadCallback([], ignored=1)
        detail = {"vendor_status": status}
        receipt = receipts.Receipt(msgid[:300], event, f"vendor status {status}"[:500], detail)
        return base.ReadCallback([receipt])

    def _opened(self, callback: base.Callback, fields: dict[str, str]) -> dict[str, str]:
        """The inner message of a safe-mode callback, once ``msg_signature`` (over the Encrypt element) verifies."""
        key, sealed = self.config.encoding_aes_key, fields.get("Encrypt", "")
        if not sealed:
            raise base.UnreadableCallback("a safe-mode callback without an Encrypt element")
        self._check_signature(callback, sealed, name="msg_signature")
        if not key:
            raise base.UnreadableCallback("an encrypted callback, but the account has no encoding_aes_key")
        inner, app_id = decrypt(key, sealed)
        if app_id != self.config.app_id:
            raise base.RefusedCallback("the encrypted callback was sealed for another appid")
        return parse_xml(inner)


def _token_refused(answer: Mapping[str, Any]) -> bool:
    return ERRCODES.get(_errcode(answer)) == "token"


def _errcode(answer: Mapping[str, Any]) -> int:
    try:
        return int(answer.get("errcode", 0))
    except (TypeError, ValueError):
        return -1
