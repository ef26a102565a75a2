"""A WeCom (企业微信) group robot: ``POST /cgi-bin/webhook/send?key=…`` posts into the one group it was added to.

The robot's key is its only credential, so it is a secret wherever it is configured: as ``key`` (with
``endpoint``), or inside ``webhook_url``, whose query values are masked. A robot has no recipients: it always
posts to its group, so a delivery's address may be any string (the group's name, say) and is not sent.

A ``markdown`` content is sent as a markdown message, a ``text`` one as text (with ``mentioned_list`` /
``mentioned_mobile_list`` when the content gives them). WeCom limits a robot to 20 messages a minute
(``default_rate``); beyond it, errcode 45009 is retried after a minute. An accepted post is in the group's
history at once, and WeCom sends no receipts, so the delivery is ``delivered`` when WeCom answers errcode 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar
from urllib.parse import parse_qs, urlsplit

from pydantic import Field, field_validator, model_validator

from clarion.channels import outbound
from clarion.channels.base import ProviderConfig
from clarion.channels.webhook import send_bounded
from clarion.channels.wecom_app import Outcome, call, errcode_of, vendor_error
from clarion.domain.errors import PermanentSendError
from clarion.domain.model import Channel, DeliveryStatus, Outgoing, SendResult

#: a robot's ``errcode`` → what it means; a code not here is permanent
ERRCODES: dict[int, Outcome] = {
    -1: "transient",  # system busy
    45009: "transient",  # over 20 messages a minute
    93000: "misconfigured",  # invalid webhook url: the key is wrong or the robot was removed
    93004: "misconfigured",  # the robot is disabled
    93008: "misconfigured",  # the robot is no longer in the group
    40008: "permanent",  # invalid message type
    44004: "permanent",  # empty content
    40058: "permanent",  # a required field is missing or malformed
    45002: "permanent",  # content too long
}
SEND_PATH = "/cgi-bin/webhook/send"


class WecomRobotProvider:
    """One post per delivery into the robot's group."""

    kind: ClassVar[str] = "wecom_robot"
    channels: ClassVar[frozenset[Channel]] = frozenset({Channel.WECOM})
    default_rate: ClassVar[tuple[float | None, float | None]] = (None, 20)

    class Config(ProviderConfig):
        secret_fields: ClassVar[frozenset[str]] = frozenset({"key"})
        url_fields: ClassVar[frozenset[str]] = frozenset({"webhook_url"})
        destination_fields: ClassVar[frozenset[str]] = frozenset({"endpoint"})

        #: the robot's whole webhook address, as WeCom shows it (``…/cgi-bin/webhook/send?key=…``)
        webhook_url: str | None = None
        #: or the robot's key alone, posted to ``endpoint``
        key: str | None = Field(default=None, min_length=1, max_length=200)
        #: the WeCom API's base URL, for ``key``
        endpoint: str = "https://qyapi.weixin.qq.com"
        #: let the endpoint be a private address (tests, an on-premises proxy)
        allow_private_networks: bool = False
        #: seconds one exchange with the vendor may take
        timeout: float = Field(default=10, gt=0)

        @field_validator("endpoint")
        @classmethod
        def _http_url(cls, value: str) -> str:
            return outbound.endpoint(value)

        @field_validator("webhook_url")
        @classmethod
        def _webhook_with_key(cls, value: str | None) -> str | None:
            if value is None:
                return value
            outbound.endpoint(value)
            if not parse_qs(urlsplit(value).query).get("key"):
                raise ValueError("a WeCom robot webhook URL carries its key (?key=…)")
            return value

        @model_validator(mode="after")
        def _one_address(self) -> WecomRobotProvider.Config:
            if (self.webhook_url is None) == (self.key is None):
                raise ValueError("give the robot's webhook_url or its key (one of them)")
            return self

    def __init__(self, config: WecomRobotProvider.Config, *, name: str) -> None:
        self.config = config
        self.name = name
        if config.webhook_url is not None:
            self._url, self._params = config.webhook_url, None
        else:
            self._url, self._params = config.endpoint + SEND_PATH, {"key": config.key}
        self._client = outbound.client(
            timeout=config.timeout, allow_private_networks=config.allow_private_networks, http2=True
        )

    async def send(self, batch: Sequence[Outgoing]) -> list[SendResult]:
        refused = outbound.refusal(self._url, allow_private_networks=self.config.allow_private_networks)

        async def one(item: Outgoing) -> SendResult:
            if refused is not None:
                raise type(refused)(refused.message, code=refused.code)
            return await self._post(item)

        return await send_bounded(batch, one)

    async def _post(self, item: Outgoing) -> SendResult:
        body = _message(item.content)
        answer = await call(self._client, self.config.timeout, "POST", self._url, params=self._params, json=body)
        errcode = errcode_of(answer)
        if errcode != 0:
            raise vendor_error(errcode, str(answer.get("errmsg", "")), table=ERRCODES)
        return SendResult(item.delivery_id, provider_message_id=item.delivery_id, status=DeliveryStatus.DELIVERED)

    async def close(self) -> None:
        await self._client.aclose()


def _message(content: dict[str, Any]) -> dict[str, Any]:
    markdown, text = content.get("markdown"), content.get("text")
    if isinstance(markdown, str) and markdown:
        return {"msgtype": "markdown", "markdown": {"content": markdown}}
    if isinstance(text, str) and text:
        part: dict[str, Any] = {"content": text}
        for mention in ("mentioned_list", "mentioned_mobile_list"):
            if isinstance(content.get(mention), list):
                part[mention] = [str(m) for m in content[mention]]
        return {"msgtype": "text", "text": part}
    raise PermanentSendError("a WeCom robot content needs 'markdown' or 'text'", code="invalid_content")
