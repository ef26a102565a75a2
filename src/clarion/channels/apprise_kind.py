"""The long tail through Apprise: one Apprise URL per account (Slack, Telegram, Discord, Teams, ntfy, Bark,
Pushover, Gotify, 100+ more services and SMS gateways).

Which channels: those whose content Apprise sends as it is, a title and a body — ``push`` (title, body, and the
link after the body: ntfy, Bark, Pushover, Gotify are push apps), ``sms`` (the text: Apprise's SMS gateways), and
the work chats ``wecom``, ``dingtalk``, ``feishu`` (title and markdown, sent as markdown; Apprise has their group
robots, and converts markdown for services that lack it). The account's channel says which one it serves. Not
``email`` (``smtp`` sends mail with headers Clarion needs), ``webhook`` (an arbitrary JSON body), ``wechat``
(a registered template) or ``voice`` (a call).

Where a message goes: the URL's own target (a team channel, a group robot), or — when the URL holds
``{address}`` — the delivery's address put there, percent-encoded, so one account reaches each user at their own
chat id, topic or phone (``tgram://BOT_TOKEN/{address}``, ``twilio://SID:TOKEN@+15551234567/{address}``).

Apprise is synchronous: each notification runs in a worker thread (``asyncio.to_thread``), bounded by
``timeout`` (the thread finishes on its own, so a late success after a timeout is possible: the retry may then
send twice). Apprise reports only success or failure, with no vendor code: a failure is transient, retried
with backoff, its reason Apprise's last logged warning. It has no receipts (the kind takes no callbacks:
``POST /r/{provider_name}`` answers 404, and there is nothing to poll): a notification Apprise handed over
stays ``sent``.

SSRF: Apprise opens its own connections, beyond ``outbound``'s guarded client. Unless the account allows private
networks, the host a plugin connects to (for the services an operator hosts: json://, ntfy, Gotify, Bark,
mailto …) is resolved once before the call and refused unless every address is public. Apprise then resolves it
again when it connects, so a DNS answer that changes in between (rebinding) is not caught: a known limit. Services
with a fixed vendor host (Telegram, Slack, Discord …) carry tokens where a host would be, and are not looked up.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Sequence
from typing import Any, ClassVar
from urllib.parse import quote

from pydantic import Field, field_validator

from clarion.channels import outbound
from clarion.channels.base import ProviderConfig
from clarion.channels.webhook import send_bounded
from clarion.domain.errors import PermanentSendError, TransientSendError
from clarion.domain.model import Channel, Outgoing, SendResult

ADDRESS = "{address}"
_MARKDOWN = frozenset({Channel.WECOM, Channel.DINGTALK, Channel.FEISHU})
#: Apprise's body formats (``apprise.NotifyFormat`` values)
TEXT, MARKDOWN = "text", "markdown"


def _apprise() -> Any:
    """The library, imported on first use: it loads its plugins, which would add seconds to every start."""
    return importlib.import_module("apprise")


def plugin_for(url: str) -> Any:
    """The Apprise plugin a URL stands for, or None when Apprise does not recognise it."""
    return _apprise().Apprise.instantiate(url)


def own_host(plugin: Any) -> tuple[str, int] | None:
    """The host (and port) an operator-hosted service is reached at; None for a fixed vendor host."""
    if "host" not in getattr(type(plugin), "template_tokens", {}):
        return None
    host = getattr(plugin, "host", None)
    if not isinstance(host, str) or not host:
        return None
    port = getattr(plugin, "port", None)
    return host, port if isinstance(port, int) else (443 if getattr(plugin, "secure", False) else 80)


def message_of(channel: Channel, content: dict[str, Any]) -> tuple[str, str, str]:
    """(title, body, Apprise body format) of a content on ``channel``."""
    if channel is Channel.SMS and isinstance(content.get("text"), str) and content["text"]:
        return "", content["text"], TEXT
    if channel is Channel.PUSH and isinstance(content.get("body"), str):
        url = content.get("url")
        body = f"{content['body']}\n{url}" if isinstance(url, str) and url else content["body"]
        return str(content.get("title") or ""), body, TEXT
    if channel in _MARKDOWN and isinstance(content.get("markdown"), str):
        return str(content.get("title") or ""), content["markdown"], MARKDOWN
    raise PermanentSendError(f"{channel.value} content Apprise cannot send", code="invalid_content")


class AppriseProvider:
    """One Apprise notification per delivery, in a worker thread."""

    kind: ClassVar[str] = "apprise"
    channels: ClassVar[frozenset[Channel]] = frozenset(
        {Channel.PUSH, Channel.SMS, Channel.WECOM, Channel.DINGTALK, Channel.FEISHU}
    )

    class Config(ProviderConfig):
        #: an Apprise URL embeds the service's tokens: it is a secret as a whole
        secret_fields: ClassVar[frozenset[str]] = frozenset({"url"})

        url: str = Field(min_length=3, max_length=4096, description="an Apprise URL; {address}: the user's address")
        #: seconds one notification may take (Apprise's own deadline, and the worker thread's bound)
        timeout: float = Field(default=15, gt=0, le=120)
        #: let an operator-hosted service (json://, ntfy, Gotify …) be on a private or loopback address
        allow_private_networks: bool = False

        @field_validator("url")
        @classmethod
        def _apprise_knows_it(cls, value: str) -> str:
            if plugin_for(value.replace(ADDRESS, "clarion")) is None:
                scheme = value.split("://", 1)[0] if "://" in value else value[:20]
                raise ValueError(f"Apprise does not recognise this URL (scheme {scheme!r}, or its tokens)")
            return value

    def __init__(self, config: AppriseProvider.Config, *, name: str, resolve: outbound.Resolver | None = None) -> None:
        self.config = config
        self.name = name
        self._resolve = resolve or outbound.system_resolve

    async def send(self, batch: Sequence[Outgoing]) -> list[SendResult]:
        return await send_bounded(batch, self._send_one)

    def _url_for(self, item: Outgoing) -> str:
        if ADDRESS not in self.config.url:
            return self.config.url
        if not isinstance(item.address, str) or not item.address:
            raise PermanentSendError("this Apprise URL needs the user's address", code="invalid_address")
        return self.config.url.replace(ADDRESS, quote(item.address, safe=""))

    async def _send_one(self, item: Outgoing) -> SendResult:
        title, body, body_format = message_of(item.channel, item.content)
        url = self._url_for(item)
        plugin = await asyncio.to_thread(plugin_for, url)  # the first use imports Apprise: off the loop too
        if plugin is None:
            raise PermanentSendError("Apprise does not recognise the URL with this address", code="invalid_address")
        target = own_host(plugin)
        if target is not None and not self.config.allow_private_networks:
            await outbound.checked_addresses(*target, resolve=self._resolve)
        try:
            async with asyncio.timeout(self.config.timeout):
                ok, said = await asyncio.to_thread(self._notify, plugin, title, body, body_format)
        except TimeoutError:
            raise TransientSendError(f"Apprise took longer than {self.config.timeout}s", code="timeout") from None
        if not ok:
            raise TransientSendError(f"Apprise could not notify {type(plugin).__name__}: {said}", code="apprise_failed")
        return SendResult(item.delivery_id, provider_message_id=item.delivery_id)

    def _notify(self, plugin: Any, title: str, body: str, body_format: str) -> tuple[bool, str]:
        """Runs in a worker thread: Apprise's answer, and the last warning it logged (its only reason)."""
        notifier = _apprise().Apprise()
        notifier.add(plugin)
        result = notifier.notify(body=body, title=title, body_format=body_format, timeout=self.config.timeout)
        if result:
            return True, ""
        said = "no reason given"
        for entry in getattr(result, "logs", lambda: ())():
            if entry.level in ("WARNING", "ERROR"):
                said = entry.message
        return False, said[:300]

    async def close(self) -> None:
        return None
