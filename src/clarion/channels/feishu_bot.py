"""Feishu (Lark) custom group bots (自定义机器人): one webhook per group, signed with the bot's secret.

A custom bot posts to the one group it was added to, so the delivery's address (the user's open_id) is not
used. With "签名校验" on, each body carries ``timestamp`` (unix seconds) and ``sign`` = base64 of the
HMAC-SHA256 whose *key* is "{timestamp}\\n{secret}" over an empty message, as Feishu documents it; Feishu
refuses a sign more than an hour old (code 19021).

The message is an interactive card holding the markdown (the title, when given, as the card's header), or plain
text. Feishu answers ``code`` 0 once the group has it: the delivery is ``delivered``. A bot may post 5 messages a
second and 100 a minute (9499 / 11232 beyond), the default rate.
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

#: Feishu custom bot ``code`` → what it means (any other non-zero code is permanent)
ERRORS: dict[int, Verdict] = {
    19021: "misconfigured",  # sign match fail, or the timestamp is more than an hour off
    19022: "misconfigured",  # the calling IP is not on the bot's allow-list
    19024: "misconfigured",  # the bot's keywords are not in the message
    19001: "misconfigured",  # the webhook token is invalid (the bot was removed)
    9499: "transient",  # too many requests
    11232: "transient",  # frequency limited
    19002: "permanent",  # the body is not what the bot takes
    11246: "permanent",  # the card is malformed
}


def sign(secret: str, timestamp: int) -> str:
    """The bot's ``sign`` for ``timestamp`` (unix seconds)."""
    digest = hmac.new(f"{timestamp}\n{secret}".encode(), b"", hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def markdown_of(item: Outgoing) -> tuple[str | None, str]:
    """The delivery's Feishu content: an optional title and the markdown."""
    title, text = item.content.get("title"), item.content.get("markdown")
    if not isinstance(text, str) or not text:
        raise PermanentSendError("Feishu content needs 'markdown'", code="invalid_content")
    return (title if isinstance(title, str) and title else None), text


def card(title: str | None, text: str) -> dict[str, Any]:
    """A message card showing ``text`` as markdown, under ``title`` as its header when there is one."""
    document: dict[str, Any] = {
        "config": {"wide_screen_mode": True},
        "elements": [{"tag": "markdown", "content": text}],
    }
    if title:
        document["header"] = {"title": {"tag": "plain_text", "content": title}}
    return document


def vendor_error(code: int, msg: str, table: dict[int, Verdict], *, retry_after: float | None = None) -> SendError:
    """Our error for a Feishu ``code``: its verdict in ``table``, the code and message kept."""
    verdict = table.get(code, "permanent")
    message = f"Feishu code {code}: {msg}"[:500]
    if verdict == "transient":
        return TransientSendError(message, code=str(code), retry_after=retry_after)
    return PermanentSendError(message, code=str(code), misconfigured=verdict == "misconfigured")


def read_answer(response: httpx.Response) -> tuple[int, str, dict[str, Any]]:
    """Feishu's ``code``, ``msg`` and whole answer. Feishu puts its code in the body even on HTTP 4xx, so a
    body with a code speaks first; HTTP status decides only when there is none."""
    try:
        document = response.json()
    except ValueError:
        document = None
    if isinstance(document, dict):
        raw = document.get("code", document.get("StatusCode"))
        if raw is not None:
            try:
                code = int(raw)
            except (TypeError, ValueError):
                code = -2
            return code, str(document.get("msg", document.get("StatusMessage", ""))), document
    error = http_status_error(response)
    if error is not None:
        raise error
    raise TransientSendError(f"Feishu answered no code: {response.text[:200]}", code="invalid_response")


async def post(
    client: httpx.AsyncClient, url: str, within: float, json: Any, **extra: Any
) -> tuple[int, str, dict[str, Any]]:
    try:
        async with asyncio.timeout(within):  # bounds the whole exchange, not each read
            response = await client.post(url, json=json, **extra)
    except (httpx.HTTPError, TimeoutError) as exc:
        raise transport_error(exc) from None
    return read_answer(response)


class FeishuBotProvider:
    """Posts the delivery's markdown card to the bot's group."""

    kind: ClassVar[str] = "feishu_bot"
    channels: ClassVar[frozenset[Channel]] = frozenset({Channel.FEISHU})
    #: Feishu: a custom bot may post 5 messages a second and 100 a minute
    default_rate: ClassVar[tuple[float | None, float | None]] = (5, 100)

    class Config(ProviderConfig):
        secret_fields: ClassVar[frozenset[str]] = frozenset({"token", "secret"})
        destination_fields: ClassVar[frozenset[str]] = frozenset({"endpoint"})

        #: the last part of the bot's webhook URL (``…/bot/v2/hook/{token}``)
        token: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9._~-]+$")
        #: the bot's "签名校验" secret; None when it is secured by keywords or IPs only
        secret: str | None = Field(default=None, min_length=1, max_length=200)
        endpoint: str = "https://open.feishu.cn/open-apis/bot/v2/hook"
        #: ``interactive``: a card with the markdown; ``text``: the title and markdown as plain text
        message_type: Literal["interactive", "text"] = "interactive"
        timeout: float = Field(default=10, gt=0, le=120)
        allow_private_networks: bool = False

        @field_validator("endpoint")
        @classmethod
        def _http_url(cls, value: str) -> str:
            return outbound.endpoint(value)

    def __init__(self, config: FeishuBotProvider.Config, *, name: str, clock: Callable[[], float] = time.time) -> None:
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
        body: dict[str, Any]
        if self.config.message_type == "text":
            body = {"msg_type": "text", "content": {"text": f"{title}\n{text}" if title else text}}
        else:
            body = {"msg_type": "interactive", "card": card(title, text)}
        if self.config.secret:
            timestamp = int(self.clock())
            body = {"timestamp": str(timestamp), "sign": sign(self.config.secret, timestamp), **body}
        return body

    async def _send_one(self, item: Outgoing) -> SendResult:
        config = self.config
        url = f"{config.endpoint}/{config.token}"
        code, msg, _ = await post(self._client, url, config.timeout, self.body(item))
        if code != 0:
            raise vendor_error(code, msg, ERRORS, retry_after=1.0 if ERRORS.get(code) == "transient" else None)
        return SendResult(item.delivery_id, provider_message_id=item.delivery_id, status=DeliveryStatus.DELIVERED)

    async def close(self) -> None:
        await self._client.aclose()
