"""WeCom (企业微信) application messages (``message/send``) to a member's userid.

An application is the corp's ``corp_id`` with the app's ``agent_id`` and its own ``corp_secret``; requests carry
an access token got from ``gettoken`` (two hours), cached through ``vendor.TokenCache`` and refreshed once when
WeCom calls it invalid or expired (40014, 42001).

The message type follows the content: a ``description`` makes a ``textcard`` (title, description, url — the
card WeCom and WeChat both show), a ``text`` a ``text`` message, and a ``markdown`` (the channel's content, a
title and markdown) a ``markdown`` message — or a ``text`` one with ``markdown_as: "text"``, because members who
read WeCom inside personal WeChat are not shown markdown. WeCom reports an unknown userid in ``invaliduser``
(with errcode 0 when other recipients were valid, 81013 when none was): that userid is a dead address.

WeCom sends no delivery receipts for application messages: a delivery stays ``sent``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal

import httpx
from pydantic import Field, field_validator

from clarion.channels import outbound, vendor
from clarion.channels.base import ProviderConfig
from clarion.channels.webhook import http_status_error, send_to, transport_error
from clarion.domain.errors import PermanentSendError, SendError, TransientSendError
from clarion.domain.model import Channel, Outgoing, SendResult

Outcome = Literal["transient", "permanent", "misconfigured", "dead_address", "token"]

#: WeCom's ``errcode`` → what it means for the delivery; a code not here is permanent
ERRCODES: dict[int, Outcome] = {
    -1: "transient",  # system busy
    40014: "token",  # invalid access_token
    42001: "token",  # access_token expired
    81013: "dead_address",  # the user, department and tag are all invalid
    40003: "dead_address",  # invalid userid
    60111: "dead_address",  # userid not found
    40001: "misconfigured",  # invalid secret
    40013: "misconfigured",  # invalid corpid
    40056: "misconfigured",  # invalid agentid
    301002: "misconfigured",  # the agentid does not match the secret's application
    60020: "misconfigured",  # the caller's IP is not on the application's trusted list
    48002: "misconfigured",  # the API is forbidden to this application
    41001: "misconfigured",  # access_token missing
    45009: "transient",  # API frequency limit
    45033: "transient",  # too many concurrent calls
    44004: "permanent",  # empty content
    45002: "permanent",  # content too long
    40008: "permanent",  # invalid message type
    60011: "permanent",  # the member is outside the application's visible range
    82001: "permanent",  # no valid recipient in the request
}
TOKEN_PATH = "/cgi-bin/gettoken"
SEND_PATH = "/cgi-bin/message/send"


def vendor_error(errcode: int, errmsg: str, *, table: Mapping[int, Outcome] = ERRCODES) -> SendError:
    """The error for WeCom's answer ``errcode`` (a token code after the one refresh is transient)."""
    outcome = table.get(errcode, "permanent")
    message = f"WeCom errcode {errcode}: {errmsg}"[:500]
    if outcome in ("transient", "token"):
        return TransientSendError(message, code=str(errcode), retry_after=60 if errcode == 45009 else None)
    return PermanentSendError(
        message, code=str(errcode), misconfigured=outcome == "misconfigured", dead_address=outcome == "dead_address"
    )


def errcode_of(answer: Mapping[str, Any]) -> int:
    try:
        return int(answer.get("errcode", 0))
    except (TypeError, ValueError):
        return -1


def token_refused(answer: Mapping[str, Any]) -> bool:
    """Whether WeCom's answer says the access token is invalid or expired (refreshed once)."""
    return ERRCODES.get(errcode_of(answer)) == "token"


def message_of(content: Mapping[str, Any], markdown_as: str = "markdown") -> dict[str, Any]:
    """The ``msgtype`` and its part of a WeCom message, chosen by what the content holds."""
    if content.get("description"):
        card = {"title": content.get("title"), "description": content["description"], "url": content.get("url")}
        if not card["title"] or not card["url"]:
            raise PermanentSendError("a WeCom textcard needs 'title' and 'url'", code="invalid_content")
        if content.get("btntxt"):
            card["btntxt"] = content["btntxt"]
        return {"msgtype": "textcard", "textcard": card}
    markdown, text = content.get("markdown"), content.get("text")
    if isinstance(markdown, str) and markdown and markdown_as == "markdown":
        return {"msgtype": "markdown", "markdown": {"content": markdown}}
    body = text if isinstance(text, str) and text else markdown
    if not isinstance(body, str) or not body:
        raise PermanentSendError("WeCom content needs 'markdown', 'text' or 'description'", code="invalid_content")
    return {"msgtype": "text", "text": {"content": body}}


