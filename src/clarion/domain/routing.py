"""Which provider a delivery goes through. Later: weights, health, rate limits and fallback chains."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from clarion.domain import model

#: the provider used for a channel when no account is configured for it; channels missing here (WeChat, WeCom,
#: DingTalk, Feishu) have no built-in provider and are routed to ``NO_PROVIDER`` until an account is configured
DEFAULT_PROVIDERS = {
    model.Channel.INBOX: "inbox",
    model.Channel.EMAIL: "file",
    model.Channel.SMS: "file",
    model.Channel.PUSH: "file",
    model.Channel.WEBHOOK: "webhook",
}
#: the route of a delivery on a channel with no provider at all: it names no account (parentheses cannot occur in
#: a provider name), so the delivery fails with the reason ``no_provider``
NO_PROVIDER = "(none)"


@dataclass(frozen=True, slots=True)
class ProviderChoice:
    name: str
    channel: model.Channel
    enabled: bool = True


def choose_provider(channel: model.Channel, configured: Sequence[ProviderChoice]) -> str:
    """The channel's enabled provider (the first by name when several are), else the built-in default, else
    ``NO_PROVIDER``."""
    candidates = sorted(p.name for p in configured if p.channel is channel and p.enabled)
    return candidates[0] if candidates else DEFAULT_PROVIDERS.get(channel, NO_PROVIDER)
