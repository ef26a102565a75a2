"""DingTalk custom group robots (自定义机器人): one webhook per group, signed with the robot's secret.

A robot posts to the one group it was added to, so the delivery's address (the user's DingTalk userid) is not
used: every message of the account goes to that group. The robot's "加签" security setting proves each request
with ``sign`` = base64(HMAC-SHA256(secret, "{timestamp}\\n{secret}")), the timestamp in milliseconds, both in the
query beside the ``access_token``; DingTalk refuses a sign more than an hour old (errcode 310000).

DingTalk answers HTTP 200 with ``errcode``; 0 means the group has the message, so the delivery is ``delivered``
(no receipt follows a robot's post). The robot may post 20 messages a minute (130101 beyond), the default rate.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import time
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Literal

import httpx
from pydantic import Field, field_validator

from clarion.channels import outbound
from clarion.channels.base import ProviderConfig
from clarion.channels.webhook import http_status_error, send_to, transport_error
from clarion.domain.errors import PermanentSendError, SendError, TransientSendError
from clarion.domain.model import Channel, DeliveryStatus, Outgoing, SendResult

Verdict = Literal["transient", "permanent", "misconfigured"]

#: DingTalk robot ``errcode`` → what it means for the delivery (any other non-zero code is permanent)
ERRORS: dict[int, Verdict] = {
    310000: "misconfigured",  # sign mismatch or too old, keywords not in the text, IP not on the allow-list
    300001: "misconfigured",  # the access_token is not a robot's (removed, mistyped)
    300005: "misconfigured",  # the access_token does not exist
    130101: "transient",  # sent too fast: more than 20 messages in a minute
    -1: "transient",  # DingTalk is busy
    400013: "permanent",  # the group was dissolved
    400101: "permanent",  # the robot was stopped
    40035: "permanent",  # a parameter is missing or invalid
}
#: how long DingTalk wants a robot to wait after 130101 (its limit is counted per minute)
TOO_FAST_WAIT = 60.0


def sign(secret: str, timestamp_ms: int) -> str:
    """The robot's ``sign`` query value for ``timestamp_ms`` (not yet URL-encoded: the client encodes it)."""
    digest = hmac.new(secret.encode(), f"{timestamp_ms}\n{secret}".encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def vendor_error(
    errcode: int, errmsg: str, table: dict[int, Verdict], *, retry_after: float | None = None
) -> SendError:
    """Our error for a DingTalk ``errcode``: its verdict in ``table``, the code and message kept."""
    verdict = table.get(errcode, "permanent")
    message = f"DingTalk errcode {errcode}: {errmsg}"[:500]
    if verdict == "transient":
        return TransientSendError(message, code=str(errcode), retry_after=retry_after)
    return PermanentSendError(message, code=str(errcode), misconfigured=verdict == "misconfigured")


def markdown_of(item: Outgoing) -> tuple[str, str]:
    """The delivery's DingTalk content (title and markdown), both required by DingTalk."""
    title, text = item.content.get("title"), item.content.get("markdown")
    if not isinstance(text, str) or not text:
        raise PermanentSendError("DingTalk content needs 'markdown'", code="invalid_content")
    if not isinstance(title, str) or not title:
        raise PermanentSendError("DingTalk content needs 'title'", code="invalid_content")
    return title, text


async def post_json(
    client: httpx.AsyncClient, url: str, within: float, *, params: dict[str, Any], json: Any
) -> dict[str, Any]:
    """POST ``json`` and read DingTalk's JSON answer; HTTP and transport failures become our errors."""
    try:
        async with asyncio.timeout(within):  # bounds the whole exchange, not each read
            response = await client.post(url, params=params, json=json)
    except (httpx.HTTPError, TimeoutError) as exc:
        raise transport_error(exc) from None
    return read_answer(response)


def read_answer(response: httpx.Response) -> dict[str, Any]:
    error = http_status_error(response)
    if error is not None:
        raise error
    try:
        document = response.json()
    except ValueError:
        document = None
    if not isinstance(document, dict):
        raise TransientSendError(f"DingTalk answered non-JSON: {response.text[:200]}", code="invalid_response")
    return document


class DingTalkRobotProvider:
    """Posts the delivery's markdown to the robot's group."""

    kind: ClassVar[str] = "dingtalk_robot"
    channels: ClassVar[frozenset[Channel]] = frozenset({Channel.DINGTALK})
    #: DingTalk: at most 20 messages a minute per robot
    default_rate: ClassVar[tuple[float | None, float | None]] = (None, 20)

    class Config(ProviderConfig):
        secret_fields: ClassVar[frozenset[str]] = frozenset({"access_token", "secret"})
        destination_fields: ClassVar[frozenset[str]] = frozenset({"endpoint"})

        #: the ``access_token`` of the robot's webhook URL
        access_token: str = Field(min_length=1, max_length=200)
        #: the robot's "加签" secret (``SEC…``); None when the robot is secured by keywords or IPs only
        secret: str | None = Field(default=None, min_length=1, max_length=200)
        endpoint: str = "https://oapi.dingtalk.com/robot/send"
        #: mentioned in every message: phone numbers, DingTalk userids, or the whole group
        at_mobiles: list[str] = Field(default_factory=list, max_length=50)
        at_user_ids: list[str] = Field(default_factory=list, max_length=50)
        at_all: bool = False
        timeout: float = Field(default=10, gt=0, le=120)
        allow_private_networks: bool = False

        @field_validator("endpoint")
        @classmethod
        def _http_url(cls, value: str) -> str:
            try:
                outbound.check_syntax(value)
            except SendError as exc:
                raise ValueError(exc.message) from None
            return value

    def __init__(
        self, config: DingTalkRobotProvider.Config, *, name: str, clock: Callable[[], float] = time.time
    ) -> None:
        self.config = config
        self.name = name
        self.clock = clock
        self._client = outbound.client(
            timeout=config.timeout, allow_private_networks=config.allow_private_networks, http2=True
        )

    async def send(self, batch: Sequence[Outgoing]) -> list[SendResult]:
        allow = self.config.allow_private_networks
        return await send_to(self.config.endpoint, batch, self._send_one, allow_private_networks=allow)

    def body(self, item: Outgoing) -> dict[str, Any]:
        title, text = markdown_of(item)
        config = self.config
        body: dict[str, Any] = {"msgtype": "markdown", "markdown": {"title": title, "text": text}}
        if config.at_mobiles or config.at_user_ids or config.at_all:
            body["at"] = {"atMobiles": config.at_mobiles, "atUserIds": config.at_user_ids, "isAtAll": config.at_all}
        return body

    async def _send_one(self, item: Outgoing) -> SendResult:
        config = self.config
        params: dict[str, Any] = {"access_token": config.access_token}
        if config.secret:
            timestamp = int(self.clock() * 1000)
            params |= {"timestamp": str(timestamp), "sign": sign(config.secret, timestamp)}
        answer = await post_json(self._client, config.endpoint, config.timeout, params=params, json=self.body(item))
        errcode = answer.get("errcode", 0)
        if errcode not in (0, "0"):
            code = int(errcode) if str(errcode).lstrip("-").isdigit() else -2
            wait = TOO_FAST_WAIT if code == 130101 else None
            raise vendor_error(code, str(answer.get("errmsg", "")), ERRORS, retry_after=wait)
        return SendResult(item.delivery_id, provider_message_id=item.delivery_id, status=DeliveryStatus.DELIVERED)

    async def close(self) -> None:
        await self._client.aclose()