async def call(client: httpx.AsyncClient, within: float, method: str, url: str, **request: Any) -> dict[str, Any]:
    """One request to a WeCom endpoint: its JSON answer, or the transport/HTTP error (WeCom answers 200)."""
    try:
        async with asyncio.timeout(within):  # bounds the whole exchange, not each read
            response = await client.request(method, url, **request)
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
        raise TransientSendError(f"WeCom answered non-JSON: {response.text[:200]}", code="invalid_response")
    return answer


class WecomAppProvider:
    """One application message per delivery, to the member's userid."""

    kind: ClassVar[str] = "wecom_app"
    channels: ClassVar[frozenset[Channel]] = frozenset({Channel.WECOM})
    uses_context: ClassVar[bool] = True

    class Config(ProviderConfig):
        secret_fields: ClassVar[frozenset[str]] = frozenset({"corp_secret"})
        destination_fields: ClassVar[frozenset[str]] = frozenset({"endpoint"})

        corp_id: str = Field(pattern=r"^[A-Za-z0-9]{4,64}$", description="the corp's CorpID (ww…)")
        corp_secret: str = Field(min_length=1, max_length=128, description="the application's Secret")
        agent_id: int = Field(ge=1, description="the application's AgentId")
        #: the WeCom API's base URL
        endpoint: str = "https://qyapi.weixin.qq.com"
        #: how a markdown content is sent: as markdown, or as plain text for members reading in WeChat
        markdown_as: Literal["markdown", "text"] = "markdown"
        #: WeCom's confidential flag: the message cannot be forwarded and shows a watermark
        safe: bool = False
        #: let the endpoint be a private address (tests, an on-premises proxy)
        allow_private_networks: bool = False
        #: seconds one exchange with the vendor may take
        timeout: float = Field(default=10, gt=0)

        @field_validator("endpoint")
        @classmethod
        def _http_url(cls, value: str) -> str:
            return outbound.endpoint(value)

    def __init__(
        self, config: WecomAppProvider.Config, *, name: str, context: vendor.ProviderContext | None = None
    ) -> None:
        self.config = config
        self.name = name
        self.context = context or vendor.ProviderContext()
        self._token_key = vendor.token_key("wecom", config.corp_id, config.agent_id, secret=config.corp_secret)
        self._client = outbound.client(
            timeout=config.timeout, allow_private_networks=config.allow_private_networks, http2=True
        )

    async def send(self, batch: Sequence[Outgoing]) -> list[SendResult]:
        allow = self.config.allow_private_networks
        return await send_to(self.config.endpoint, batch, self._send_one, allow_private_networks=allow)

    async def _send_one(self, item: Outgoing) -> SendResult:
        userid = item.address
        if not isinstance(userid, str) or not userid or "|" in userid:
            raise PermanentSendError(f"not a WeCom userid: {userid!r}", code="invalid_address")
        body = {
            "touser": userid,
            "agentid": self.config.agent_id,
            **message_of(item.content, self.config.markdown_as),
            "safe": int(self.config.safe),
        }
        url = self.config.endpoint + SEND_PATH

        async def send(token: str) -> dict[str, Any]:
            return await call(self._client, self.config.timeout, "POST", url, params={"access_token": token}, json=body)

        answer = await self.context.tokens.call_with_token(
            self._token_key, self._fetch_token, send, expired=token_refused
        )
        errcode, errmsg = errcode_of(answer), str(answer.get("errmsg", ""))
        if errcode != 0:
            raise vendor_error(errcode, errmsg)
        invalid = str(answer.get("invaliduser") or "").split("|")
        if userid in invalid:
            raise PermanentSendError(
                f"WeCom lists the userid in invaliduser: {errmsg}", code="invaliduser", dead_address=True
            )
        if userid in str(answer.get("unlicenseduser") or "").split("|"):
            raise PermanentSendError(f"WeCom: the member has no license: {errmsg}", code="unlicenseduser")
        msgid = answer.get("msgid")
        return SendResult(item.delivery_id, provider_message_id=str(msgid) if msgid else item.delivery_id)

    async def _fetch_token(self) -> tuple[str, float]:
        params = {"corpid": self.config.corp_id, "corpsecret": self.config.corp_secret}
        url = self.config.endpoint + TOKEN_PATH
        answer = await call(self._client, self.config.timeout, "GET", url, params=params)
        token, expires_in = answer.get("access_token"), answer.get("expires_in")
        if errcode_of(answer) != 0 or not isinstance(token, str) or not token:
            raise vendor_error(errcode_of(answer), f"access token refused: {answer.get('errmsg', '')}")
        return token, float(expires_in) if isinstance(expires_in, int | float) and expires_in > 0 else 7200.0

    async def close(self) -> None:
        await self._client.aclose()
